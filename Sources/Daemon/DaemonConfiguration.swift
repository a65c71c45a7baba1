import ControlProtocol
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
    /// With `maxSessions` open, a new client takes the place of the session silent longest, if it
    /// has been silent at least this long, s (a robot that stopped sending yields its slot).
    public var evictIdleAfter = 1.0
    /// Largest message accepted, all its frames together, bytes; a bigger one disconnects its
    /// sender (per frame by ZMQOption.maxMessageSize, per message by the daemon and its connection guard).
    public var maxMessageBytes = 65_536
    /// Most TCP connections to the data endpoints at once (also kept below the open-files limit).
    public var maxConnections = 128
    /// Memory the sessions' planners, the online amortiser's buffer and what libzmq may hold for the
    /// connections may take at most, MiB: checked against the configuration before anything starts.
    public var memoryLimitMB = 2048
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
    /// SCHED_FIFO priority (1-99) for the daemon's threads; 0 leaves the normal scheduler.
    public var realtimePriority = 0

    public init() {}

    /// Bytes libzmq may hold for one TCP connection (a message being gathered, not yet handed to the
    /// daemon) before the connection guard ends it: a message arriving and one more, and framing.
    public static func heldBytes(maxMessageBytes: Int) -> UInt64 { 2 * UInt64(maxMessageBytes) + 16 * 1024 }
    /// What the guard allows on top: the handshake before the first message, and heartbeats.
    public static let handshakeAllowance: UInt64 = 8192, heartbeatAllowanceCap: UInt64 = 64 * 1024

    /// The most memory libzmq can hold for the connections before the guard ends them: every held
    /// byte an empty frame, 2 bytes on the wire and 64 in memory.
    public var worstCaseConnectionMemory: Double {
        32 * Double(Self.heldBytes(maxMessageBytes: maxMessageBytes) + Self.handshakeAllowance + Self.heartbeatAllowanceCap) * Double(maxConnections)
    }

    /// Whether `endpoint` names a transport the daemon binds: tcp://, ipc:// or inproc://, with
    /// something after the scheme, and a tcp:// endpoint a port of 0 to 65535 or `*`.
    public static func isEndpoint(_ endpoint: String) -> Bool {
        ["tcp://", "ipc://", "inproc://"].contains { endpoint.hasPrefix($0) && endpoint.count > $0.count }
            && ControlEndpoint.hasValidPort(endpoint)
    }
}

/// The `[safety]` table: what guards the actions that leave the daemon.
public struct SafetyConfiguration: Sendable {
    /// In realtime mode, a session whose newest observation is older than this gets the safe
    /// action instead of a plan, s; an observation already this old on arrival (trusted
    /// timestamps) is refused. 0: off.
    public var staleAfter = 0.5
    public var safeAction = ActionSafety.SafeAction.zero
    /// Slew limit per action, units per second; nil: none.
    public var maxRate: [Float]? = nil

    public init() {}
}

/// The `[prior]` table: an amortised network as the planner's action prior.
public struct PriorConfiguration: Sendable {
    /// Where the weights came from: a path, or `embedded:NAME` for weights built into mpcd.
    public var file: String
    public var network: AmortisedNetwork
    /// Spend fewer iterations while they gain little on the plan's start, more while they gain much.
    public var adaptive = false
    /// Fewest iterations adaptive planning goes down to (0: the network's action alone).
    public var minIterations = 0
    /// Relative gain of the iterations, (start cost - plan cost) / (|start cost| + `gapScale`),
    /// below which a session drops an iteration and above which it adds one (``AdaptiveIterations``);
    /// the keys keep the name "gap" for the gain.
    public var gapLow = 0.02
    public var gapHigh = 0.1
    /// Cost units added to the start cost in the relative gain's denominator; nil: the planner's λ.
    public var gapScale: Double? = nil
    /// At 0 iterations, every this many ticks one iteration runs to measure the gain again.
    public var probeEvery = 10
    /// Consecutive small gains before an iteration is dropped (one large gain adds one at once):
    /// cheap ticks are earned slowly and lost quickly.
    public var patience = 20
    /// Online amortisation: distil live ticks into the network in the background.
    public var online = false
    public var onlineLearningRate: Float = 1e-3
    public var onlineBatch = 64
    public var onlineBuffer = 50_000
    public var onlinePublishEvery = 50
    /// Where online weights are kept across restarts; empty: not kept.
    public var stateDirectory = ""

