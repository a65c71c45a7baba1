// the ZeroMQ wrapper and the control protocol are modules of their own (mpcctl shares them without
// the planner); the daemon's users see them through Daemon
@_exported import ControlProtocol
@_exported import ZeroMQ
import CSystemShims
import Dispatch
import Foundation
import Logging
import Models
import Planners
import Synchronization

/// The daemon: one ROUTER socket, the sessions behind it, and the loop that answers them.
///
/// One thread owns the socket (ZeroMQ sockets are not thread-safe) and runs `run()`: it drains
/// incoming messages into each session's newest observation (older ones are simply replaced,
/// never queued), plans the sessions due (in parallel across sessions on Dispatch), and sends
/// the replies without blocking. In realtime mode planning happens on the tick grid; in lockstep
/// mode as soon as observations arrive.
public final class Server: @unchecked Sendable {
    public internal(set) var configuration: DaemonConfiguration
    /// The command line's overrides, applied again to every configuration a reload reads.
    public let overrides: ConfigurationOverrides
    public private(set) var boundEndpoints: [String] = []
    public internal(set) var counters = ServerCounters()
    let logger: Logger
    let context: ZMQContext
    let socket: ZMQSocket
    var periodNanoseconds: UInt64 = 0
    var budgetNanoseconds: UInt64 = 0
    var busyPollNanoseconds: UInt64 = 0
    var sessions: [[UInt8]: Session] = [:]
    var nextSessionIndex: UInt64 = 0
    /// The last action sent to sessions that have ended, by identity: the slew reference of a
    /// session the same client opens again.
    var recentActions: [[UInt8]: (action: [Float], at: UInt64)] = [:]
    /// When the departed sessions' graces were last looked at (`endSessionsOfDepartedConnections`).
    var lastDepartureSweep: UInt64 = 0
    /// The TCP connections of the data socket, watched (docs/reliability.md, "Connections").
    var connectionGuard: ConnectionGuard?
    /// The control socket's guard (`maxControlConnections`).
    var controlGuard: ConnectionGuard?
    /// The ipc endpoints' socket files, claimed while the daemon runs.
    var dataSocketFiles: [IPCSocketFile] = []
    /// The most a message may hold, all frames after the routing id together.
    var messageLimit = ZMQSocket.MessageLimit(bytes: 65_536, frames: 4)
    /// The most values an observation of the task may have (larger ones are refused undecoded).
    var maxObservationValues = Int.max
    let stopRequested = Atomic<Bool>(false)
    public let reloadRequested = Atomic<Bool>(false)
    var lastOverrunLog: UInt64 = 0
    var helloReply: [UInt8] = []
    /// The hello reply's `task_fingerprint`: a message that carries another is refused (`task_changed`).
    var taskFingerprint: UInt32 = 0
    var failedPlanReport = FailedPlanReport()
    /// Online amortisation, when configured, and the network version the sessions run.
    var amortiser: OnlineAmortiser?
    var networkVersion: Int = -1
    /// The guard every action passes (bounds, slew limit, finite values).
    var actionSafety = ActionSafety(lower: [], upper: [], maxStep: nil)
    var staleAfterNanoseconds: UInt64 = 0
    /// The rollout workers every session's planner shares (`[planner] threads` in all, counting the
    /// planning thread): one set per daemon, however many sessions.
    var workers: SpinningPool?
    /// Plan counters of fault-injecting models (testing only, MPCD_INJECT_NAN_EVERY).
    var faultCounters: [FaultInjectingDynamics.PlanCounter] = []
    /// Client authentication for CURVE, when configured.
    var zap: ZAPHandler?
    // The control plane (docs/operations.md): a local socket for mpcctl, and systemd's notify socket.
    var control: ZMQSocket?
    public internal(set) var controlEndpoint = ""
    var controlSocketFile: IPCSocketFile?
    /// Prometheus's HTTP endpoint, when `[metrics]` asks for one.
    public internal(set) var metricsServer: MetricsHTTPServer?
    /// A reload or policy load being prepared off the serving thread, and who asked for it.
    var pendingReconfiguration: PendingReconfiguration?
    let notifier = SystemdNotifier()
    var lastWatchdog: UInt64 = 0
    var lastStatusNotice: UInt64 = 0
    var lastTickOnTime = true
    // Statistics for mpcctl status and metrics.
    let startedAt = monotonicNanoseconds()
    /// The same moment on the wall clock, s since the Unix epoch (process_start_time_seconds).
    let processStartTime = Date().timeIntervalSince1970
    var latency = LatencyStatistics()
    /// Every session's plans together, ended sessions included: plans and iterations sent, and
    /// their latency in the exported buckets (the daemon-wide Prometheus figures).
    var allPlans = SessionMetrics()
    /// Tick recording (Recording.swift): the running recorder, why it could not start, and the
    /// counts of every recorder since start.
    var recorder: TickRecorder?
    var recordingProblem: String?
    let recordingCounters = RecordingCounters()
    /// Recorders switched off whose files may still be closing, and whether the operator switched
    /// recording off (a reload or policy load then leaves it off, whatever `enabled` says).
    var retiredRecorders: [TickRecorder] = []
    var recordingSwitchedOff = false

