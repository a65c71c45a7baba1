import Foundation
import Logging
import Models
import Planners

/// The daemon's sessions: opening one per client identity (within `max_sessions`, an idle one
/// giving way to a newcomer), ending them (by the client, a timeout, a departed peer, a reload),
/// and their planners.
extension Server {
    func session(for identity: [UInt8], envelope: [[UInt8]], now: UInt64, sequence: UInt64) throws(WireProtocol.Refusal) -> Session {
        if let existing = sessions[identity] { return existing }
        if sessions.count >= configuration.server.maxSessions,
           let gone = sessions.values.filter({ $0.departedAt != nil }).min(by: { $0.departedAt! < $1.departedAt! }) {
            // full: a session whose client's connection has closed gives way first, at once
            counters.sessionsPeerGone += 1
            endSessions(where: { $0 === gone }, reason: "its connection closed, its place taken by a new client")
        }
        if sessions.count >= configuration.server.maxSessions {
            // full: the session silent longest gives way if it has been silent long enough
            let idleAfter = nanoseconds(seconds: configuration.server.evictIdleAfter)
            guard let idlest = sessions.values.min(by: { $0.lastObservationAt < $1.lastObservationAt }),
                  now > idlest.lastObservationAt, now - idlest.lastObservationAt >= idleAfter else {
                throw WireProtocol.Refusal(.tooManySessions, "the daemon serves at most \(configuration.server.maxSessions) sessions, all active within the last \(configuration.server.evictIdleAfter) s", sequence: sequence)
            }
            counters.sessionsEvicted += 1
            endSessions(where: { $0 === idlest }, reason: "silent for \(Double(now - idlest.lastObservationAt) * 1e-9) s, its place taken by a new client")
        }
        let planner: MirrorDescentPlanner, prior: NetworkPrior?
        do {
            (planner, prior) = try makePlanner(index: nextSessionIndex)
        } catch {
            throw WireProtocol.Refusal(.internalError, "cannot create a planner: \(error)", sequence: sequence)
        }
        let session = Session(identity: identity, envelope: envelope, planner: planner, prior: prior,
                              priorSettings: configuration.prior, safety: actionSafety, index: nextSessionIndex, now: now)
        // the same client back (after giving way, a timeout, a reconnection): its last action is
        // still the slew reference, so its first action cannot jump
        if let recent = recentActions.removeValue(forKey: identity), now > recent.at,
           now - recent.at <= nanoseconds(seconds: configuration.sessionTimeout) {
            session.continueAfter(lastAction: recent.action)
        }
        session.keepsPlans = amortiser != nil
        session.recording = recorder != nil
        nextSessionIndex += 1
        sessions[identity] = session
        counters.sessionsOpened += 1
        logger.info("session opened", metadata: ["peer": "\(session.name)", "sessions": "\(sessions.count)"])
        return session
    }

    /// Ends the sessions `predicate` picks, keeping their counts and last actions; `reason` is
    /// logged (nil: quietly).
    func endSessions(where predicate: (Session) -> Bool, reason: String?) {
        for (identity, session) in sessions where predicate(session) {
            sessions.removeValue(forKey: identity)
            counters.fallbacks += session.fallbacks
            counters.staleReplies += session.staleReplies
            counters.truncatedPlans += session.metrics.truncatedPlans
            if let action = session.lastSent { rememberAction(action, of: identity) }
            if let reason { logger.info("session ended", metadata: ["peer": "\(session.name)", "reason": "\(reason)"]) }
        }
    }

    /// How long a session whose connection closed waits for its client to come back by a new
    /// one (a ZeroMQ socket reconnects by itself within a fraction of a second) before it ends.
    static let departedGraceNanoseconds: UInt64 = 2_000_000_000