    /// The file online weights are saved to and loaded from at start, if any (`onlineStateFile`).
    public var stateFile: String?
    /// Why weights saved there were not taken at start (the configured network was), if so.
    public var stateProblem: String?
    /// Online weights under the name used before fingerprints, not read (a note says so).
    public var legacyStateFile: String?

    /// What online weights were learnt for (`onlineFingerprint`): they serve only a configuration
    /// with the same fingerprint, at a restart and across a reload.
    public var onlineFingerprint: UInt64 = 0

    /// A hash of what online weights learn from and start at: the `[task]` table as it reads
    /// (`taskText`, its canonical text: a changed target or cost weight is another task), the state
    /// and action names and sizes (every MuJoCo task is named "mujoco", and another robot must not
    /// start from this one's weights), and the configured network (`start`: its bytes' hash, or
    /// how an untrained one is made), so a network shipped since replaces what was learnt before.
    public static func onlineFingerprint(task: ControlTask, taskText: String, start: String) -> UInt64 {
        let d = task.dynamics
        let identity = "\(d.stateDimension)|\(d.actionDimension)|\(d.stateNames.joined(separator: ","))|\(d.actionNames.joined(separator: ","))"
        return fnv1a("\(task.name)|\(taskText)|\(identity)|\(start)".utf8)
    }

    /// Where a task's online weights are kept in `directory`: TASK-FINGERPRINT_KIND_online.safetensors.
    public static func onlineStateFile(directory: String, task: ControlTask, kind: AmortisedNetwork.Kind, fingerprint: UInt64) -> String? {
        guard !directory.isEmpty else { return nil }
        let name = "\(task.name)-\(String(fingerprint, radix: 16))"
        return (directory as NSString).appendingPathComponent("\(name)_\(kind.rawValue)_online.safetensors")
    }

    public init(file: String, network: AmortisedNetwork) {
        self.file = file
        self.network = network
    }
}

/// The `[value]` table: a learned value V(s) at the end of every rollout, in place of the task's
/// terminal cost.
public struct ValueConfiguration: Sendable {
    /// Where the weights came from: a path, or `embedded:NAME`.
    public var file: String
    public var network: ValueNetwork
    /// w in J = Σ c + w V(x_H).
    public var weight: Float = 1

    public init(file: String, network: ValueNetwork) {
        self.file = file
        self.network = network
    }
}

/// Everything the daemon runs with, read and checked before anything starts.
public struct DaemonConfiguration: Sendable {
    /// The file it came from, or "(embedded default)".
    public var source: String
    public var task: ControlTask
    public var planner: PlannerConfiguration
    public var server: ServerConfiguration
    public var prior: PriorConfiguration?
    public var value: ValueConfiguration?
    /// The `[control]` table: where mpcctl finds the daemon.
    public var controlEndpoint: String
    public var safety = SafetyConfiguration()
    /// The `[security]` table: CURVE on the data endpoints, when configured.
    public var curve: CurveConfiguration?
    /// The `[metrics]` table: where Prometheus scrapes the daemon over HTTP (off without the table).
    public var metricsListen: MetricsListenAddress?
    /// Every file the configuration named and the daemon read, with the key that named it.
    public var filesRead: [FileRead] = []
    /// The `[recording]` table: tick recordings (off without the table).
    public var recording: RecordingConfiguration?
    /// The configuration's text as read (what a recording keeps, to replay with).
    public var text = ""

    public struct FileRead: Sendable, Equatable {
        public var key: String
        public var path: String
        /// A secret (a CURVE secret key): it must not be made readable by others.
        public var secret = false
    }

    /// The action guard for replies sent every `period` seconds.
    public func actionSafety(period: Double) throws(ConfigurationError) -> ActionSafety {
        let (lower, upper) = try planner.bounds(for: task)
        return ActionSafety(lower: lower, upper: upper, maxStep: safety.maxRate.map { $0.map { $0 * Float(period) } })
    }