    /// Receive queue per connection, messages: a session needs only its newest observation, and
    /// the connection guard counts what libzmq may hold per connection from it.
    static let receiveHighWaterMark: Int32 = 16
    /// Most open files asked for at start (the soft limit is raised to the hard one, up to this).
    static let openFilesCeiling: UInt64 = 1 << 20
    /// Descriptors kept for everything but data connections (files, the control socket, threads).
    static let reservedDescriptors = 64

    public init(configuration: DaemonConfiguration, overrides: ConfigurationOverrides = ConfigurationOverrides(), logger: Logger) throws {
        self.configuration = overrides.applied(to: configuration)
        self.overrides = overrides
        self.logger = logger
        let configuration = self.configuration
        var openFiles: UInt64 = 1024
        _ = mpcd_raise_open_files_limit(Self.openFilesCeiling, &openFiles)
        if !configuration.server.cpuAffinity.isEmpty {
            try Self.pin(to: configuration.server.cpuAffinity)
        }
        if configuration.server.realtimePriority > 0 {
            let error = mpcd_set_realtime_priority(Int32(configuration.server.realtimePriority))
            if error != 0 {
                logger.warning("the kernel refused real-time priority; carrying on with the normal scheduler", metadata: [
                    "priority": "\(configuration.server.realtimePriority)", "reason": "\(String(cString: strerror(error)))",
                ])
            }
        }
        context = try ZMQContext()
        socket = try ZMQSocket(context, type: ZMQSocketType.router)
        try socket.setOption(ZMQOption.maxMessageSize, Int64(configuration.server.maxMessageBytes))
        try socket.setOption(ZMQOption.sendHighWaterMark, Int32(16))
        try socket.setOption(ZMQOption.receiveHighWaterMark, Self.receiveHighWaterMark)
        // a reply to a peer that has gone fails (and is counted) instead of vanishing
        try socket.setOption(ZMQOption.routerMandatory, Int32(1))
        try socket.setOption(ZMQOption.handshakeInterval, ConnectionGuard.handshakeMilliseconds)
        // half the descriptors left after the reserve: room for a burst libzmq accepts before the
        // guard has ended the surplus (libzmq aborts when it cannot accept on the control socket)
        let connectionLimit = max(1, min(configuration.server.maxConnections, (Int(min(openFiles, 1 << 30)) - Self.reservedDescriptors - 2 * Self.maxControlConnections) / 2))
        if connectionLimit < configuration.server.maxConnections {
            logger.warning("the open-files limit allows fewer connections than max_connections", metadata: [
                "open_files_limit": "\(openFiles)", "max_connections": "\(configuration.server.maxConnections)", "in_force": "\(connectionLimit)",
            ])
        }
        connectionGuard = try ConnectionGuard(context: context, socket: socket, name: "data",
                                              limits: .init(maxConnections: connectionLimit, maxMessageBytes: configuration.server.maxMessageBytes), logger: logger)
        apply(configuration)
        try bindControl()
        if let address = configuration.metricsListen {
            metricsServer = try MetricsHTTPServer(address)
            if !address.isLoopback {
                logger.warning("the metrics endpoint is on a non-loopback address: anyone who reaches it reads the daemon's figures and session names",
                               metadata: ["listen": "\(address)"])
            }
        }
        if let curve = configuration.curve {
            // the ZAP handler must be bound before the CURVE socket, or libzmq accepts every key
            zap = try ZAPHandler(context: context, authorizedKeys: curve.authorizedKeys)
            try socket.setOption(ZMQOption.curveServer, Int32(1))
            try socket.setOption(ZMQOption.curveSecretKey, bytes: Array(curve.secretKey.utf8))
        }
        for endpoint in configuration.server.endpoints {
            do {
                if endpoint.hasPrefix("ipc://") {
                    // claimed first: libzmq would silently take the path over from a daemon still serving on it
                    let file = try IPCSocketFile(path: String(endpoint.dropFirst(6)), createFolder: false)
                    try file.bind(socket)
                    dataSocketFiles.append(file)
                } else {
                    try socket.bind(endpoint)
                }
            } catch let error as ZMQError {
                throw ServerError.bind(endpoint: endpoint, reason: error.reason)
            }
            let resolved = socket.lastEndpoint
            boundEndpoints.append(resolved.isEmpty ? endpoint : resolved)
            if !Self.isLoopback(endpoint) {
                logger.warning("bound to a non-loopback address: anyone who can reach it can drive the robot", metadata: ["endpoint": "\(endpoint)"])
            }
        }
        if configuration.recording?.enabled == true { startRecording() }
    }

