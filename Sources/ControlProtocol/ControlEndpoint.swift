import ConfigFiles
import Foundation

/// Where mpcctl finds the daemon's control socket, worked out the same way on both ends.
public enum ControlEndpoint {
    /// The control socket when the configuration does not say: in the runtime directory systemd
    /// gives the service (`$RUNTIME_DIRECTORY`), else /run/mpcd for root, else the user's runtime
    /// directory (`$XDG_RUNTIME_DIR/mpcd`), else `~/.local/state/mpcd`: never a shared folder such
    /// as /tmp, where another user could make the folder first.
    public static func `default`(_ environment: [String: String] = ProcessInfo.processInfo.environment, user: uid_t = geteuid()) -> String {
        if let runtime = environment["RUNTIME_DIRECTORY"]?.split(separator: ":").first, !runtime.isEmpty {
            return "ipc://\(runtime)/control.sock"
        }
        if user == 0 { return "ipc:///run/mpcd/control.sock" }
        if let user = environment["XDG_RUNTIME_DIR"], user.hasPrefix("/") { return "ipc://\(user)/mpcd/control.sock" }
        if let home = environment["HOME"], home.hasPrefix("/"), home != "/" { return "ipc://\(home)/.local/state/mpcd/control.sock" }
        // no home either: a per-user folder in /tmp, which the daemon refuses unless it is its own
        return "ipc:///tmp/mpcd-\(user)/control.sock"
    }

    /// Whether `endpoint` can carry the control socket: an ipc:// path (with something after the
    /// scheme), or a tcp:// address whose port is one (`hasValidPort`).
    public static func isValid(_ endpoint: String) -> Bool {
        (endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("tcp://")) && endpoint.count > 6 && hasValidPort(endpoint)
    }

    /// For a tcp:// endpoint, whether it ends in a host and a port libzmq takes as written: an
    /// integer 0 to 65535, or `*`. libzmq reads a larger number modulo 65536 (:71237 binds 5701,
    /// :-1 65535) rather than refuse it. Other transports have no port: true.
    public static func hasValidPort(_ endpoint: String) -> Bool {
        guard endpoint.hasPrefix("tcp://") else { return true }
        let address = endpoint.dropFirst(6)
        guard let colon = address.lastIndex(of: ":"), colon != address.startIndex else { return false }
        let port = address[address.index(after: colon)...]
        if port == "*" { return true }
        return !port.isEmpty && port.count <= 5 && port.allSatisfy(\.isASCII) && port.allSatisfy(\.isNumber) && Int(port).map { $0 <= 65535 } == true
    }

    /// Largest configuration file read (a hand-written one is a few KiB).
    public static let maxFileBytes = 1 << 20

    /// A configuration file mpcctl could not take the endpoint from.
    public struct FileError: Error, CustomStringConvertible {
        public let source: String
        public let location: String
        public let reason: String
        public var description: String { "\(source): \(location): \(reason)" }
    }

    /// Only the `[control] endpoint` of a configuration file (`mpcctl --config`): the rest of the
    /// file (keys, networks) need not be readable by whoever asks.
    public static func read(fromFile path: String) throws(FileError) -> String {
        let values: [String: ConfigValue]
        do {
            values = try TOMLParser.parse(try FileReading.text(path, limit: maxFileBytes))
        } catch let error as FileReadError {
            throw FileError(source: path, location: "file", reason: error.reason)
        } catch let error as TOMLParser.SyntaxError {
            throw FileError(source: path, location: "line \(error.line), column \(error.column)", reason: error.reason)
        } catch {
            throw FileError(source: path, location: "file", reason: "\(error)")
        }
        guard case let .table(control)? = values["control"], let value = control["endpoint"] else { return Self.default() }
        guard case let .string(endpoint) = value, isValid(endpoint) else {
            throw FileError(source: path, location: "control.endpoint", reason: "expected an ipc:// or tcp:// endpoint")
        }
        return endpoint
    }
}
