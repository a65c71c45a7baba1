import ArgumentParser
import ConfigFiles
import ControlProtocol
import CSystemShims
import Foundation
import ZeroMQ

/// `mpcctl`: asks a running mpcd how it is, and tells it what to do.
@main
struct MPCCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpcctl",
        abstract: "Control and inspect a running mpcd.",
        version: mpcdVersion,
        subcommands: [Status.self, Sessions.self, Top.self, Reload.self, Policy.self, Record.self, Metrics.self, KeyGen.self],
        defaultSubcommand: Status.self
    )
}

struct Connection: ParsableArguments {
    @Option(help: "The daemon's control endpoint (default: the one mpcd uses, or --config's).") var socket: String?
    @Option(help: "Read the control endpoint from this mpcd configuration file.") var config: String?
    @Option(help: "Seconds to wait for an answer (default 2; 60 for reload and policy load).") var timeout: Double?

    static let maxTimeout = 3600.0

    func validate() throws {
        if let timeout, !(timeout > 0 && timeout <= Self.maxTimeout) {
            throw ValidationError("--timeout must be a number of seconds above 0 and at most \(Int(Self.maxTimeout)), got \(timeout)")
        }
        if let socket, !ControlEndpoint.isValid(socket) {
            throw ValidationError("--socket must be an ipc:// path or a tcp:// address with a port of 0 to 65535, got \"\(socket)\"")
        }
    }

    /// The endpoint, and whether the operator named it (rather than mpcctl deriving the default).
    var endpoint: (String, explicit: Bool) {
        get throws {
            if let socket { return (socket, true) }
            if let config {
                do {
                    return (try ControlEndpoint.read(fromFile: config), true)
                } catch {
                    fail("\(error)")
                }
            }
            return (ControlEndpoint.default(), false)
        }
    }

    /// Sends one JSON request and returns the reply; exits 1 with the reason when there is none:
    /// not running (no socket, or a stale one), permission denied, or no answer in time (busy).
    func request(_ request: ControlRequest, defaultTimeout: Double = 2) throws -> ControlReply {
        try answer(request, defaultTimeout: defaultTimeout).reply
    }

    /// The reply and the bytes it came in (`--json` prints what the daemon sent, fields this
    /// mpcctl does not know included); exits 1 with the reason when there is none.
    func answer(_ request: ControlRequest, defaultTimeout: Double = 2) throws -> Answer {
        switch tryRequest(request, defaultTimeout: defaultTimeout) {
        case let .success(answer): return answer
        case let .failure(reason): fail(reason.message)
        }
    }

    struct Answer {
        let reply: ControlReply
        let bytes: [UInt8]

        /// One member of the reply as the daemon sent it, pretty-printed with sorted keys.
        func json(_ member: String) -> String {
            guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], let value = object[member],
                  let data = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else {
                return "null"
            }
            return String(decoding: data, as: UTF8.self)
        }
    }

    struct Unanswered: Error {
        let message: String
    }

    /// The largest frame of a reply mpcctl reads (libzmq limits frames, not whole messages; a
    /// control reply is one frame).
    static let maxReplyBytes = 64 << 20

    /// The reply, or why there is none (for a caller that carries on, as `top` does).
    func tryRequest(_ request: ControlRequest, defaultTimeout: Double = 2) -> Result<Answer, Unanswered> {
        let endpoint: String, explicit: Bool
        do {
            (endpoint, explicit) = try self.endpoint
        } catch {
            return .failure(Unanswered(message: "\(error)"))
        }
        let timeout = self.timeout ?? defaultTimeout
        if endpoint.hasPrefix("ipc://"), let problem = Self.reachability(path: String(endpoint.dropFirst(6)), explicit: explicit) {
            return .failure(Unanswered(message: problem))
        }
        do {
            let context = try ZMQContext()
            let socket = try ZMQSocket(context, type: ZMQSocketType.request)
            // a reply is kilobytes (a status of many sessions, a few MiB): libzmq would take one of
            // any size whole into memory first (400 MiB from a fake socket took mpcctl to 1.25 GB)
            try socket.setOption(ZMQOption.maxMessageSize, Int64(Self.maxReplyBytes))
            try socket.connect(endpoint)
            let data = try JSONEncoder().encode(request)
            guard try socket.send([Array(data)]) else { return .failure(Unanswered(message: "cannot reach mpcd at \(endpoint)")) }
            guard try socket.waitReadable(milliseconds: Int((timeout * 1000).rounded(.up))), let frames = try socket.receive(), let last = frames.last else {
                return .failure(Unanswered(message: "mpcd did not answer within \(timeout) s on \(endpoint): it is running but busy or stopped (or what answered sent a frame over \(Self.maxReplyBytes >> 20) MiB, which mpcctl does not read). A reload or policy load may still go through: check with `mpcctl status`, or wait longer with --timeout"))
            }
            switch ControlReply.decode(last) {
            case let .success(reply): return .success(Answer(reply: reply, bytes: last))
            case let .failure(error):
                return .failure(Unanswered(message: "the answer on \(endpoint) is not a control reply mpcctl \(mpcdVersion) can read (another program, or another version of mpcd?): \(error)"))
            }
        } catch {
            return .failure(Unanswered(message: "cannot reach mpcd at \(endpoint): \(error)"))
        }
    }

    /// Tells apart, before asking: no daemon (no socket file, or nothing listening on it), no
    /// permission, and a socket in a folder another user owns (the default path only: an operator
    /// who names a socket has chosen it). Nil when the socket can be asked.
    static func reachability(path: String, explicit: Bool) -> String? {
        let folder = (path as NSString).deletingLastPathComponent
        var info = stat()
        if !explicit, lstat(folder, &info) == 0, info.st_uid != 0, info.st_uid != geteuid() {
            return "not using \(path): its folder \(folder) belongs to user \(info.st_uid), not to you or root, so another user may have put it there; pass --socket \(path) if you trust it"
        }
        switch mpcd_probe_unix_socket(path) {
        case 0: return nil
        case ENOENT: return "mpcd is not running: there is no control socket at \(path)"
        case ECONNREFUSED:
            // a FIFO, a folder or a plain file refuses a connection too: say what it is instead
            if stat(path, &info) == 0, info.st_mode & S_IFMT != S_IFSOCK {
                return "\(path) is not a socket (\(Self.fileKind(info.st_mode))): no mpcd control socket is there"
            }
            return "mpcd is not running: \(path) is left over from a daemon that has stopped (nothing listens on it)"
        case EACCES, EPERM:
            return "permission denied on \(path): mpcctl needs write access to the control socket; run it as the daemon's user or root, or as a member of the socket's group"
        case let error: return "cannot reach mpcd at \(path): \(String(cString: strerror(error)))"
        }
    }
}