    /// Takes `configuration`'s timings, hello reply and online amortisation (at start and on reload).
    func apply(_ configuration: DaemonConfiguration, restartingAmortiser: Bool = false) {
        let previous = self.configuration
        var configuration = configuration
        // online amortisation: a reload that leaves it as it was (task, network shape, settings,
        // state file) keeps it running with what it has learnt since the state file was written;
        // what it learnt carries over only to the same fingerprint (the task as configured and the
        // configured network): weights learnt for another target must not serve this one
        let settings = configuration.prior.flatMap { $0.online ? OnlineAmortiser.Settings($0) : nil }
        let sameNetwork = !restartingAmortiser && settings != nil && amortiser.map { running in
            configuration.task.name == running.task.name && configuration.prior?.network.mlp.architecture == running.architecture
                && configuration.prior?.onlineFingerprint == running.fingerprint
        } == true
        // what it has learnt carries on, newer than the state file the reload read
        if sameNetwork, let latest = amortiser?.latest(newerThan: -1) { configuration.prior?.network = latest }
        let keepAmortiser = sameNetwork && settings == amortiser?.settings && configuration.prior?.stateFile == amortiser?.stateFile
        self.configuration = configuration
        // the rate is checked at load (0.1 to 10000 Hz); a period never below a microsecond regardless
        periodNanoseconds = max(1000, nanoseconds(seconds: 1 / configuration.rateHz))
        // a realtime tick never plans past its period, whatever an override made of the mode
        let fraction = configuration.server.mode == .realtime ? min(1, configuration.server.budgetFraction) : configuration.server.budgetFraction
        budgetNanoseconds = UInt64(Double(periodNanoseconds) * fraction)
        busyPollNanoseconds = UInt64(configuration.server.busyPollMicroseconds) * 1000
        messageLimit = .init(bytes: configuration.server.maxMessageBytes, frames: WireProtocol.maxFrames)
        maxObservationValues = configuration.task.dynamics.observationForms.map(\.components.count).max() ?? Int.max
        if SpinningPool.usableThreads(configuration.planner.threads) != (workers?.threads ?? 1) {
            workers = configuration.planner.threads > 1 ? SpinningPool(threads: configuration.planner.threads) : nil
        }
        if !Self.sameShape(previous.task, configuration.task) {
            // states and actions of another shape: every session's observation, plan and slew
            // reference belong to the old task; the clients open new sessions with their next observation
            endSessions(where: { _ in true }, reason: "the task changed to \(configuration.task.name)")
            recentActions.removeAll()
        }
        let hello = HelloReply(configuration)
        helloReply = hello.bytes
        taskFingerprint = hello.taskFingerprint
        networkVersion = configuration.prior?.network.version ?? -1
        // between two replies: a tick period in realtime, one model step in lockstep
        let replyPeriod = configuration.server.mode == .realtime ? 1 / configuration.rateHz : Double(configuration.task.dynamics.dt)
        actionSafety = (try? configuration.actionSafety(period: replyPeriod)) ?? actionSafety
        staleAfterNanoseconds = nanoseconds(seconds: configuration.staleAfter)
        for note in configuration.notes { logger.warning("\(note)") }
        for session in sessions.values { session.safety = actionSafety }
        guard !keepAmortiser else { return }
        if let old = amortiser {
            // its last training step and its final save take a while: never on the serving thread
            Self.reconfigurationQueue.async { old.stop() }
        }
        amortiser = nil
        if let prior = configuration.prior, let settings {
            if !prior.stateDirectory.isEmpty {
                try? FileManager.default.createDirectory(atPath: prior.stateDirectory, withIntermediateDirectories: true)
            }
            amortiser = OnlineAmortiser(network: prior.network, task: configuration.task, settings: settings, stateFile: prior.stateFile, fingerprint: prior.onlineFingerprint, logger: logger)
        }
    }

    public var sessionCount: Int { sessions.count }

    /// Restricts the calling thread, and every thread it starts afterwards (libzmq's I/O thread,
    /// Dispatch's workers), to `cpus`.
    static func pin(to cpus: [Int]) throws {
        let values = cpus.map { Int32($0) }
        let error = mpcd_set_cpu_affinity(values, Int32(values.count))
        guard error == 0 else { throw ServerError.affinity(cpus: cpus, reason: String(cString: strerror(error))) }
    }

    static func isLoopback(_ endpoint: String) -> Bool {
        guard endpoint.hasPrefix("tcp://") else { return true }  // ipc and inproc never leave the host
        let host = endpoint.dropFirst(6).split(separator: ":").dropLast().joined(separator: ":")
        return host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host == "lo" || host.hasPrefix("127.")
    }
}

public enum ServerError: Error, CustomStringConvertible {
    case bind(endpoint: String, reason: String)
    case affinity(cpus: [Int], reason: String)
    case alreadyRunning(endpoint: String, pid: Int?)
    case unsafeFolder(path: String, reason: String)

    public var description: String {
        switch self {
        case let .bind(endpoint, reason): "cannot bind \(endpoint): \(reason)"
        case let .affinity(cpus, reason): "cannot run on CPUs \(cpus): \(reason)"
        case let .alreadyRunning(endpoint, pid):
            "another mpcd is running (\(pid.map { "pid \($0), " } ?? "")it holds \(endpoint)); stop it first, or give this one endpoints of its own: --endpoint for the data socket, --control for the control socket"
        case let .unsafeFolder(path, reason):
            "\(path) \(reason); give the socket a folder of this user's ([control] endpoint, XDG_RUNTIME_DIR)"
        }
    }
}
