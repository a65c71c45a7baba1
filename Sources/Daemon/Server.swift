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
    public private(set) var boundEndpoints: [String] = []
    public internal(set) var counters = ServerCounters()
    let logger: Logger
    let context: ZMQContext
    let socket: ZMQSocket
    var periodNanoseconds: UInt64 = 0
    var budgetNanoseconds: UInt64 = 0
    var busyPollNanoseconds: UInt64 = 0
    var sessions: [[UInt8]: Session] = [:]
    private var nextSessionIndex: UInt64 = 0
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
    /// Plan counters of fault-injecting models (testing only, MPCD_INJECT_NAN_EVERY).
    var faultCounters: [FaultInjectingDynamics.PlanCounter] = []
    /// Client authentication for CURVE, when configured.
    var zap: ZAPHandler?
    // The control plane (docs/operations.md): a local socket for mpcctl, and systemd's notify socket.
    var control: ZMQSocket?
    public internal(set) var controlEndpoint = ""
    var controlSocketPath: String?
    let notifier = SystemdNotifier()
    var lastWatchdog: UInt64 = 0
    var lastStatusNotice: UInt64 = 0
    var lastTickOnTime = true
    // Statistics for mpcctl status and metrics.
    let startedAt = monotonicNanoseconds()
    var latency = LatencyStatistics()
    var iterationCount: UInt64 = 0
    var planCount: UInt64 = 0

    public init(configuration: DaemonConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
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
        try socket.setOption(ZMQ_RCVHWM, Int32(1000))
        apply(configuration)
        try bindControl()
        if let curve = configuration.curve {
            // the ZAP handler must be bound before the CURVE socket, or libzmq accepts every key
            zap = try ZAPHandler(context: context, authorizedKeys: curve.authorizedKeys)
            try socket.setOption(ZMQ_CURVE_SERVER, Int32(1))
            try socket.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(curve.secretKey.utf8))
        }
        for endpoint in configuration.server.endpoints {
            if endpoint.hasPrefix("ipc://"), FileManager.default.fileExists(atPath: String(endpoint.dropFirst(6))) {
                // libzmq would silently take the path over from a daemon still serving on it
                if Self.somebodyServes(endpoint, context: context) { throw ServerError.alreadyRunning(endpoint: endpoint) }
                try? FileManager.default.removeItem(atPath: String(endpoint.dropFirst(6)))
            }
            do {
                try socket.bind(endpoint)
            } catch {
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
    func apply(_ configuration: DaemonConfiguration) {
        self.configuration = configuration
        periodNanoseconds = UInt64((1e9 / configuration.rateHz).rounded())
        budgetNanoseconds = UInt64(Double(periodNanoseconds) * configuration.server.budgetFraction)
        busyPollNanoseconds = UInt64(configuration.server.busyPollMicroseconds) * 1000
        helloReply = Self.describe(configuration)
        networkVersion = configuration.prior?.network.version ?? -1
        // between two replies: a tick period in realtime, one model step in lockstep
        let replyPeriod = configuration.server.mode == .realtime ? 1 / configuration.rateHz : Double(configuration.task.dynamics.dt)
        actionSafety = (try? configuration.actionSafety(period: replyPeriod)) ?? actionSafety
        staleAfterNanoseconds = UInt64(configuration.safety.staleAfter * 1e9)
        for session in sessions.values { session.safety = actionSafety }
        amortiser?.stop()
        amortiser = nil
        if let prior = configuration.prior, prior.online {
            var settings = OnlineAmortiser.Settings()
            settings.learningRate = prior.onlineLearningRate
            settings.batchSize = prior.onlineBatch
            settings.bufferRows = prior.onlineBuffer
            settings.publishEvery = prior.onlinePublishEvery
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
        while !stopRequested.load(ordering: .relaxed) {
            let now = monotonicNanoseconds()
            switch configuration.server.mode {
            case .lockstep:
                waitForMessages(until: now + 100_000_000, tick: false)
                drainMessages()
                let due = sessions.values.filter { $0.unanswered }
                if !due.isEmpty {
                    let start = monotonicNanoseconds()
                    planAndSend(due, now: start, deadline: start + budgetNanoseconds, tick: nil, lateness: 0)
                }
            case .realtime:
                if now < nextTick {
                    waitForMessages(until: nextTick, tick: true)
                    drainMessages()
                    serviceControlPlane(now: monotonicNanoseconds())
                    continue
                }
                let start = monotonicNanoseconds()
                drainMessages()
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
            serviceControlPlane(now: monotonicNanoseconds())
        }
        notifier.send("STOPPING=1")
        amortiser?.stop()
        closeControl()
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
        let sockets = [socket] + (control.map { [$0] } ?? []) + (zap.map { [$0.socket] } ?? [])
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
            // at most 100 ms, so a stop request or a watchdog notice is never late
            let ms = Int(min(remaining - 1_000_000, 100_000_000) / 1_000_000)
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

    /// Most messages read per wake-up: a peer flooding the socket cannot keep the loop from its
    /// tick (each session keeps only its newest observation anyway, and the rest wait in libzmq's
    /// bounded queue, whose high-water mark drops the excess).
    static let drainLimit = 512

    private func drainMessages() {
        zap?.serve()
        for _ in 0..<Self.drainLimit {
            let frames: [[UInt8]]?
            do {
                frames = try socket.receive()
            } catch {
                logger.error("receive failed", metadata: ["error": "\(error)"])
                return
            }
            guard let frames else { return }
            handle(frames)
        }
    }

    private func handle(_ frames: [[UInt8]]) {
        guard frames.count >= 2 else { return }
        let identity = frames[0]
        // REQ clients put an empty delimiter frame before the payload; DEALER clients do not.
        let isRequest = frames[1].isEmpty
        let envelope = isRequest ? [identity, []] : [identity]
        let payload = Array(frames[(isRequest ? 2 : 1)...])
        let now = monotonicNanoseconds()
        do throws(WireProtocol.Refusal) {
            switch try WireProtocol.decode(payload) {
            case .hello:
                send(envelope + [WireProtocol.Header(type: .helloReply).bytes, helloReply])
                sessions[identity]?.lastSeen = now
            case .bye:
                if let ended = sessions.removeValue(forKey: identity) {
                    counters.fallbacks += ended.fallbacks
                    counters.staleReplies += ended.staleReplies
                    logger.info("session closed by client", metadata: ["peer": "\(Session.name(identity))"])
                }
            case let .observation(sequence, timestamp, values):
                let state: [Float]
                do {
                    state = try configuration.task.dynamics.state(fromObservation: values)
                } catch .nonFinite(let index) {
                    throw WireProtocol.Refusal(.nonFinite, "observation value \(index) is not finite", sequence: sequence)
                } catch {
                    throw WireProtocol.Refusal(.wrongDimension, error.description, sequence: sequence)
                }
                let session = try session(for: identity, envelope: envelope, now: now, sequence: sequence)
                session.envelope = envelope
                session.lastSeen = now
                var measuredAt = now
                if configuration.server.trustClientTimestamps, timestamp > 0 {
                    let stamped = UInt64(timestamp * 1e9)
                    if stamped <= now { measuredAt = stamped }
                    if staleAfterNanoseconds > 0, now - measuredAt > staleAfterNanoseconds {
                        throw WireProtocol.Refusal(.stale, "observation is \(Double(now - measuredAt) * 1e-9) s old; stale_after_s is \(configuration.safety.staleAfter)", sequence: sequence)
                    }
                }
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

    private func session(for identity: [UInt8], envelope: [[UInt8]], now: UInt64, sequence: UInt64) throws(WireProtocol.Refusal) -> Session {
        if let existing = sessions[identity] { return existing }
        guard sessions.count < configuration.server.maxSessions else {
            throw WireProtocol.Refusal(.tooManySessions, "the daemon serves at most \(configuration.server.maxSessions) sessions", sequence: sequence)
        }
        let planner: MirrorDescentPlanner, prior: NetworkPrior?
        do {
            (planner, prior) = try makePlanner(index: nextSessionIndex)
        } catch {
            throw WireProtocol.Refusal(.internalError, "cannot create a planner: \(error)", sequence: sequence)
        }
        let session = Session(identity: identity, envelope: envelope, planner: planner, prior: prior,
                              priorSettings: configuration.prior, safety: actionSafety, index: nextSessionIndex, now: now)
        session.keepsPlans = amortiser != nil
        nextSessionIndex += 1
        sessions[identity] = session
        counters.sessionsOpened += 1
        logger.info("session opened", metadata: ["peer": "\(session.name)", "sessions": "\(sessions.count)"])
        return session
    }

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

    /// A planner for session number `index` under the current configuration, with its prior:
    /// every session has its own random stream, the configured seed offset by its number.
    func makePlanner(index: UInt64) throws -> (MirrorDescentPlanner, NetworkPrior?) {
        var plannerConfiguration = configuration.planner
        plannerConfiguration.seed = configuration.planner.seed &+ index &* 0x9E37_79B9_7F4A_7C15
        let (task, counter) = FaultInjectingDynamics.wrap(configuration.task)
        if let counter { faultCounters.append(counter) }
        let planner = try MirrorDescentPlanner(task: task, configuration: plannerConfiguration)
        if let value = configuration.value { try planner.installValue(value.network, weight: value.weight) }
        var prior: NetworkPrior?
        if let settings = configuration.prior {
            prior = try NetworkPrior(network: settings.network, task: configuration.task, horizon: plannerConfiguration.horizon)
            if let amortiser, let network = amortiser.latest(newerThan: -1) { prior?.replace(network) }
        }
        return (planner, prior)
    }

    /// Gives a session a planner and prior built from the current configuration.
    func rebuildPlanner(of session: Session) {
        guard let (planner, prior) = try? makePlanner(index: session.index) else { return }
        session.rebuild(planner: planner, prior: prior, priorSettings: configuration.prior)
        session.keepsPlans = amortiser != nil
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

    private func send(_ frames: [[UInt8]]) {
        do {
            if try socket.send(frames) {
                counters.replies += 1
            } else {
                counters.dropped += 1
            }
        } catch {
            counters.dropped += 1
            logger.error("send failed", metadata: ["error": "\(error)"])
        }
    }

    private func expireIdleSessions(now: UInt64) {
        let timeout = UInt64(configuration.server.sessionTimeout * 1e9)
        for (identity, session) in sessions where now > session.lastSeen && now - session.lastSeen > timeout {
            sessions.removeValue(forKey: identity)
            counters.sessionsExpired += 1
            counters.fallbacks += session.fallbacks
            counters.staleReplies += session.staleReplies
            logger.info("session expired", metadata: ["peer": "\(session.name)", "idle_s": "\(Double(now - session.lastSeen) * 1e-9)"])
        }
    }

    /// Whether an mpcd answers a hello on `endpoint` within 300 ms.
    static func somebodyServes(_ endpoint: String, context: ZMQContext) -> Bool {
        guard let probe = try? ZMQSocket(context, type: ZMQ_DEALER), (try? probe.connect(endpoint)) != nil,
              (try? probe.send([WireProtocol.Header(type: .hello).bytes])) == true else { return false }
        return (try? probe.waitReadable(milliseconds: 300)) == true
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
    case alreadyRunning(endpoint: String)

    public var description: String {
        switch self {
        case let .bind(endpoint, reason): "cannot bind \(endpoint): \(reason)"
        case let .affinity(cpus, reason): "cannot run on CPUs \(cpus): \(reason)"
        case let .alreadyRunning(endpoint): "another mpcd is running (it answers on \(endpoint)); stop it first, or give this one other endpoints"
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
