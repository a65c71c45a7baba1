import Foundation
import Models
import Testing

/// Replays Gymnasium's own transitions (written by scripts/make_fixtures.py) through the models,
/// one transition at a time: each row's state and action go in, the next state must match.
///
/// Tolerance: 1e-5 relative to the size of the quantity, |ours - gym| <= 1e-5 * max(|gym|, scale),
/// where `scale` is the largest magnitude that state component takes in the fixture (a purely
/// relative bound is meaningless for values that cross zero).
struct Fixture {
    let header: [String]
    let rows: [[Double]]

    init(_ name: String) throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
        header = lines[0].split(separator: ",").map(String.init)
        rows = lines.dropFirst().map { $0.split(separator: ",").map { Double($0)! } }
    }

    func column(_ name: String) -> Int { header.firstIndex(of: name)! }

    /// Checks every transition; returns the worst error relative to the tolerance (must be <= 1).
    func replay(_ task: ControlTask, actionColumn: String, checkReward: Bool = false) -> Double {
        let names = task.dynamics.stateNames
        let before = names.map { column($0) }, after = names.map { column("next_" + $0) }
        let action = column(actionColumn), reward = column("reward")
        let scales = after.map { c in rows.map { abs($0[c]) }.max()! }
        var worst = 0.0
        for row in rows {
            let state = before.map { Float(row[$0]) }
            let (next, cost) = task.step(state: state, action: [Float(row[action])])
            for (i, c) in after.enumerated() {
                let tolerance = 1e-5 * max(abs(row[c]), scales[i])
                worst = max(worst, abs(Double(next[i]) - row[c]) / tolerance)
            }
            if checkReward {
                let tolerance = 1e-5 * max(abs(row[reward]), 1)
                worst = max(worst, abs(Double(-cost) - row[reward]) / tolerance)
            }
        }
        return worst
    }
}

@Suite struct GymnasiumFixtureTests {
    @Test func pendulumMatchesGymnasiumStepForStep() throws {
        let fixture = try Fixture("pendulum.csv")
        #expect(fixture.rows.count >= 500)
        let worst = fixture.replay(try .pendulum(), actionColumn: "torque", checkReward: true)
        #expect(worst <= 1, "worst error is \(worst) x the tolerance")
    }

    @Test func mountainCarMatchesGymnasiumStepForStep() throws {
        let fixture = try Fixture("mountain_car.csv")
        let worst = fixture.replay(try .mountainCar(), actionColumn: "force")
        #expect(worst <= 1, "worst error is \(worst) x the tolerance")
        // the fixture must exercise the goal and the left wall, not just the valley
        let positions = fixture.rows.map { $0[fixture.column("next_position")] }
        #expect(positions.max()! >= 0.45)
        #expect(positions.min()! <= -1.19)
    }

    @Test func cartPoleMatchesGymnasiumStepForStep() throws {
        let fixture = try Fixture("cartpole.csv")
        let worst = fixture.replay(try .cartPole(), actionColumn: "force")
        #expect(worst <= 1, "worst error is \(worst) x the tolerance")
    }
}
