import Foundation
import Models
import Testing

/// Parameters a session sets at run time: checked all or none, and the cost really moves.
@Suite struct TaskParameterTests {
    @Test func theUnicyclesGoalMovesItsCost() throws {
        let task = try TaskRegistry.make(name: "unicycle")
        let moved = try task.settingParameters(["goal": [1, 2]])
        // at the new goal the goal term is zero; at the old one it is the distance between them
        let atNewGoal = moved.step(state: [1, 2, 0], action: [0, 0]).cost
        let atOldGoal = moved.step(state: [4, 0, 0], action: [0, 0]).cost
        #expect(abs(atNewGoal) < 1e-6)
        #expect(abs(atOldGoal - (9 + 4 as Float).squareRoot()) < 1e-5)
        #expect(task.step(state: [1, 2, 0], action: [0, 0]).cost > 1)  // the original task is untouched
        #expect(moved.parameters.first { $0.name == "goal" }?.value == [1, 2])
    }

    @Test func thePointMassHoldsItsTarget() throws {
        let task = try TaskRegistry.make(name: "point_mass").settingParameters(["target": [0.5], "velocity_weight": [0]])
        #expect(abs(task.step(state: [0.5, 0], action: [0]).cost) < 1e-7)
        #expect(abs(task.step(state: [1.5, 0], action: [0]).cost - 1) < 1e-6)
    }

    @Test func thePendulumsTargetAngleMovesItsAngleTerm() throws {
        let task = try TaskRegistry.make(name: "pendulum")
        let held = try task.settingParameters(["target_angle": [0.3]])
        #expect(abs(held.step(state: [0.3, 0], action: [0]).cost) < 1e-7)
        #expect(abs(held.step(state: [0, 0], action: [0]).cost - 0.09) < 1e-6)
        // across the wrap: 3.1 rad from a target of -3.1 is 0.083 rad away, not 6.2
        let wrapped = try task.settingParameters(["target_angle": [-3.1]]).step(state: [3.1, 0], action: [0]).cost
        #expect(abs(wrapped - pow(2 * .pi - 6.2, 2)) < 1e-4)
        #expect(abs(task.step(state: [0.3, 0], action: [0]).cost - 0.09) < 1e-6)  // the default: upright, as Gymnasium
    }

    /// A configured target_angle = pi passed --check, but a session could not set it back: the
    /// bound was Float.pi, rounded down, and the configured value Float(Double.pi), rounded up.
    @Test func aSessionCanSetEveryConfiguredValueBack() throws {
        var tasks = try TaskRegistry.builtInNames.map { try TaskRegistry.make(name: $0) }
        for angle in [Double.pi, -Double.pi] {
            tasks.append(try TaskRegistry.make(name: "pendulum", parameters: ConfigTable(["target_angle": .float(angle)], path: "task")))
        }
        for task in tasks {
            for parameter in task.parameters {
                #expect(throws: Never.self, "\(task.name).\(parameter.name) = \(parameter.value)") {
                    _ = try task.settingParameters([parameter.name: parameter.value.map(Double.init)])
                }
            }
        }
    }

    @Test func aBadValueRefusesTheWholeMessage() throws {
        let task = try TaskRegistry.make(name: "unicycle")
        let cases: [([String: [Double]], ParameterError.Kind, String)] = [
            (["goal": [1, 2], "nope": [1]], .unknown, "nope"),
            (["goal": [1]], .wrongLength, "goal"),
            (["goal": [.nan, 1]], .nonFinite, "goal"),
            (["goal": [1e39, 1]], .nonFinite, "goal"),  // beyond float32
            (["goal": [1, 2], "goal_weight": [-1]], .outOfRange, "goal_weight"),
            ([:], .none, ""),
        ]
        for (values, kind, name) in cases {
            #expect(throws: ParameterError.self) { try task.settingParameters(values) }
            do {
                _ = try task.settingParameters(values)
            } catch {
                #expect(error.kind == kind && error.parameter == name, "\(values): \(error)")
            }
        }
        #expect(throws: ParameterError(kind: .none, parameter: "", reason: "task mountain_car has no parameters")) {
            try TaskRegistry.make(name: "mountain_car").settingParameters(["goal": [1, 2]])
        }
    }
}
