import Foundation
import Models

/// Fault injection for testing the daemon's fault handling, never for production: with
/// `MPCD_INJECT_NAN_EVERY=N` in the environment, every Nth plan's rollouts all return NaN states,
/// as a broken model would. The plan then fails, and the reply must carry the prior's action,
/// flagged `fallback`, while the daemon carries on.
struct FaultInjectingDynamics: ForwardingDynamics, @unchecked Sendable {
    let inner: any BatchDynamics
    let every: Int
    /// Counts `step` calls of whole plans: the planner calls `step` once per horizon step per
    /// worker, so a shared counter of plans is advanced by the server before each plan.
    let plans: PlanCounter

    final class PlanCounter: @unchecked Sendable {
        var count = 0
    }

    func step(states: BatchView, actions: BatchView) {
        inner.step(states: states, actions: actions)
        // only the K-lane rollouts: the 8-lane batches that evaluate sequences stay honest
        guard states.lanes > laneWidth, plans.count % every == 0 else { return }
        for c in 0..<stateNames.count { states[component: c].update(repeating: .nan, count: states.lanes) }
    }

    /// The task with injected faults if the environment asks for them.
    static func wrap(_ task: ControlTask, environment: [String: String] = ProcessInfo.processInfo.environment) -> (ControlTask, PlanCounter?) {
        guard let every = environment["MPCD_INJECT_NAN_EVERY"].flatMap(Int.init), every > 0 else { return (task, nil) }
        let counter = PlanCounter()
        let faulty = FaultInjectingDynamics(inner: task.dynamics, every: every, plans: counter)
        return (ControlTask(name: task.name, dynamics: faulty, cost: task.cost), counter)
    }
}
