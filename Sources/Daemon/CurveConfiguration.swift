import Foundation
import Models
import ZeroMQ

/// CURVE encryption and client authentication for the data endpoints (docs/security.md).
///
/// The ROUTER socket becomes a CURVE server with the daemon's secret key; a ZAP handler (the
/// ZeroMQ authentication protocol, RFC 27) on `inproc://zeromq.zap.01` accepts a client only if
/// its public key is in the allow-list. Without a ZAP handler libzmq would accept every key.
public struct CurveConfiguration: Sendable, Equatable {
    /// The daemon's secret key (Z85, 40 characters) and the public key derived from it.
    public var secretKey: String
    public var publicKey: String
    /// Z85 public keys of the clients allowed to connect.
    public var authorizedKeys: Set<String>
    /// The two files as the configuration names them (relative ones from its folder; the secret
    /// key's, not systemd's copy of it).
    public var secretKeyFile = ""
    public var authorizedKeysFile = ""

    /// Reads a key file: the first line that is neither empty nor a comment.
    public static func readKey(path: String) throws -> String {
        let text = try FileReading.text(path, limit: 64 * 1024)
        guard let key = keys(in: text).first else { throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: path]) }
        return key
    }

    /// Every key in `text`, one per line, ignoring blank lines and comment lines: a line starting
    /// with # that is not itself a key ('#' is a Z85 character, so a key may start with one). Lines
    /// end at any newline: a file saved with CRLF line ends is one line to a split on "\n" alone
    /// ("\r\n" is a single Character), which made a commented allow-list read as empty.
    public static func keys(in text: String) -> [String] {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !($0.hasPrefix("#") && !isValidKey($0)) }
    }

    public static func isValidKey(_ key: String) -> Bool { ZMQCurve.isValidKey(key) }

    /// The public key that goes with a Z85 secret key.
    public static func publicKey(forSecret secret: String) -> String? { ZMQCurve.publicKey(forSecret: secret) }

    /// A new key pair (public, secret), Z85.
    public static func generateKeyPair() -> (publicKey: String, secretKey: String)? { ZMQCurve.keyPair() }

    /// Reads the `[security]` table; nil when CURVE is not configured.
    static func read(_ table: ConfigTable, source: String) throws(ConfigurationError) -> CurveConfiguration? {
        let secretFile = try table.string("curve_secret_key_file", default: "")
        let authorizedFile = try table.string("authorized_keys_file", default: "")
        try table.finish()
        guard !secretFile.isEmpty || !authorizedFile.isEmpty else { return nil }
        guard !secretFile.isEmpty else { throw table.error("curve_secret_key_file", "required with authorized_keys_file") }
        guard !authorizedFile.isEmpty else {
            throw table.error("authorized_keys_file", "required with curve_secret_key_file: without an allow-list every client key would be accepted")
        }
        let base = (source as NSString).deletingLastPathComponent
        func resolve(_ path: String) -> String { path.hasPrefix("/") ? path : (base as NSString).appendingPathComponent(path) }
        // under the unit, a secret key in the credentials folder is read from systemd's copy of it
        let secretPath = ServiceCredentials.readablePath(resolve(secretFile), configurationFolder: base)
        // like ssh: a secret others can read is no secret, and an allow-list others can write is no list
        var info = stat()
        if stat(secretPath, &info) == 0, info.st_mode & (S_IROTH | S_IWOTH) != 0 {
            throw table.error("curve_secret_key_file", "\(secretPath) is readable or writable by every user (mode \(String(info.st_mode & 0o777, radix: 8))): chmod 600 it, and make a new key pair, since others may have read it")
        }
        if stat(resolve(authorizedFile), &info) == 0, info.st_mode & S_IWOTH != 0 {
            throw table.error("authorized_keys_file", "\(resolve(authorizedFile)) is writable by every user (mode \(String(info.st_mode & 0o777, radix: 8))): anyone could add a key; chmod 644 it")
        }
        let secret: String
        do {
            secret = try readKey(path: secretPath)
        } catch {
            throw table.error("curve_secret_key_file", "cannot read a key from \(secretPath) (mpcctl keygen writes one)")
        }
        guard isValidKey(secret), let publicKey = publicKey(forSecret: secret) else {
            throw table.error("curve_secret_key_file", "\(secretPath) does not hold a 40-character Z85 secret key")
        }
        let authorizedText: String
        do {
            authorizedText = try FileReading.text(resolve(authorizedFile), limit: 16 << 20)
        } catch {
            throw table.error("authorized_keys_file", "cannot read \(resolve(authorizedFile)): \(error.reason)")
        }
        let keys = keys(in: authorizedText)
        if let bad = keys.first(where: { !isValidKey($0) }) {
            throw table.error("authorized_keys_file", "\"\(bad)\" is not a 40-character Z85 public key")
        }
        var curve = CurveConfiguration(secretKey: secret, publicKey: publicKey, authorizedKeys: Set(keys))
        curve.secretKeyFile = resolve(secretFile)
        curve.authorizedKeysFile = resolve(authorizedFile)
        return curve
    }
}
