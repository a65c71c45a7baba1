import ArgumentParser
import CZeroMQ
import Daemon
import Foundation

/// `mpcctl`: asks a running mpcd how it is, and tells it what to do.
@main
struct MPCCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpcctl",
        abstract: "Control and inspect a running mpcd.",
        version: mpcdVersion,
        subcommands: [Status.self, Sessions.self, Reload.self, Policy.self, Metrics.self, KeyGen.self],
        defaultSubcommand: Status.self
    )
}

struct Connection: ParsableArguments {
    @Option(help: "The daemon's control endpoint (default: the one mpcd uses, or --config's).") var socket: String?
    @Option(help: "Read the control endpoint from this mpcd configuration file.") var config: String?
    @Option(help: "Seconds to wait for an answer.") var timeout: Double = 2

    var endpoint: String {
        get throws {
            if let socket { return socket }
            if let config {
                do {
                    return try DaemonConfiguration.load(path: config, withPrior: false).controlEndpoint
                } catch {
                    throw ValidationError("\(error)")
                }
            }
            return DaemonConfiguration.defaultControlEndpoint()
        }
    }

    /// Sends one JSON request and returns the reply; exits 1 when the daemon does not answer.
    func request(_ object: [String: Any]) throws -> [String: Any] {
        let endpoint = try self.endpoint
        if endpoint.hasPrefix("ipc://"), !FileManager.default.fileExists(atPath: String(endpoint.dropFirst(6))) {
            fail("mpcd is not running: there is no control socket at \(endpoint)")
        }
        let context = try ZMQContext()
        let socket = try ZMQSocket(context, type: ZMQ_REQ)
        try socket.connect(endpoint)
        let data = try JSONSerialization.data(withJSONObject: object)
        guard try socket.send([Array(data)]) else { fail("mpcd is not running: cannot reach \(endpoint)") }
        guard try socket.waitReadable(milliseconds: Int(timeout * 1000)), let frames = try socket.receive(), let last = frames.last else {
            fail("mpcd is not running: no answer on \(endpoint) within \(timeout) s")
        }
        guard let reply = try? JSONSerialization.jsonObject(with: Data(last)) as? [String: Any] else {
            fail("the daemon's answer is not JSON")
        }
        return reply
    }
}

func fail(_ message: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("mpcctl: \(message)\n".utf8))
    Foundation.exit(code)
}

func printJSON(_ object: Any) {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
    print(String(decoding: data, as: UTF8.self))
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Version, timing, latency, sessions and planner health, on one screen (the default).")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let reply = try connection.request(["command": "status"])
        guard let status = reply["status"] as? [String: Any] else { fail("\(reply["error"] ?? "unexpected reply")") }
        if json { return printJSON(status) }
        print(StatusReport(status).text)
    }
}

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The clients being served.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let reply = try connection.request(["command": "sessions"])
        let sessions = reply["sessions"] as? [[String: Any]] ?? []
        if json { return printJSON(sessions) }
        print(StatusReport.sessionTable(sessions))
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read the configuration file again; a broken one is refused and the daemon keeps the old.")
    @OptionGroup var connection: Connection

    func run() throws {
        let reply = try connection.request(["command": "reload"])
        guard reply["ok"] as? Bool == true else { fail("reload refused, still serving the previous configuration: \(reply["error"] ?? "?")") }
        print("reloaded \(reply["config"] ?? "")")
        for warning in reply["warnings"] as? [String] ?? [] { print("warning: \(warning)") }
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
            let reply = try connection.request(["command": "policy_load", "path": absolute])
            guard reply["ok"] as? Bool == true else { fail("not loaded: \(reply["error"] ?? "?")") }
            print("loaded \(absolute): \(reply["kind"] ?? "") version \(reply["version"] ?? "")")
        }
    }
}

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Counters, gauges and the tick latency histogram in Prometheus text format.")
    @OptionGroup var connection: Connection

    func run() throws {
        let reply = try connection.request(["command": "metrics"])
        print(reply["text"] as? String ?? "", terminator: "")
    }
}

struct KeyGen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public).")
    @Argument(help: "Path prefix of the two files, e.g. /etc/mpcd/server or robot-arm.") var name: String

    func run() throws {
        guard let (publicKey, secretKey) = CurveConfiguration.generateKeyPair() else { fail("libzmq has no CURVE support") }
        let secretPath = name + ".key", publicPath = name + ".pub"
        for path in [secretPath, publicPath] where FileManager.default.fileExists(atPath: path) { fail("\(path) exists; not overwriting it") }
        guard FileManager.default.createFile(atPath: secretPath, contents: Data("# CURVE secret key: keep it private\n\(secretKey)\n".utf8),
                                             attributes: [.posixPermissions: 0o600]),
              FileManager.default.createFile(atPath: publicPath, contents: Data("\(publicKey)\n".utf8), attributes: [.posixPermissions: 0o644]) else {
            fail("cannot write \(secretPath) and \(publicPath)")
        }
        print("wrote \(secretPath) (secret) and \(publicPath) (public)")
        print("public key: \(publicKey)")
    }
}