    /// The stale threshold in force for ticks without a new observation, s (0: off):
    /// `stale_after_s`, but in realtime never under two tick periods (a trusted timestamp's age on
    /// arrival is held to `stale_after_s` itself). An observation one tick old is not stale; with the default 0.5 s at 1 Hz every
    /// reply after the first was the safe action, flagged stale, and the planner never acted.
    public var staleAfter: Double {
        safety.staleAfter > 0 ? atLeastTwoTicks(safety.staleAfter) : 0
    }

    /// How long a session may go without a message before it ends: in realtime never under two
    /// tick periods. A client that answers each reply with its next observation is silent for a
    /// period between them: `session_timeout_s = 0.9` at 1 Hz ended its session after every tick,
    /// its parameters and warm start with it.
    public var sessionTimeout: Double {
        atLeastTwoTicks(server.sessionTimeout)
    }

    /// The cores the daemon will run on: those it may run on now, within `server.cpu_affinity`
    /// (applied when it starts serving, after the configuration is read).
    public var cores: Int {
        let now = SpinningPool.availableCores()
        guard !server.cpuAffinity.isEmpty else { return now }
        // the distinct CPUs listed that this process may run on: [0, 0] or [0, 1023] on two CPUs pin to one
        let listed = Set(server.cpuAffinity)
        let usable = SpinningPool.allowedCPUs().map { listed.intersection($0).count } ?? listed.count
        return max(1, min(now, usable))
    }

    /// `seconds`, in realtime raised to two tick periods: a client answering each reply is silent
    /// for a period between its messages.
    private func atLeastTwoTicks(_ seconds: Double) -> Double {
        server.mode == .realtime ? max(seconds, 2 / rateHz) : seconds
    }

    /// For a MuJoCo task, the library its rollouts step: version and file (MuJoCo's AVX build
    /// beside the binary, or the system's), for `--check` and the log; nil for other tasks.
    public var mujocoLibrary: String? {
        task.name == "mujoco" ? "\(MuJoCoModel.version) \(MuJoCoModel.libraryPath)" : nil
    }

    /// What a configuration does otherwise than it reads, for `--check` and the log.
    public var notes: [String] {
        var notes: [String] = []
        if staleAfter != safety.staleAfter {
            notes.append("safety.stale_after_s \(safety.staleAfter) is shorter than two tick periods at \(rateHz) Hz: \(staleAfter) s is used")
        }
        if sessionTimeout != server.sessionTimeout {
            notes.append("server.session_timeout_s \(server.sessionTimeout) is shorter than two tick periods at \(rateHz) Hz: \(sessionTimeout) s is used")
        }
        let threads = SpinningPool.usableThreads(planner.threads, cores: cores)
        if threads < planner.threads {
            notes.append("planner.threads \(planner.threads) is more than the \(threads) cores mpcd may run on: \(threads) are used (threads beyond the cores take turns on them, and plan several times slower)")
        }
        if let curve, curve.authorizedKeys.isEmpty {
            notes.append("security.authorized_keys_file \(curve.authorizedKeysFile) lists no key: every client is refused until one is added (mpcctl reload)")
        }
        if let problem = prior?.stateProblem { notes.append("prior: \(problem)") }
        if let legacy = prior?.legacyStateFile {
            notes.append("prior: \(legacy) holds online weights saved before their file names carried the configuration's fingerprint; they are not read (which configuration they serve cannot be told): the configured network serves, and \(prior?.stateFile ?? "") will hold what it learns. Delete the old file when it is no longer wanted")
        }
        return notes
    }

    /// The tick rate in force.
    public var rateHz: Double {
        // through the step's shortest decimal form: 1 / 0.04 is 25, not 1 / Double(Float(0.04))
        server.rateHz ?? 1 / (Double("\(task.dynamics.dt)") ?? Double(task.dynamics.dt))
    }

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
        # mpcd's embedded default: Gymnasium's Pendulum-v1. A distilled policy (built into mpcd)
        # is the action prior of the paper's Eq. 5: it proposes each tick's plan and MPPI refines
        # it with up to 2 iterations against the prior's KL, fewer while the proposal is already
        # good. Served on loopback.
        [task]
        name = "pendulum"

