import Foundation
import Models
import Planners

/// How the daemon paces its replies.
public enum TimingMode: String, Sendable, CaseIterable {
    /// Tick at `rate_hz` on the monotonic clock; every tick answers every live session.
    case realtime
    /// Plan as soon as an observation arrives and answer it: runs as fast as a simulator steps.
    case lockstep
}

/// The `[server]` table.
public struct ServerConfiguration: Sendable {
    /// ZeroMQ endpoints the ROUTER socket binds. Loopback by default.
    public var endpoints = ["tcp://127.0.0.1:5555"]
    public var mode = TimingMode.lockstep
    /// Tick rate in realtime mode, Hz; nil uses the task's 1/dt.
    public var rateHz: Double? = nil
    /// Share of a period planning may use before the reply must go out.
    public var budgetFraction = 0.8
    /// Planned actions sent after the current one, so a robot can ride through a lost reply.
    public var planSteps = 5
    /// A session with no message for this long is dropped, s.
    public var sessionTimeout = 10.0
    public var maxSessions = 64
    /// Largest message accepted, bytes; bigger ones disconnect the sender (ZMQ_MAXMSGSIZE).
    public var maxMessageBytes = 65_536
    /// Use the observation's timestamp (seconds on this host's CLOCK_MONOTONIC) as its age;
    /// otherwise its age counts from when it arrived.
    public var trustClientTimestamps = false
    /// Sessions planned in parallel at one tick.
    public var workers = 2
    /// Check the socket in a loop for up to this long before sleeping, µs: lower latency for a
    /// busy core.
    public var busyPollMicroseconds = 0
    /// CPUs the daemon's threads may run on; empty: any.
    public var cpuAffinity: [Int] = []

    public init() {}
}

/// Everything the daemon runs with, read and checked before anything starts.
public struct DaemonConfiguration: Sendable {
    /// The file it came from, or "(embedded default)".
    public var source: String
    public var task: ControlTask
    public var planner: PlannerConfiguration
    public var server: ServerConfiguration

    /// The tick rate in force.
    public var rateHz: Double { server.rateHz ?? (1e6 / Double(task.dynamics.dt)).rounded() / 1e6 }

    /// A configuration file that cannot be used: the file, the key (or line) and the reason.
    public struct LoadError: Error, CustomStringConvertible {
        public let source: String
        public let location: String
        public let reason: String

        public var description: String { "\(source): \(location): \(reason)" }
    }

    public static let embeddedSource = "(embedded default)"

    /// The configuration mpcd serves without `--config`: Pendulum-v1 with MPPI on loopback.
    public static let embeddedDefault = """
        # mpcd's embedded default: Gymnasium's Pendulum-v1 planned with MPPI, served on loopback.
        [task]
        name = "pendulum"

        [planner]
        likelihood = "mppi"
        samples = 1024
        horizon = 32
        iterations = 1
        temperature = 0.5
        initial_std = 0.5

        [server]
        endpoints = ["tcp://127.0.0.1:5555"]
        mode = "lockstep"
        """

    public static func load(path: String) throws(LoadError) -> DaemonConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LoadError(source: path, location: "file", reason: "cannot be read (\((error as NSError).localizedDescription))")
        }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String) throws(LoadError) -> DaemonConfiguration {
        let values: [String: ConfigValue]
        do {
            values = try TOMLReader.parse(text)
        } catch {
            throw LoadError(source: source, location: "line \(error.line), column \(error.column)", reason: error.reason)
        }
        do {
            return try read(ConfigTable(values), source: source)
        } catch {
            throw LoadError(source: source, location: error.key, reason: error.reason)
        }
    }

    static func read(_ root: ConfigTable, source: String) throws(ConfigurationError) -> DaemonConfiguration {
        let taskTable = try root.table("task") ?? ConfigTable([:], path: "task")
        let name = try taskTable.choice("name", default: "pendulum", from: TaskRegistry.names)
        let task = try TaskRegistry.make(name: name, parameters: taskTable)
        let planner = try PlannerConfiguration(table: try root.table("planner") ?? ConfigTable([:], path: "planner"))
        try planner.validate(for: task)
        let server = try readServer(try root.table("server") ?? ConfigTable([:], path: "server"), planner: planner)
        try root.finish()
        return DaemonConfiguration(source: source, task: task, planner: planner, server: server)
    }

    public static func readServer(_ table: ConfigTable, planner: PlannerConfiguration) throws(ConfigurationError) -> ServerConfiguration {
        var s = ServerConfiguration()
        s.planSteps = min(s.planSteps, planner.horizon - 1)
        s.endpoints = try table.strings("endpoints", default: s.endpoints)
        if s.endpoints.isEmpty { throw table.error("endpoints", "at least one endpoint is required") }
        for e in s.endpoints where !(e.hasPrefix("tcp://") || e.hasPrefix("ipc://") || e.hasPrefix("inproc://")) {
            throw table.error("endpoints", "\"\(e)\" is not a tcp://, ipc:// or inproc:// endpoint")
        }
        s.mode = TimingMode(rawValue: try table.choice("mode", default: s.mode.rawValue, from: TimingMode.allCases.map(\.rawValue)))!
        s.rateHz = try table.optionalNumber("rate_hz", .closed(0.1, 10_000))
        s.budgetFraction = try table.number("budget_fraction", default: s.budgetFraction, .closed(0.05, 1))
        s.planSteps = try table.integer("plan_steps", default: s.planSteps, min: 0, max: planner.horizon - 1)
        s.sessionTimeout = try table.number("session_timeout_s", default: s.sessionTimeout, .positive)
        s.maxSessions = try table.integer("max_sessions", default: s.maxSessions, min: 1, max: 100_000)
        s.maxMessageBytes = try table.integer("max_message_bytes", default: s.maxMessageBytes, min: 64, max: 1 << 30)
        s.trustClientTimestamps = try table.bool("trust_client_timestamps", default: s.trustClientTimestamps)
        s.workers = try table.integer("workers", default: s.workers, min: 1, max: 256)
        s.busyPollMicroseconds = try table.integer("busy_poll_us", default: s.busyPollMicroseconds, min: 0, max: 10_000_000)
        let cpus = try table.numbers("cpu_affinity", default: [], .closed(0, 1023))
        guard cpus.allSatisfy({ $0 == $0.rounded() }) else { throw table.error("cpu_affinity", "expected CPU numbers (integers)") }
        s.cpuAffinity = cpus.map { Int($0) }
        try table.finish()
        return s
    }
}
