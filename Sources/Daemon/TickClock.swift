import CSystemShims
import Foundation
import Logging
import Planners

/// The serving loop and its clock: lockstep answers as observations arrive, realtime plans on a
/// monotonic period grid and skips the ticks an overrun covered.
extension Server {
    /// Asks `run()` to return; safe from any thread or a signal source.
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    /// Serves until `requestStop()`.
    public func run() {
        var serving: Logger.Metadata = [
            "task": "\(configuration.task.name)", "likelihood": "\(configuration.planner.likelihood)",
            "mode": "\(configuration.server.mode.rawValue)", "rate_hz": "\(configuration.rateHz)",
            "endpoints": "\(boundEndpoints.joined(separator: ", "))", "config": "\(configuration.source)",
        ]
        // which MuJoCo build the rollouts step (the AVX build or Debian's) is an operator's question
        if let library = configuration.mujocoLibrary { serving["mujoco"] = "\(library)" }
        logger.info("serving", metadata: serving)
        amortiser?.start()
        notifier.send("READY=1\nSTATUS=\(statusLine())\nMAINPID=\(getpid())")
        var nextTick = monotonicNanoseconds() + periodNanoseconds
        // the grid the next tick is on: a reload that changes the rate or the mode starts a new one
        // (0.2 Hz reloaded to 100 Hz had waited out the old 5 s tick; lockstep reloaded to realtime
        // had counted every period since the start as an overrun)
        var grid = (period: periodNanoseconds, mode: configuration.server.mode)
        var lastSweep: UInt64 = 0
        while !stopRequested.load(ordering: .relaxed) && mpcd_stop_requested() == 0 {
            let now = monotonicNanoseconds()
            if grid != (periodNanoseconds, configuration.server.mode) {
                // the new grid starts now: a first tick a whole new period away was 10 s of
                // silence after a reload to 0.1 Hz
                grid = (periodNanoseconds, configuration.server.mode)
                nextTick = now
            }
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
                // sessions whose observations stopped get the safe action, not a plan; an
                // observation's age counts from its measurement (its arrival unless timestamps are
                // trusted): one that arrived 0.45 s old had been planned from until 0.95 s old
                let isStale = { (s: Session) -> Bool in
                    self.staleAfterNanoseconds > 0 && start > s.observation!.measuredAt && start - s.observation!.measuredAt > self.staleAfterNanoseconds
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
        // the recording's last ticks and its end marker, and any file still closing (a hung disk
        // holds the stop up 5 s at most)
        for old in [recorder].compactMap({ $0 }) + retiredRecorders where !old.stop(timeout: 5) {
            logger.warning("recording: a file did not close within 5 s; it ends without its end marker", metadata: ["file": "\(old.currentPath)"])
        }
        recorder = nil
        closeControl()
        for file in dataSocketFiles { file.release() }
        logFailedPlans([], stopping: true)
        logger.info("stopped", metadata: ["replies": "\(counters.replies)", "sessions": "\(sessions.count)"])
    }
}
