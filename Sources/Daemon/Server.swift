import CSystemShims
import CZeroMQ
import Dispatch
import Foundation
import Logging
import Models
import Planners
import Synchronization

/// Counters since start (the `mpcctl status` figures build on these).
public struct ServerCounters: Sendable {
    /// Ticks run (realtime), and grid slots passed, run or skipped: a reply's tick number.
    public var ticks: UInt64 = 0
    public var gridTick: UInt64 = 0
    public var overruns: UInt64 = 0
    public var replies: UInt64 = 0
    public var dropped: UInt64 = 0
    public var refused: [WireProtocol.ErrorCode: UInt64] = [:]
    public var sessionsOpened: UInt64 = 0
    public var sessionsExpired: UInt64 = 0
    /// Sessions that gave their place to a newcomer (max_sessions reached), whose peer was gone,
    /// or that a reload ended (another task, a revoked key).
    public var sessionsEvicted: UInt64 = 0
    public var sessionsPeerGone: UInt64 = 0
    public var sessionsEndedByReload: UInt64 = 0
    /// Messages over max_message_bytes (all frames together), read and discarded.
    public var oversizedMessages: UInt64 = 0
    /// Fallbacks and stale replies of sessions that have ended (live sessions count their own).
    public var fallbacks: UInt64 = 0
    public var staleReplies: UInt64 = 0
}

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
    /// The TCP connections of the data socket, watched (docs/reliability.md, "Connections").
    var connectionGuard: ConnectionGuard?
    /// The ipc endpoints' socket files, claimed while the daemon runs.
    var dataSocketFiles: [IPCSocketFile] = []
    /// The most a message may hold, all frames after the routing id together.
    var messageLimit = ZMQSocket.MessageLimit(bytes: 65_536, frames: 4)
    /// The most values an observation of the task may have (larger ones are refused undecoded).
    var maxObservationValues = Int.max
    private let stopRequested = Atomic<Bool>(false)
    public let reloadRequested = Atomic<Bool>(false)
    private var lastOverrunLog: UInt64 = 0
    var helloReply: [UInt8] = []
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
    /// A reload or policy load being prepared off the serving thread, and who asked for it.
    var pendingReconfiguration: PendingReconfiguration?
    let notifier = SystemdNotifier()
    var lastWatchdog: UInt64 = 0
    var lastStatusNotice: UInt64 = 0
    var lastTickOnTime = true
    // Statistics for mpcctl status and metrics.
    let startedAt = monotonicNanoseconds()
    var latency = LatencyStatistics()
    var iterationCount: UInt64 = 0
    var planCount: UInt64 = 0

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
        socket = try ZMQSocket(context, type: ZMQ_ROUTER)
        try socket.setOption(ZMQ_MAXMSGSIZE, Int64(configuration.server.maxMessageBytes))
        try socket.setOption(ZMQ_SNDHWM, Int32(16))
        try socket.setOption(ZMQ_RCVHWM, Self.receiveHighWaterMark)
        // a reply to a peer that has gone fails (and is counted) instead of vanishing
        try socket.setOption(ZMQ_ROUTER_MANDATORY, Int32(1))
        try socket.setOption(ZMQ_HANDSHAKE_IVL, ConnectionGuard.handshakeMilliseconds)
        // half the descriptors left after the reserve: room for a burst libzmq accepts before the
        // guard has ended the surplus (libzmq aborts when it cannot accept on the control socket)
        let connectionLimit = max(1, min(configuration.server.maxConnections, (Int(min(openFiles, 1 << 30)) - Self.reservedDescriptors) / 2))
        if connectionLimit < configuration.server.maxConnections {
            logger.warning("the open-files limit allows fewer connections than max_connections", metadata: [
                "open_files_limit": "\(openFiles)", "max_connections": "\(configuration.server.maxConnections)", "in_force": "\(connectionLimit)",
            ])
        }
        connectionGuard = try ConnectionGuard(context: context, socket: socket, name: "data",
                                              limits: .init(maxConnections: connectionLimit, maxMessageBytes: configuration.server.maxMessageBytes), logger: logger)
        apply(configuration)
        try bindControl()
        if let curve = configuration.curve {
            // the ZAP handler must be bound before the CURVE socket, or libzmq accepts every key
            zap = try ZAPHandler(context: context, authorizedKeys: curve.authorizedKeys)
            try socket.setOption(ZMQ_CURVE_SERVER, Int32(1))
            try socket.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(curve.secretKey.utf8))
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
                throw ServerError.bind(endpoint: endpoint, reason: String(cString: zmq_strerror(error.code)))
            }
            let resolved = socket.lastEndpoint
            boundEndpoints.append(resolved.isEmpty ? endpoint : resolved)
            if !Self.isLoopback(endpoint) {
                logger.warning("bound to a non-loopback address: anyone who can reach it can drive the robot", metadata: ["endpoint": "\(endpoint)"])
            }
        }
    }

    /// Takes `configuration`'s timings, hello reply and online amortisation (at start and on reload).
    func apply(_ configuration: DaemonConfiguration, restartingAmortiser: Bool = false) {
        let previous = self.configuration
        var configuration = configuration
        // online amortisation: a reload that leaves it as it was (task, network shape, settings,
        // state file) keeps it running with what it has learnt since the state file was written
        let settings = configuration.prior.flatMap { $0.online ? OnlineAmortiser.Settings($0) : nil }
        let sameNetwork = !restartingAmortiser && settings != nil && amortiser.map { running in
            configuration.task.name == running.task.name && configuration.prior?.network.mlp.architecture == running.architecture
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
        if configuration.planner.threads != (workers?.threads ?? 1) {
            workers = configuration.planner.threads > 1 ? SpinningPool(threads: configuration.planner.threads) : nil
        }
        if !Self.sameShape(previous.task, configuration.task) {
            // states and actions of another shape: every session's observation, plan and slew
            // reference belong to the old task; the clients open new sessions with their next observation
            endSessions(where: { _ in true }, reason: "the task changed to \(configuration.task.name)")
            recentActions.removeAll()
        }
        helloReply = Self.describe(configuration)
        networkVersion = configuration.prior?.network.version ?? -1
        // between two replies: a tick period in realtime, one model step in lockstep
        let replyPeriod = configuration.server.mode == .realtime ? 1 / configuration.rateHz : Double(configuration.task.dynamics.dt)
        actionSafety = (try? configuration.actionSafety(period: replyPeriod)) ?? actionSafety
        staleAfterNanoseconds = nanoseconds(seconds: configuration.safety.staleAfter)
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
            amortiser = OnlineAmortiser(network: prior.network, task: configuration.task, settings: settings, stateFile: prior.stateFile, logger: logger)
        }
    }

    /// Asks `run()` to return; safe from any thread or a signal source.
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    public var sessionCount: Int { sessions.count }

    /// Serves until `requestStop()`.
    public func run() {
        logger.info("serving", metadata: [
            "task": "\(configuration.task.name)", "likelihood": "\(configuration.planner.likelihood)",
            "mode": "\(configuration.server.mode.rawValue)", "rate_hz": "\(configuration.rateHz)",
            "endpoints": "\(boundEndpoints.joined(separator: ", "))", "config": "\(configuration.source)",
        ])
        amortiser?.start()
        notifier.send("READY=1\nSTATUS=\(statusLine())\nMAINPID=\(getpid())")
        var nextTick = monotonicNanoseconds() + periodNanoseconds
        var lastSweep: UInt64 = 0
        while !stopRequested.load(ordering: .relaxed) && mpcd_stop_requested() == 0 {
            let now = monotonicNanoseconds()
            switch configuration.server.mode {
            case .lockstep:
                waitForMessages(until: now + 100_000_000, tick: false)
                drainMessages(until: monotonicNanoseconds() + Self.drainBudgetNanoseconds)
                let due = sessions.values.filter { $0.unanswered }
                if !due.isEmpty {
                    let start = monotonicNanoseconds()
                    planAndSend(due, now: start, deadline: start + budgetNanoseconds, tick: nil, lateness: 0)
                }
            case .realtime:
                // between ticks, work stops a little before the next one: it must start on time
                let margin = min(periodNanoseconds / 10, Self.drainBudgetNanoseconds)
                if now < nextTick {
                    waitForMessages(until: nextTick, tick: true)
                    drainMessages(until: nextTick - margin)
                    serviceControlPlane(now: monotonicNanoseconds(), until: nextTick - margin)
                    continue
                }
                let start = monotonicNanoseconds()
                drainMessages(until: start + margin)
                counters.ticks += 1
                counters.gridTick += 1
                let live = sessions.values.filter { $0.observation != nil }
                // sessions whose observations stopped get the safe action, not a plan
                let isStale = { (s: Session) -> Bool in
                    self.staleAfterNanoseconds > 0 && start > s.observation!.receivedAt && start - s.observation!.receivedAt > self.staleAfterNanoseconds
                }
                let stale = live.filter(isStale)
                if !stale.isEmpty { sendStale(stale, now: start, tick: counters.gridTick, lateness: Double(start - nextTick) * 1e-9) }
                planAndSend(live.filter { !isStale($0) }, now: start, deadline: nextTick + budgetNanoseconds, tick: counters.gridTick,
                            lateness: Double(start - nextTick) * 1e-9)
                // Back onto the period grid: ticks that could not start in time are skipped, never
                // run late in a burst.
                nextTick += periodNanoseconds
                let after = monotonicNanoseconds()
                lastTickOnTime = after < nextTick
                if after >= nextTick {
                    let skipped = (after - nextTick) / periodNanoseconds + 1
                    counters.overruns += skipped
                    counters.gridTick += skipped
                    nextTick += skipped * periodNanoseconds
                    if after - lastOverrunLog >= 1_000_000_000 {
                        lastOverrunLog = after
                        logger.warning("tick overran its period", metadata: ["skipped_ticks": "\(skipped)", "overruns_total": "\(counters.overruns)"])
                    }
                }
            }
            if now - lastSweep > 100_000_000 {
                lastSweep = now
                expireIdleSessions(now: now)
            }
            let after = monotonicNanoseconds()
            let margin = min(periodNanoseconds / 10, Self.drainBudgetNanoseconds)
            serviceControlPlane(now: after, until: configuration.server.mode == .realtime ? nextTick - margin : after + Self.drainBudgetNanoseconds)
        }
        notifier.send("STOPPING=1")
        amortiser?.stop()
        closeControl()
        for file in dataSocketFiles { file.release() }
        logger.info("stopped", metadata: ["replies": "\(counters.replies)", "sessions": "\(sessions.count)"])
    }

    /// How long before a tick the loop stops sleeping and spins: waking a sleeping thread takes
    /// tens to hundreds of microseconds on a virtual machine, spinning does not.
    static let tickSpinNanoseconds: UInt64 = 200_000

    /// Waits until a message is readable or `deadline` (monotonic ns) passes, whichever is first.
    /// With `busy_poll_us` it first checks the socket in a loop for that long instead of sleeping.
    /// zmq_poll counts whole milliseconds, so the last stretch before a tick is slept with
    /// clock_nanosleep and its final `tickSpinNanoseconds` spun, to start the tick on time.
    private func waitForMessages(until deadline: UInt64, tick: Bool) {
        let sockets = [socket] + (control.map { [$0] } ?? []) + (zap.map { [$0.socket] } ?? []) + (connectionGuard.map { [$0.monitor] } ?? [])
        if busyPollNanoseconds > 0 {
            let stop = min(deadline, monotonicNanoseconds() + busyPollNanoseconds)
            while monotonicNanoseconds() < stop {
                if (try? ZMQSocket.waitReadable(sockets, milliseconds: 0))?.contains(true) == true { return }
            }
        }
        let now = monotonicNanoseconds()
        guard deadline > now else { return }
        let remaining = deadline - now
        if remaining > 1_500_000 {
            // at most 100 ms, so a stop request or a watchdog notice is never late; with connections
            // to watch, at most the guard's sweep interval; with a reload running, 5 ms
            let cap: UInt64 = pendingReconfiguration != nil ? 5_000_000 : (connectionGuard?.count ?? 0) > 0 ? ConnectionGuard.sweepNanoseconds : 100_000_000
            let ms = Int(max(1_000_000, min(remaining - 1_000_000, cap)) / 1_000_000)
            _ = try? ZMQSocket.waitReadable(sockets, milliseconds: ms)
        } else if tick {
            if remaining > Self.tickSpinNanoseconds {
                let wake = deadline - Self.tickSpinNanoseconds
                var ts = timespec(tv_sec: Int(wake / 1_000_000_000), tv_nsec: Int(wake % 1_000_000_000))
                while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
            }
            while monotonicNanoseconds() < deadline {}
        } else {
            _ = try? ZMQSocket.waitReadable(sockets, milliseconds: 1)
        }
    }

    /// Most messages read per wake-up, and the longest a wake-up reads: a peer flooding the socket
    /// cannot keep the loop from its tick (each session keeps only its newest observation anyway,
    /// and the rest wait in libzmq's bounded queue, which then stops reading the flooder's socket).
    static let drainLimit = 512
    static let drainBudgetNanoseconds: UInt64 = 1_000_000

    private func drainMessages(until deadline: UInt64) {
        zap?.serve()
        if let connectionGuard {
            let now = monotonicNanoseconds()
            connectionGuard.serviceEvents(now: now)
            connectionGuard.sweep(now: now)
        }
        for _ in 0..<Self.drainLimit {
            guard monotonicNanoseconds() < deadline else { return }
            let incoming: ZMQSocket.Incoming?
            do {
                incoming = try socket.receive(limit: messageLimit)
            } catch {
                logger.error("receive failed", metadata: ["error": "\(error)"])
                return
            }
            switch incoming {
            case nil:
                return
            case let .oversized(identity, source, bytes, frames)?:
                // read whole and freed; its sender is disconnected, as libzmq does for one frame too big
                counters.oversizedMessages += 1
                counters.refused[.malformed, default: 0] += 1
                sessions[identity]?.refused += 1
                connectionGuard?.cut(descriptor: source, reason: .messageTooLarge,
                                     detail: "a message of \(frames) frames, \(bytes) bytes; max_message_bytes is \(messageLimit.bytes)")
            case let .message(frames, source, userID)?:
                connectionGuard?.delivered(from: source, userID: userID, now: monotonicNanoseconds())
                if let zap {
                    // a key taken off the allow-list since this connection's handshake: cut it
                    guard let userID, zap.authorizedKeys.contains(userID) else {
                        connectionGuard?.cut(descriptor: source, reason: .keyRevoked, detail: "its key is not in authorized_keys")
                        endSessions(where: { $0.identity == frames.first }, reason: "its key is not in authorized_keys")
                        continue
                    }
                }
                handle(frames, userID: userID)
            }
        }
    }

    private func handle(_ frames: [[UInt8]], userID: String?) {
        guard frames.count >= 2 else { return }
        let identity = frames[0]
        // REQ clients put an empty delimiter frame before the payload; DEALER clients do not.
        let isRequest = frames[1].isEmpty
        let envelope = isRequest ? [identity, []] : [identity]
        let payload = Array(frames[(isRequest ? 2 : 1)...])
        let now = monotonicNanoseconds()
        do throws(WireProtocol.Refusal) {
            switch try WireProtocol.decode(payload, maxValues: maxObservationValues) {
            case .hello:
                send(envelope + [WireProtocol.Header(type: .helloReply).bytes, helloReply])
                sessions[identity]?.lastSeen = now
            case .bye:
                if sessions[identity] != nil {
                    endSessions(where: { $0.identity == identity }, reason: nil)
                    logger.info("session closed by client", metadata: ["peer": "\(Session.name(identity))"])
                }
            case let .observation(sequence, timestamp, values):
                let state: [Float]
                do {
                    state = try configuration.task.dynamics.state(fromObservation: values)
                } catch .nonFinite(let index) {
                    throw WireProtocol.Refusal(.nonFinite, "observation value \(index) is not finite (or beyond float32's range)", sequence: sequence)
                } catch {
                    throw WireProtocol.Refusal(.wrongDimension, error.description, sequence: sequence)
                }
                let measuredAt = try measurementTime(timestamp, now: now, sequence: sequence)
                if let owner = sessions[identity]?.userID, owner != userID {
                    // with CURVE a session belongs to its client's key: another key cannot take over its routing id
                    throw WireProtocol.Refusal(.malformed, "this routing id belongs to a session of another client key", sequence: sequence)
                }
                let session = try session(for: identity, envelope: envelope, now: now, sequence: sequence)
                session.envelope = envelope
                session.lastSeen = now
                session.userID = userID
                session.observation = ReceivedObservation(state: state, sequence: sequence, measuredAt: measuredAt, receivedAt: now)
                session.unanswered = true
            }
        } catch {
            counters.refused[error.code, default: 0] += 1
            if let session = sessions[identity] {
                session.refused += 1
                session.lastSeen = now
            }
            send(envelope + WireProtocol.errorMessage(error))
        }
    }

    /// When an observation was measured: its arrival, or with `trust_client_timestamps` its
    /// timestamp (seconds on this host's CLOCK_MONOTONIC; 0: none), which must be a finite time
    /// not ahead of this host's clock and not older than `stale_after_s`.
    private func measurementTime(_ timestamp: Double, now: UInt64, sequence: UInt64) throws(WireProtocol.Refusal) -> UInt64 {
        guard configuration.server.trustClientTimestamps, timestamp != 0 else { return now }
        guard timestamp.isFinite, timestamp > 0 else {
            throw WireProtocol.Refusal(.nonFinite, "timestamp \(timestamp) is not a time: seconds on this host's CLOCK_MONOTONIC, or 0 for none", sequence: sequence)
        }
        let stamped = nanoseconds(seconds: timestamp)
        guard stamped <= now + Self.timestampTolerance else {
            throw WireProtocol.Refusal(.malformed, "timestamp \(timestamp) s is ahead of this host's CLOCK_MONOTONIC (\(Double(now) * 1e-9) s): trust_client_timestamps needs this host's monotonic clock, e.g. Python's time.monotonic()", sequence: sequence)
        }
        let measuredAt = min(stamped, now)
        if staleAfterNanoseconds > 0, now - measuredAt > staleAfterNanoseconds {
            throw WireProtocol.Refusal(.stale, "observation is \(Double(now - measuredAt) * 1e-9) s old; stale_after_s is \(configuration.safety.staleAfter)", sequence: sequence)
        }
        return measuredAt
    }

    /// How far ahead of this host's clock a trusted timestamp may be (rounding, not skew: the
    /// client reads the same clock).
    static let timestampTolerance: UInt64 = 1_000_000_000

    private func sendStale(_ stale: [Session], now: UInt64, tick: UInt64, lateness: Double) {
        let context = TickContext(periodNanoseconds: periodNanoseconds, advanceStale: false,
                                  planSteps: configuration.server.planSteps, latenessSeconds: lateness, overruns: counters.overruns)
        for session in stale {
            session.staleReply(now: now, tick: tick, safeAction: configuration.safety.safeAction, context: context)
            if let reply = session.reply {
                session.reply = nil
                send(reply)
            }
        }
    }

    private func planAndSend(_ due: [Session], now: UInt64, deadline: UInt64, tick: UInt64?, lateness: Double) {
        let context = TickContext(periodNanoseconds: periodNanoseconds, advanceStale: configuration.server.mode == .realtime,
                                  planSteps: configuration.server.planSteps, latenessSeconds: lateness, overruns: counters.overruns)
        for counter in faultCounters { counter.count += 1 }
        if due.count == 1 || configuration.server.workers == 1 {
            for session in due { session.plan(now: now, deadline: deadline, tick: tick ?? session.ticksServed + 1, context: context) }
        } else {
            DispatchQueue.concurrentPerform(iterations: due.count) { i in
                let session = due[i]
                session.plan(now: now, deadline: deadline, tick: tick ?? session.ticksServed + 1, context: context)
            }
        }
        for session in due {
            guard let reply = session.reply else { continue }
            session.reply = nil
            send(reply)
            // tick latency: from the tick's grid time (realtime) or the observation's arrival (lockstep)
            let sent = monotonicNanoseconds()
            let origin = tick != nil ? now - UInt64(max(0, lateness) * 1e9) : (session.observation?.receivedAt ?? now)
            latency.record(nanoseconds: sent > origin ? sent - origin : 0, now: sent)
            planCount += 1
            iterationCount += UInt64(session.lastIterations)
        }
        // Off the critical path, now that the replies are out: record the refined plans for online
        // amortisation, swap in newer network weights, generate the noise for the next plans.
        if let amortiser {
            for session in due { if let (state, plan) = session.lastPlan { amortiser.record(state: state, plan: plan) } }
            if let network = amortiser.latest(newerThan: networkVersion) {
                networkVersion = network.version
                for session in sessions.values { session.prior?.replace(network) }
            }
        }
        for session in due { session.planner.prepareNoise() }
    }

    func send(_ frames: [[UInt8]]) {
        do {
            switch try socket.trySend(frames) {
            case .sent:
                counters.replies += 1
            case .queueFull:
                counters.dropped += 1
            case .peerGone:
                // the client has gone: its session ends now rather than at its timeout
                counters.dropped += 1
                if let identity = frames.first, sessions[identity] != nil {
                    counters.sessionsPeerGone += 1
                    endSessions(where: { $0.identity == identity }, reason: nil)
                }
            }
        } catch {
            counters.dropped += 1
            logger.error("send failed", metadata: ["error": "\(error)"])
        }
    }

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

    /// The hello reply's JSON: everything a client needs to talk to this daemon.
    static func describe(_ configuration: DaemonConfiguration) -> [UInt8] {
        let d = configuration.task.dynamics, p = configuration.planner
        var object: [String: Any] = [
            "protocol": Int(WireProtocol.version),
            "daemon": "mpcd \(mpcdVersion)",
            "task": configuration.task.name,
            "mode": configuration.server.mode.rawValue,
            "rate_hz": configuration.rateHz,
            "dt": Double(d.dt),
            "state_dim": d.stateDimension,
            "state_names": d.stateNames,
            "action_dim": d.actionDimension,
            "action_names": d.actionNames,
            "action_low": (try? p.bounds(for: configuration.task).lower.map { Double($0) }) ?? [],
            "action_high": (try? p.bounds(for: configuration.task).upper.map { Double($0) }) ?? [],
            "observation_forms": d.observationForms.map { ["name": $0.name, "components": $0.components] as [String: Any] },
            "plan_steps": configuration.server.planSteps,
            "horizon": p.horizon,
            "diagnostics": WireProtocol.diagnosticNames,
            "error_codes": Dictionary(uniqueKeysWithValues: WireProtocol.ErrorCode.allCases.map { ($0.name, Int($0.rawValue)) }),
            "planner": ["likelihood": p.likelihood, "samples": p.samples, "iterations": p.iterations] as [String: Any],
        ]
        if let prior = configuration.prior {
            object["prior"] = ["file": prior.file, "kind": prior.network.kind.rawValue, "version": prior.network.version,
                               "adaptive": prior.adaptive, "online": prior.online] as [String: Any]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Array(data)
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
            "another mpcd is running (\(pid.map { "pid \($0), " } ?? "")it holds \(endpoint)); stop it first, or give this one other endpoints"
        case let .unsafeFolder(path, reason):
            "\(path) \(reason); give the socket a folder of this user's ([control] endpoint, XDG_RUNTIME_DIR)"
        }
    }
}

/// mpcd's version, reported in the hello reply and by `mpcd --version`.
public let mpcdVersion = "0.1.0"

extension Session {
    static func name(_ identity: [UInt8]) -> String {
        if !identity.isEmpty, identity.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }) { return String(decoding: identity, as: UTF8.self) }
        return identity.map { String(format: "%02x", $0) }.joined()
    }
}