extension Connection {
    static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a folder"
        case S_IFIFO: "a FIFO"
        case S_IFREG: "a regular file"
        case S_IFCHR, S_IFBLK: "a device"
        case S_IFLNK: "a link"
        default: "not a socket"
        }
    }
}

func fail(_ message: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("mpcctl: \(printable(message))\n".utf8))
    Foundation.exit(code)
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Version, timing, latency, sessions and planner health, on one screen (the default).")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let answer = try connection.answer(ControlRequest(command: .status))
        guard let status = answer.reply.status else { fail(answer.reply.error ?? "the daemon answered without a status") }
        if json { return print(answer.json("status")) }
        print(StatusReport(status).text)
    }
}

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The clients being served.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let answer = try connection.answer(ControlRequest(command: .sessions))
        guard let sessions = answer.reply.sessions else { fail(answer.reply.error ?? "the daemon answered without sessions") }
        if json { return print(answer.json("sessions")) }
        print(StatusReport.sessionTable(sessions))
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read the configuration file again; a broken one is refused and the daemon keeps the old.")
    @OptionGroup var connection: Connection

    func run() throws {
        let reply = try connection.request(ControlRequest(command: .reload), defaultTimeout: 60)
        guard reply.ok else { fail("reload refused, still serving the previous configuration: \(reply.error ?? "?")") }
        print("reloaded \(reply.config ?? "")")
        for warning in reply.warnings ?? [] { print("warning: \(printable(warning))") }
    }
}

struct Policy: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The prior network.", subcommands: [Load.self])

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Install a weights file (safetensors) as every session's prior.")
        @OptionGroup var connection: Connection
        @Argument(help: "The weights file, as a path the daemon can read.") var path: String

        func run() throws {
            let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
            let reply = try connection.request(ControlRequest(command: .policyLoad, path: absolute), defaultTimeout: 60)
            guard reply.ok else { fail("not loaded: \(reply.error ?? "?")") }
            print("loaded \(absolute): \(reply.kind ?? "") version \(reply.version.map(String.init) ?? "")")
        }
    }
}

struct Record: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record every tick into the [recording] folder (on), or stop recording (off).")
    enum Switch: String, ExpressibleByArgument, CaseIterable { case on, off }
    @OptionGroup var connection: Connection
    @Argument(help: "on or off.") var state: Switch

    func run() throws {
        let reply = try connection.request(ControlRequest(command: .record, enable: state == .on))
        guard reply.ok else { fail("recording not switched \(state.rawValue): \(reply.error ?? "?")") }
        if let recording = reply.status?.recording { print(StatusReport.recordingLine(recording)) }
    }
}

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Counters, gauges and the tick latency histogram in Prometheus text format.")
    @OptionGroup var connection: Connection

    func run() throws {
        let reply = try connection.request(ControlRequest(command: .metrics))
        guard let text = reply.text else { fail(reply.error ?? "the daemon answered without metrics") }
        print(printable(text), terminator: "")
    }
}

struct KeyGen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public).")
    @Argument(help: "Path prefix of the two files, e.g. /etc/mpcd/server or robot-arm.") var name: String

    func validate() throws {
        // a name must end in a file name of its own: "" or "dir/" would write the hidden files
        // .key and .pub, and "." or ".." files named after a folder
        let last = name.split(separator: "/", omittingEmptySubsequences: false).last ?? ""
        guard !last.isEmpty, last != ".", last != ".." else {
            throw ValidationError("NAME must end in a file name (e.g. /etc/mpcd/server or robot-arm), got \"\(name)\"")
        }
        guard !name.hasPrefix("/dev/"), !name.hasPrefix("/proc/"), !name.hasPrefix("/sys/") else {
            throw ValidationError("NAME must not be under /dev, /proc or /sys, got \"\(name)\"")
        }
    }

    func run() throws {
        guard let (publicKey, secretKey) = ZMQCurve.keyPair() else { fail("libzmq has no CURVE support") }
        let secretPath = name + ".key", publicPath = name + ".pub"
        // created exclusively with their final modes: the secret is never readable by others, not
        // even for an instant, and an existing file (or a link planted in its place) is never written
        do {
            try FileWriting.writeNew(Data("# CURVE secret key: keep it private\n\(secretKey)\n".utf8), to: secretPath, mode: 0o600)
        } catch {
            fail("cannot write the secret key: \(error)")
        }
        do {
            try FileWriting.writeNew(Data("\(publicKey)\n".utf8), to: publicPath, mode: 0o644)
        } catch {
            unlink(secretPath)
            fail("cannot write the public key: \(error)")
        }
        print("wrote \(secretPath) (secret) and \(publicPath) (public)")
        print("public key: \(publicKey)")
    }
}
