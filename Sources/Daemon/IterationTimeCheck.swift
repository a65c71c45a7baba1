import Foundation
import Models
import Planners

/// A configuration whose single planner iteration would take seconds is refused before it runs:
/// the serving loop checks its deadline only between iterations, so one long iteration holds up
/// every session, the control socket and a stop request (and under systemd trips the watchdog).
/// A MuJoCo `frame_skip` of 10000, legal on its own, made one iteration take ten minutes.
public enum IterationTimeCheck {
    /// The longest one iteration may be expected to take, s.
    static let maxSeconds = 2.0

    /// K x H rollout steps at the time one step of this task measures here, over the threads.
    static func estimatedSeconds(task: ControlTask, planner: PlannerConfiguration, cores: Int) -> (seconds: Double, stepSeconds: Double) {
        let state = task.dynamics.randomInitialState { 0.5 }
        let action = zip(task.dynamics.actionLowerBounds, task.dynamics.actionUpperBounds).map { lo, hi in
            lo.isFinite && hi.isFinite ? (lo + hi) / 2 : 0
        }
        // the least of a few steps (a first one pays for page faults), within a few milliseconds, and
        // of 3 at least unless steps are slow for certain: a reload while the daemon served a busy
        // client measured its first step of the double pendulum at 6 ms, took no other, and was
        // refused (a fresh clone's CI run)
        var best = Double.infinity
        let start = monotonicNanoseconds()
        for taken in 1...50 {
            let t0 = monotonicNanoseconds()
            _ = task.step(state: state, action: action)
            let t1 = monotonicNanoseconds()
            best = min(best, Double(t1 - t0) * 1e-9)
            if t1 - start > 5_000_000, taken >= 3 || t1 - start > 200_000_000 { break }
        }
        // one call steps a whole padded batch of lanes: a lane's share is the step of one sample
        let step = best / Double(laneWidth)
        let seconds = step * Double(planner.samples) * Double(planner.horizon) / Double(parallelism(planner, cores: cores))
        return (seconds, step)
    }

    /// How many threads step one iteration's rollouts at once: none but the caller's below
    /// `parallel_threshold` rollout steps, never more than 16-sample blocks to share out, and never
    /// more than the cores this process may run on (64 threads on 2 cores step 2 at a time).
    public static func parallelism(_ planner: PlannerConfiguration, cores: Int) -> Int {
        guard planner.threads > 1, planner.samples * planner.horizon >= planner.parallelThreshold else { return 1 }
        return max(1, min(SpinningPool.usableThreads(planner.threads, cores: cores), MirrorDescentPlanner.sampleBlocks(planner.samples)))
    }

    static func check(task: ControlTask, planner: PlannerConfiguration, cores: Int) throws(ConfigurationError) {
        guard planner.iterations > 0 else { return }
        let (seconds, step) = estimatedSeconds(task: task, planner: planner, cores: cores)
        guard seconds > maxSeconds else { return }
        throw ConfigurationError(key: "planner.samples", reason: String(
            format: "one iteration would take about %.1f s (K=%d x H=%d rollout steps of %.3g ms each, over %d thread(s) at once), over the %.0f s mpcd allows: the serving loop waits for an iteration to end; fewer samples, a shorter horizon or a cheaper step (frame_skip)",
            seconds, planner.samples, planner.horizon, step * 1e3, parallelism(planner, cores: cores), maxSeconds))
    }
}
