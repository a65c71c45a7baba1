import Models
import Planners

/// A closed-loop run: the planner drives the task's own model for `steps` steps.
struct ClosedLoopRun {
    var states: [[Float]] = []
    var actions: [[Float]] = []
    var costs: [Float] = []
    var total: Float { costs.reduce(0, +) }
}

func runClosedLoop(_ task: ControlTask, _ configuration: PlannerConfiguration, from start: [Float], steps: Int,
                   until done: ([Float]) -> Bool = { _ in false }) throws -> ClosedLoopRun {
    let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
    var run = ClosedLoopRun()
    var state = start
    for _ in 0..<steps {
        run.states.append(state)
        let plan = planner.plan(state: state)
        let (next, cost) = task.step(state: state, action: plan.action)
        run.actions.append(plan.action)
        run.costs.append(cost)
        state = next
        if done(state) { break }
    }
    run.states.append(state)
    return run
}

func wrapped(_ angle: Float) -> Float {
    var a = angle.truncatingRemainder(dividingBy: 2 * .pi)
    if a > .pi { a -= 2 * .pi }
    if a < -.pi { a += 2 * .pi }
    return a
}

func within(_ action: [Float], _ task: ControlTask) -> Bool {
    action.indices.allSatisfy { action[$0] >= task.dynamics.actionLowerBounds[$0] && action[$0] <= task.dynamics.actionUpperBounds[$0] && action[$0].isFinite }
}
