import Foundation
import Models
import Planners
import Testing

/// Closed-loop control on every built-in task: the planner drives the task's own model.
@Suite struct ControlTests {
    /// The discrete-time LQR solution of the point mass: P from the Riccati recursion (with a
    /// discount γ per step: the problem Σ γ^t (x'Qx + u'Ru) is the undiscounted one with A and B
    /// scaled by sqrt(γ), and the same gain).
    static func lqr(dt: Double, q: (Double, Double), r: Double, discount: Double = 1) -> (p: [[Double]], gain: [Double]) {
        let root = discount.squareRoot()
        let a = [[root, root * dt], [0, root]], b = [root * dt * dt / 2, root * dt]
        var p = [[q.0, 0], [0, q.1]]
        var gain = [0.0, 0.0]
        for _ in 0..<10_000 {
            // K = (R + B'PB)^-1 B'PA ; P = Q + A'PA - A'PB K
            let pb = [p[0][0] * b[0] + p[0][1] * b[1], p[1][0] * b[0] + p[1][1] * b[1]]
            let bpb = b[0] * pb[0] + b[1] * pb[1]
            let bpa = [pb[0] * a[0][0] + pb[1] * a[1][0], pb[0] * a[0][1] + pb[1] * a[1][1]]
            gain = bpa.map { $0 / (r + bpb) }
            var apa = [[0.0, 0.0], [0.0, 0.0]]
            for i in 0..<2 { for j in 0..<2 { for k in 0..<2 { for l in 0..<2 { apa[i][j] += a[k][i] * p[k][l] * a[l][j] } } } }
            var next = [[q.0, 0], [0, q.1]]
            for i in 0..<2 { for j in 0..<2 { next[i][j] += apa[i][j] - bpa[i] * gain[j] } }
            p = next
        }
        return (p, gain)
    }

    @Test func pointMassClosedLoopCostIsWithinFivePercentOfLQR() throws {
        let dt = 0.1, q = (1.0, 0.1), r = 0.1
        let (p, gain) = Self.lqr(dt: dt, q: q, r: r)
        let start: [Double] = [1.0, 0.0]
        let optimum = start[0] * start[0] * p[0][0] + 2 * start[0] * start[1] * p[0][1] + start[1] * start[1] * p[1][1]
        // The LQR trajectory from this start never needs more than the action bound, so the
        // unconstrained optimum is the right oracle.
        var x = start, largest = 0.0
        for _ in 0..<200 {
            let u = -(gain[0] * x[0] + gain[1] * x[1])
            largest = max(largest, abs(u))
            x = [x[0] + dt * x[1] + dt * dt / 2 * u, x[1] + dt * u]
        }
        let task = try TaskRegistry.make(name: "point_mass", parameters: ConfigTable([
            "dt": .float(dt), "position_weight": .float(q.0), "velocity_weight": .float(q.1), "action_weight": .float(r),
            "terminal_pp": .float(p[0][0]), "terminal_pv": .float(p[0][1]), "terminal_vv": .float(p[1][1]),
            "max_acceleration": .float(4),
        ], path: "task"))
        #expect(largest < 4)
        var configuration = PlannerConfiguration()
        configuration.samples = 1024
        configuration.horizon = 20
        configuration.iterations = 4
        configuration.temperature = 0.1
        configuration.initialStd = 0.1
        let run = try runClosedLoop(task, configuration, from: start.map { Float($0) }, steps: 100)
        // cost actually paid plus the optimal cost-to-go of where the run ended
        let total = Double(run.total) + Double(task.terminalCost(state: run.states.last!))
        #expect(total >= optimum * 0.999, "a planner cannot beat the optimum: \(total) < \(optimum)")
        #expect(total <= optimum * 1.05, "closed-loop cost \(total) vs LQR optimum \(optimum)")
    }

    @Test(arguments: ["mppi", "cem"])
    func pendulumSwingsUpAndHolds(likelihood: String) throws {
        let task = try TaskRegistry.make(name: "pendulum")
        var configuration = PlannerConfiguration()
        configuration.likelihood = likelihood
        let run = try runClosedLoop(task, configuration, from: [.pi, 0], steps: 200)
        let last = run.states.suffix(50).map { abs(wrapped($0[0])) }
        #expect(last.max()! < 0.1, "\(likelihood): largest |theta| over the last 50 steps is \(last.max()!)")
        #expect(run.actions.allSatisfy { within($0, task) })
    }

    @Test func mountainCarReachesTheGoal() throws {
        let task = try TaskRegistry.make(name: "mountain_car")
        var configuration = PlannerConfiguration()
        configuration.horizon = 50
        configuration.samples = 512
        configuration.temperature = 0.1
        let run = try runClosedLoop(task, configuration, from: [-0.5, 0], steps: 999) { $0[0] >= 0.45 && $0[1] >= 0 }
        let end = run.states.last!
        #expect(end[0] >= 0.45, "after \(run.actions.count) steps the car is at \(end[0])")
        #expect(run.actions.allSatisfy { within($0, task) })
    }

    @Test func cartPoleSwingsUpAndBalances() throws {
        let task = try TaskRegistry.make(name: "cartpole")
        var configuration = PlannerConfiguration()
        configuration.horizon = 60
        configuration.samples = 1024
        configuration.temperature = 0.1
        let run = try runClosedLoop(task, configuration, from: [0, 0, .pi, 0], steps: 400)
        let last = run.states.suffix(100)
        #expect(last.allSatisfy { abs(wrapped($0[2])) < 0.2 }, "the pole is not upright over the last 2 s: \(last.map { wrapped($0[2]) }.max()!)")
        #expect(last.allSatisfy { abs($0[0]) < 2.4 })
        #expect(run.actions.allSatisfy { within($0, task) })
    }

    @Test func unicycleReachesTheGoalWithoutTouchingAnObstacle() throws {
        let obstacles: ConfigValue = .array([
            .table(["x": .float(1.5), "y": .float(0.1), "radius": .float(0.4)]),
            .table(["x": .float(3), "y": .float(-0.3), "radius": .float(0.35)]),
        ])
        let task = try TaskRegistry.make(name: "unicycle", parameters: ConfigTable(["obstacles": obstacles, "goal": .array([.float(4.5), .float(0)])], path: "task"))
        let cost = try #require(task.cost as? UnicycleCost)
        var configuration = PlannerConfiguration()
        configuration.horizon = 30
        configuration.samples = 1024
        configuration.temperature = 0.5
        let run = try runClosedLoop(task, configuration, from: [0, 0, 0], steps: 300) { s in
            hypot(s[0] - 4.5, s[1]) < 0.1
        }
        let end = run.states.last!
        #expect(hypot(end[0] - 4.5, end[1]) < 0.1, "ended at \(end)")
        let closest = run.states.map { cost.clearance(x: $0[0], y: $0[1]) }.min()!
        #expect(closest > 0, "touched an obstacle: clearance \(closest) m")
        #expect(run.actions.allSatisfy { within($0, task) })
    }
}
