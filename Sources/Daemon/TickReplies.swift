import Dispatch
import Foundation
import Planners

/// One tick's work on the due sessions: plan them (in parallel across sessions), send each reply
/// and record its latency, then, off the critical path, hand the plans to online amortisation.
extension Server {
    /// Sessions whose observations stopped arriving get the configured safe action, not a plan.
    func sendStale(_ stale: [Session], now: UInt64, tick: UInt64, lateness: Double) {
        let context = TickContext(periodNanoseconds: periodNanoseconds, advanceStale: false,
                                  planSteps: configuration.server.planSteps, latenessSeconds: lateness, overruns: counters.overruns)
        for session in stale {
            session.staleReply(now: now, tick: tick, safeAction: configuration.safety.safeAction, context: context)
            if let reply = session.reply {
                session.reply = nil
                send(reply)
            }
        }
        handOffRecords(stale)
    }

    /// Plans `due` (in parallel across sessions when there are several), sends each reply and
    /// records its latency.
    func planAndSend(_ due: [Session], now: UInt64, deadline: UInt64, tick: UInt64?, lateness: Double) {
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
            let nanoseconds = sent > origin ? sent - origin : 0
            latency.record(nanoseconds: nanoseconds, now: sent)
            session.metrics.record(latencyMicroseconds: nanoseconds / 1000, iterations: session.lastIterations)
            allPlans.record(latencyMicroseconds: nanoseconds / 1000, iterations: session.lastIterations)
        }
        // Off the critical path, now that the replies are out: the online-learning hand-off, then
        // the noise for the next plans.
        handOffToAmortiser(due)
        handOffRecords(due)
        logFailedPlans(due)
        for session in due { session.planner.prepareNoise() }
    }

    /// A plan none of whose rollouts had a finite cost answers with the prior's action, flagged
    /// `fallback` and counted in the metrics; the log tells of it too (FailedPlanReport), so an
    /// operator reading the journal learns of it without a line per tick.
    func logFailedPlans(_ due: [Session], stopping: Bool = false) {
        for session in due where session.failedPlans > session.failedPlansCounted {
            failedPlanReport.count(session.failedPlans - session.failedPlansCounted, peer: session.name)
            session.failedPlansCounted = session.failedPlans
        }
        if let line = failedPlanReport.due(now: monotonicNanoseconds(), stopping: stopping) {
            logger.warning("no rollout of the plan had a finite cost: the reply carries the prior's action, flagged fallback", metadata: line)
        }
    }

    /// Online amortisation: the refined plans go to the learner, and newer network weights, when
    /// it has some, to every session's prior.
    func handOffToAmortiser(_ due: [Session]) {
        guard let amortiser else { return }
        for session in due { if let (state, plan) = session.lastPlan { amortiser.record(state: state, plan: plan) } }
        if let network = amortiser.latest(newerThan: networkVersion) {
            networkVersion = network.version
            for session in sessions.values { session.prior?.replace(network) }
        }
    }
}