    /// Marks the sessions whose connection has closed (or was ended by the guard) departed, and
    /// ends those departed longer than the grace. A departed session gives way to a newcomer at
    /// once (`session(for:)`): a client that hung up without a bye would otherwise hold its place
    /// until `evict_idle_after_s`, and one opening fresh identities could keep every newcomer out.
    /// One that comes back within the grace keeps its session: warm start, parameters and all.
    /// Ended ones count as peer gone; the last action is remembered, as for every ended session.
    func endSessionsOfDepartedConnections() {
        let now = monotonicNanoseconds()
        if let departed = connectionGuard?.takeDeparted(), !departed.isEmpty {
            let gone = Set(departed.map(\.identity))
            for session in sessions.values where session.connection.map(gone.contains) ?? false {
                session.departed(at: now)
            }
        }
        // the graces are looked at ten times a second, not at every wake-up: a walk over every session
        guard now >= lastDepartureSweep &+ 100_000_000 else { return }
        lastDepartureSweep = now
        // failed plans counted but not yet told, once their 10 s are up, whether or not a session still ticks
        logFailedPlans([])
        let ending = sessions.values.filter { session in
            session.departedAt.map { now > $0 && now - $0 >= Self.departedGraceNanoseconds } ?? false
        }
        guard !ending.isEmpty else { return }
        counters.sessionsPeerGone += UInt64(ending.count)
        endSessions(where: { session in ending.contains { $0 === session } }, reason: "its connection closed and it did not come back")
    }

    func expireIdleSessions(now: UInt64) {
        let timeout = nanoseconds(seconds: configuration.sessionTimeout)
        for session in sessions.values where now > session.lastSeen && now - session.lastSeen > timeout {
            counters.sessionsExpired += 1
            endSessions(where: { $0 === session }, reason: "no message for \(Double(now - session.lastSeen) * 1e-9) s")
        }
    }

    /// Most ended sessions whose last action is kept (the oldest are forgotten first).
    var recentActionsLimit: Int { 4 * configuration.server.maxSessions }

    func rememberAction(_ action: [Float], of identity: [UInt8]) {
        recentActions[identity] = (action, monotonicNanoseconds())
        if recentActions.count > recentActionsLimit, let oldest = recentActions.min(by: { $0.value.at < $1.value.at })?.key {
            recentActions.removeValue(forKey: oldest)
        }
    }

    /// Whether two tasks take states and actions of the same shape, so a session can keep going.
    static func sameShape(_ a: ControlTask, _ b: ControlTask) -> Bool {
        a.name == b.name && a.dynamics.stateDimension == b.dynamics.stateDimension && a.dynamics.actionDimension == b.dynamics.actionDimension
    }

    /// A planner for session number `index` under the current configuration, with its prior:
    /// every session has its own random stream, the configured seed offset by its number.
    func makePlanner(index: UInt64) throws -> (MirrorDescentPlanner, NetworkPrior?) {
        let (task, counter) = FaultInjectingDynamics.wrap(configuration.task)
        if let counter { faultCounters.append(counter) }
        let (planner, prior) = try configuration.sessionPlanner(index: index, task: task, workers: workers)
        if let amortiser, let network = amortiser.latest(newerThan: -1) { prior?.replace(network) }
        return (planner, prior)
    }

    /// Gives a session a planner and prior built from the current configuration.
    func rebuildPlanner(of session: Session) {
        guard let (planner, prior) = try? makePlanner(index: session.index) else { return }
        if let dropped = session.rebuild(planner: planner, prior: prior, priorSettings: configuration.prior) {
            logger.warning("the new configuration refused a session's parameters; it plans with the configuration's", metadata: [
                "peer": "\(session.name)", "reason": "\(dropped)",
            ])
        }
        session.keepsPlans = amortiser != nil
    }
}

extension DaemonConfiguration {
    /// The planner of session number `index` and its prior, as the daemon makes them (and a
    /// replay again): every session has its own random stream, the configured seed offset by its
    /// number. `task` stands in for the configuration's (a fault-injecting wrapper in tests).
    public func sessionPlanner(index: UInt64, task: ControlTask? = nil, workers: SpinningPool?) throws -> (MirrorDescentPlanner, NetworkPrior?) {
        var plannerConfiguration = planner
        plannerConfiguration.seed = planner.seed &+ index &* 0x9E37_79B9_7F4A_7C15
        let sessionPlanner = try MirrorDescentPlanner(task: task ?? self.task, configuration: plannerConfiguration, workers: workers)
        if let value { try sessionPlanner.installValue(value.network, weight: value.weight) }
        let prior = try prior.map { try NetworkPrior(network: $0.network, task: self.task, horizon: plannerConfiguration.horizon) }
        return (sessionPlanner, prior)
    }
}