        [planner]
        likelihood = "mppi"
        samples = 512
        horizon = 32
        iterations = 2
        temperature = 0.5
        initial_std = 0.3
        # a refinement whose mean costs more than the proposal it started from sends the proposal: at the
        # balance, where the cost is near zero, the update's noise would otherwise reach the motor
        never_worse = true

        [prior]
        file = "embedded:pendulum_policy"
        adaptive = true
        min_iterations = 0

        [server]
        endpoints = ["tcp://127.0.0.1:5555"]
        mode = "lockstep"
        """

    /// The configuration in `root`, the tables a file gave (its TOML is read in TOMLReader.swift).
    public static func read(_ root: ConfigTable, source: String, withPrior: Bool) throws(ConfigurationError) -> DaemonConfiguration {
        let taskTable = try root.table("task") ?? ConfigTable([:], path: "task")
        let name = try taskTable.choice("name", default: "pendulum", from: TaskRegistry.names)
        let base = source == embeddedSource || !source.contains("/") ? FileManager.default.currentDirectoryPath : (source as NSString).deletingLastPathComponent
        let task = try TaskRegistry.make(name: name, parameters: taskTable, baseDirectory: base)
        var safety = SafetyConfiguration()
        if let table = try root.table("safety") {
            safety.staleAfter = try table.number("stale_after_s", default: safety.staleAfter, .closed(0, 3600))
            safety.safeAction = ActionSafety.SafeAction(rawValue: try table.choice("safe_action", default: safety.safeAction.rawValue,
                                                                                   from: ActionSafety.SafeAction.allCases.map(\.rawValue)))!
            if let rates = try table.optionalNumbers("max_rate", count: task.dynamics.actionDimension, .positive) {
                // the planner takes the same limit in float32: refused here, by this key's name
                for (i, rate) in rates.enumerated() where !(Float(rate).isFinite && Float(rate) >= 1e-6) {
                    throw table.error("max_rate", "action \(i) (\(task.dynamics.actionNames[i])): \(rate) is not a rate in [1e-06, 3.4e38] per second")
                }
                safety.maxRate = rates.map { Float($0) }
            }
            try table.finish()
        }
        var planner = try PlannerConfiguration(table: try root.table("planner") ?? ConfigTable([:], path: "planner"))
        // the guard's slew limit is also the plan's, unless the planner has its own: plans that
        // respect it are sent as planned instead of being cut by the guard
        if planner.maxRate == nil { planner.maxRate = safety.maxRate }
        try planner.validate(for: task)
        let server = try readServer(try root.table("server") ?? ConfigTable([:], path: "server"), planner: planner)
        var prior: PriorConfiguration?
        if let table = try root.table("prior"), withPrior {
            prior = try readPrior(table, task: task, planner: planner, source: source, taskText: ConfigValue.table(taskTable.values).canonicalText)
        }
        var value: ValueConfiguration?
        if let table = try root.table("value"), withPrior {
            value = try readValue(table, task: task, source: source)
            if let learned = value?.network.discount, learned != planner.discount {
                throw ConfigurationError(key: "planner.discount", reason: "is \(planner.discount), but the [value] network was learned with discount \(learned): set discount = \(learned)")
            }
        }
        if withPrior && planner.iterations == 0 && prior == nil {
            throw ConfigurationError(key: "planner.iterations", reason: "0 iterations sends the prior's action alone and needs a [prior] file")
        }
        var controlEndpoint = ControlEndpoint.default()
        if let control = try root.table("control") {
            controlEndpoint = try control.string("endpoint", default: controlEndpoint)
            guard ControlEndpoint.isValid(controlEndpoint) else {
                throw control.error("endpoint", "expected an ipc:// (or, deliberately, tcp://) endpoint, got \"\(controlEndpoint)\"")
            }
            try control.finish()
        }
        var metricsListen: MetricsListenAddress?
        if let table = try root.table("metrics") {
            metricsListen = try MetricsListenAddress(parsing: try table.string("listen", default: "127.0.0.1:9464"))
            try table.finish()
        }
        var curve: CurveConfiguration?
        if let table = try root.table("security") { curve = try CurveConfiguration.read(table, source: source) }
        let recording = try root.table("recording").map { table throws(ConfigurationError) in try RecordingConfiguration.read(table, base: base) }
        try root.finish()
        var configuration = DaemonConfiguration(source: source, task: task, planner: planner, server: server, prior: prior, controlEndpoint: controlEndpoint)
        configuration.safety = safety
        configuration.curve = curve
        configuration.metricsListen = metricsListen
        configuration.recording = recording
        configuration.filesRead = try filesRead(source: source, task: name, taskTable: taskTable, base: base, prior: prior, value: value, curve: curve)
        configuration.value = value
        try configuration.checkMemory()
        // after the memory check: a configuration too big to allocate says so first
        try IterationTimeCheck.check(task: task, planner: planner, cores: configuration.cores)
        return configuration
    }

    static func filesRead(source: String, task: String, taskTable: ConfigTable, base: String, prior: PriorConfiguration?, value: ValueConfiguration?,
                          curve: CurveConfiguration?) throws(ConfigurationError) -> [FileRead] {
        func resolve(_ path: String) -> String { absolutePath(path.hasPrefix("/") ? path : (base as NSString).appendingPathComponent(path)) }
        var files: [FileRead] = []
        if source != embeddedSource { files.append(FileRead(key: "--config", path: absolutePath(source))) }
        if task == "mujoco" { files.append(FileRead(key: "task.model", path: resolve(try taskTable.string("model", default: "")))) }
        if task == "plugin" { files.append(FileRead(key: "task.library", path: resolve(try taskTable.string("library", default: "")))) }
        if let prior, !prior.file.hasPrefix("embedded:") { files.append(FileRead(key: "prior.file", path: absolutePath(prior.file))) }
        if let value, !value.file.hasPrefix("embedded:") { files.append(FileRead(key: "value.file", path: absolutePath(value.file))) }
        if let curve {
            files.append(FileRead(key: "security.curve_secret_key_file", path: absolutePath(curve.secretKeyFile), secret: true))
            files.append(FileRead(key: "security.authorized_keys_file", path: absolutePath(curve.authorizedKeysFile)))
        }
        return files
    }

    /// `path` from the working directory when it is relative.
    public static func absolutePath(_ path: String) -> String {
        path.hasPrefix("/") ? path : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(path)
    }

    /// Bytes one session takes besides its buffers (objects, history, bookkeeping, the allocator's
    /// share): an allowance that `test_memory_per_session_stays_within_the_estimate` checks.
    static let sessionOverheadBytes = 64.0 * 1024

    /// Bytes one session's planner, prior and value take at most (weights are shared).
    public var bytesPerSession: Double {
        let h = Double(planner.horizon), m = Double(task.dynamics.actionDimension)
        var bytes = MirrorDescentPlanner.memoryFootprint(task: task, configuration: planner) + Self.sessionOverheadBytes
        if let prior {
            let a = prior.network.mlp.architecture
            bytes += 4 * (2 * Double(a.inputs + a.hidden.reduce(0, +)) + 4 * Double(a.outputs) + 4 * h * m)
        }
        if let value {
            let a = value.network.mlp.architecture
            bytes += 4 * Double(a.inputs + 2 * a.hidden.reduce(0, +) + 2) * Double(planner.samples + 16)
        }
        return bytes
    }

    /// Refuses a configuration whose sessions could take more than `[server] memory_limit_mb`:
    /// `max_sessions` planners of K x H samples, and the online amortiser's buffer.
    func checkMemory() throws(ConfigurationError) {
        let limit = Double(server.memoryLimitMB) * 1_048_576
        func mib(_ bytes: Double) -> String { bytes >= 1_048_576 ? String(format: "%.0f MiB", bytes / 1_048_576) : String(format: "%.0f KiB", bytes / 1024) }
        let perSession = bytesPerSession
        guard perSession <= limit else {
            throw ConfigurationError(key: "planner.samples", reason: "K=\(planner.samples) x H=\(planner.horizon) needs \(mib(perSession)) per session, above server.memory_limit_mb = \(server.memoryLimitMB)")
        }
        var buffer = 0.0
        if let prior, prior.online {
            let a = prior.network.mlp.architecture
            buffer = 4 * Double(prior.onlineBuffer) * Double(a.inputs + 2 * a.outputs)
        }
        let total = perSession * Double(server.maxSessions) + buffer
        guard total <= limit else {
            throw ConfigurationError(key: "server.max_sessions", reason: "\(server.maxSessions) sessions x \(mib(perSession))\(buffer > 0 ? " + the online buffer's \(mib(buffer))" : "") = \(mib(total)), above server.memory_limit_mb = \(server.memoryLimitMB); lower max_sessions, samples or horizon, or raise memory_limit_mb")
        }
        let connections = server.worstCaseConnectionMemory
        guard total + connections <= limit else {
            throw ConfigurationError(key: "server.max_connections", reason: "\(server.maxConnections) connections may make libzmq hold \(mib(connections)) (with max_message_bytes = \(server.maxMessageBytes)), and the sessions \(mib(total)): above server.memory_limit_mb = \(server.memoryLimitMB); lower max_connections or max_message_bytes, or raise memory_limit_mb")
        }
    }

    /// The bytes of a network file named in a configuration: `embedded:NAME`, an absolute path, or
    /// a path relative to the configuration file. Returns the resolved name too.
    public static func networkData(_ file: String, source: String) throws(AmortisedNetwork.LoadError) -> (resolved: String, data: Data) {
        if file.hasPrefix("embedded:") {
            guard let data = EmbeddedNetworks.data(named: String(file.dropFirst(9))) else {
                throw AmortisedNetwork.LoadError(path: file, reason: "no embedded network of that name; embedded: \(EmbeddedNetworks.names.joined(separator: ", "))")
            }
            return (file, data)
        }
        let base = source == embeddedSource ? FileManager.default.currentDirectoryPath : (source as NSString).deletingLastPathComponent
        let resolved = file.hasPrefix("/") ? file : (base as NSString).appendingPathComponent(file)
        return (resolved, try NetworkFile.read(path: resolved))
    }

    public static func readValue(_ table: ConfigTable, task: ControlTask, source: String) throws(ConfigurationError) -> ValueConfiguration {
        let file = try table.string("file", default: "")
        guard !file.isEmpty else { throw table.error("file", "required: a value network's safetensors file (mpcd train --value writes one)") }
        var v: ValueConfiguration
        do throws(AmortisedNetwork.LoadError) {
            let (resolved, data) = try networkData(file, source: source)
            v = ValueConfiguration(file: resolved, network: try ValueNetwork.decode(data, for: task, path: resolved))
        } catch {
            throw table.error("file", error.reason)
        }
        v.weight = try table.float("weight", default: v.weight, .nonNegative)
        try table.finish()
        return v
    }

    /// `taskText`: the `[task]` table's canonical text, for the online weights' fingerprint.
    public static func readPrior(_ table: ConfigTable, task: ControlTask, planner: PlannerConfiguration, source: String,
                                 taskText: String = "") throws(ConfigurationError) -> PriorConfiguration {
        let file = try table.string("file", default: "")
        let online = try table.bool("online", default: false)
        let kind = AmortisedNetwork.Kind(rawValue: try table.choice("kind", default: "policy", from: AmortisedNetwork.Kind.allCases.map(\.rawValue)))!
        let hiddenText = try table.string("hidden", default: "64,64")
        let hidden = hiddenText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !hidden.isEmpty, hidden.allSatisfy({ $0 > 0 }), hidden.count == hiddenText.split(separator: ",").count else {
            throw table.error("hidden", "expected layer widths separated by commas, e.g. \"64,64\"")
        }
        let outputs = (kind == .plan ? planner.horizon : 1) * task.dynamics.actionDimension
        guard MLPArchitecture.checkedParameterCount(inputs: task.dynamics.featureNames.count, hidden: hidden, outputs: outputs) != nil else {
            throw table.error("hidden", "\"\(hiddenText)\" makes a network of more than \(MLPArchitecture.maxParameters) parameters")
        }
        let environment = ProcessInfo.processInfo.environment["STATE_DIRECTORY"]?.split(separator: ":").first.map(String.init) ?? ""
        let stateDirectory = try table.string("state_directory", default: environment)
        // a file there would fail every save of what the network learns, the last one at a stop
        var isFolder: ObjCBool = false
        if online, !stateDirectory.isEmpty, FileManager.default.fileExists(atPath: stateDirectory, isDirectory: &isFolder), !isFolder.boolValue {
            throw table.error("state_directory", "\"\(stateDirectory)\" is a file, not a folder: the online weights could not be saved there")
        }
        guard !file.isEmpty || online else { throw table.error("file", "required unless online = true: a safetensors file (mpcd train writes one)") }
        var network: AmortisedNetwork
        var resolved = "untrained"
        var start: String
        do throws(AmortisedNetwork.LoadError) {
            if !file.isEmpty {
                let (path, data) = try networkData(file, source: source)
                resolved = path
                network = try AmortisedNetwork.decode(data, for: task, path: path)
                start = "fnv1a:\(String(fnv1a(data), radix: 16))"
            } else {
                network = AmortisedNetwork(kind: kind, task: task, horizon: planner.horizon, hidden: hidden, seed: planner.seed)
                // not the seed (any untrained start is as good as another), and the horizon only
                // where it shapes the network (a plan's outputs)
                start = "untrained \(kind.rawValue) \(hidden)" + (kind == .plan ? " horizon \(planner.horizon)" : "")
            }
        } catch {
            throw table.error("file", error.reason)
        }
        let fingerprint = PriorConfiguration.onlineFingerprint(task: task, taskText: taskText, start: start)
        let stateFile = online ? PriorConfiguration.onlineStateFile(directory: stateDirectory, task: task, kind: network.kind, fingerprint: fingerprint) : nil
        // weights saved before the fingerprint was in the name: which configuration they serve
        // cannot be told, so they are not read; say so rather than lose them without a word
        let legacy = online && !stateDirectory.isEmpty
            ? (stateDirectory as NSString).appendingPathComponent("\(task.name)_\(network.kind.rawValue)_online.safetensors") : nil
        var stateProblem: String?
        if let saved = stateFile, FileManager.default.fileExists(atPath: saved) {
            // weights learnt online before a restart take over; saved weights that cannot serve
            // (damaged, or for another horizon) must not keep the daemon from starting: the
            // configured network serves, says so, and its online weights replace the file
            do {
                let loaded = try AmortisedNetwork.load(path: saved, for: task)
                _ = try NetworkPrior(network: loaded, task: task, horizon: planner.horizon)
                guard loaded.kind == network.kind else { throw AmortisedNetwork.LoadError(path: saved, reason: "a \(loaded.kind.rawValue), not a \(network.kind.rawValue)") }
                network = loaded
                resolved = saved
            } catch {
                let reason = (error as? AmortisedNetwork.LoadError)?.reason ?? (error as? ConfigurationError)?.reason ?? "\(error)"
                stateProblem = "the online weights saved in \(saved) were not taken (\(reason)); the configured network serves, and its online weights will replace that file"
            }
        }
        do {
            _ = try NetworkPrior(network: network, task: task, horizon: planner.horizon)
        } catch {
            throw table.error("file", error.reason)
        }
        var p = PriorConfiguration(file: resolved, network: network)
        p.online = online
        p.stateDirectory = stateDirectory
        p.stateFile = stateFile
        p.onlineFingerprint = fingerprint
        p.stateProblem = stateProblem
        if let legacy, let stateFile, !FileManager.default.fileExists(atPath: stateFile), FileManager.default.fileExists(atPath: legacy) {
            p.legacyStateFile = legacy
        }
        p.adaptive = try table.bool("adaptive", default: p.adaptive)
        p.minIterations = try table.integer("min_iterations", default: min(p.minIterations, planner.iterations), min: 0, max: planner.iterations)
        p.gapLow = try table.number("gap_low", default: p.gapLow, .nonNegative)
        p.gapHigh = try table.number("gap_high", default: max(p.gapHigh, p.gapLow), .atLeast(p.gapLow))
        p.gapScale = try table.optionalNumber("gap_scale", .positive)
        p.probeEvery = try table.integer("probe_every", default: p.probeEvery, min: 1)
        p.patience = try table.integer("patience", default: p.patience, min: 1)
        p.onlineLearningRate = try table.float("online_learning_rate", default: p.onlineLearningRate, .positive)
        p.onlineBatch = try table.integer("online_batch", default: p.onlineBatch, min: 1, max: 65_536)
        p.onlineBuffer = try table.integer("online_buffer", default: p.onlineBuffer, min: 1, max: 10_000_000)
        p.onlinePublishEvery = try table.integer("online_publish_every", default: p.onlinePublishEvery, min: 1)
        try table.finish()
        return p
    }

    public static func readServer(_ table: ConfigTable, planner: PlannerConfiguration) throws(ConfigurationError) -> ServerConfiguration {
        var s = ServerConfiguration()
        s.planSteps = min(s.planSteps, planner.horizon - 1)
        s.endpoints = try table.strings("endpoints", default: s.endpoints)
        if s.endpoints.isEmpty { throw table.error("endpoints", "at least one endpoint is required") }
        for e in s.endpoints where !ServerConfiguration.isEndpoint(e) {
            throw table.error("endpoints", "\"\(e)\" is not a tcp://, ipc:// or inproc:// endpoint (a tcp:// port is 0 to 65535 or *)")
        }
        s.mode = TimingMode(rawValue: try table.choice("mode", default: s.mode.rawValue, from: TimingMode.allCases.map(\.rawValue)))!
        s.rateHz = try table.optionalNumber("rate_hz", .closed(0.1, 10_000))
        s.budgetFraction = try table.number("budget_fraction", default: s.budgetFraction, .closed(0.05, 100))
        // above one period only when a simulator waits for each reply (lockstep); a robot's ticks cannot
        guard s.budgetFraction <= 1 || s.mode == .lockstep else {
            throw table.error("budget_fraction", "expected a number in [0.05, 1] in realtime mode (up to 100 in lockstep, where a simulator waits), got \(s.budgetFraction)")
        }
        s.planSteps = try table.integer("plan_steps", default: s.planSteps, min: 0, max: planner.horizon - 1)
        s.sessionTimeout = try table.number("session_timeout_s", default: s.sessionTimeout, .closed(0.01, 1_000_000))
        s.maxSessions = try table.integer("max_sessions", default: s.maxSessions, min: 1, max: 100_000)
        s.evictIdleAfter = try table.number("evict_idle_after_s", default: min(s.evictIdleAfter, s.sessionTimeout), .closed(0, s.sessionTimeout))
        s.maxMessageBytes = try table.integer("max_message_bytes", default: s.maxMessageBytes, min: 64, max: 64 << 20)
        s.maxConnections = try table.integer("max_connections", default: s.maxConnections, min: 1, max: 100_000)
        s.memoryLimitMB = try table.integer("memory_limit_mb", default: s.memoryLimitMB, min: 16, max: 1 << 24)
        s.trustClientTimestamps = try table.bool("trust_client_timestamps", default: s.trustClientTimestamps)
        s.workers = try table.integer("workers", default: s.workers, min: 1, max: 256)
        s.busyPollMicroseconds = try table.integer("busy_poll_us", default: s.busyPollMicroseconds, min: 0, max: 10_000_000)
        let cpus = try table.numbers("cpu_affinity", default: [], .closed(0, 1023))
        guard cpus.allSatisfy({ $0 == $0.rounded() }) else { throw table.error("cpu_affinity", "expected CPU numbers (integers)") }
        s.cpuAffinity = cpus.map { Int($0) }
        s.realtimePriority = try table.integer("realtime_priority", default: s.realtimePriority, min: 0, max: 99)
        try table.finish()
        return s
    }
}
