import Foundation
import Models
import Testing

@Suite struct ObservationTests {
    @Test func pendulumAcceptsGymnasiumAndStateForms() throws {
        let d = PendulumDynamics()
        let fromGym = try d.state(fromObservation: [cos(2.5), sin(2.5), -1.25])
        #expect(abs(fromGym[0] - 2.5) < 1e-6 && fromGym[1] == -1.25)
        #expect(try d.state(fromObservation: [7.0, 0.5]) == [7.0, 0.5])
        #expect(throws: ObservationError.wrongLength(got: 4, accepted: [3, 2])) { try d.state(fromObservation: [1, 2, 3, 4]) }
        #expect(throws: ObservationError.nonFinite(index: 1)) { try d.state(fromObservation: [1, .nan, 0]) }
        #expect(throws: ObservationError.nonFinite(index: 0)) { try d.state(fromObservation: [.infinity, 0]) }
    }

    @Test func otherTasksTakeTheirStateAsObservation() throws {
        for name in TaskRegistry.builtInNames where name != "pendulum" {
            let task = try TaskRegistry.make(name: name)
            let n = task.dynamics.stateDimension
            let obs = (0..<n).map { Double($0) * 0.1 }
            #expect(try task.dynamics.state(fromObservation: obs) == obs.map { Float($0) })
            #expect(throws: ObservationError.self) { try task.dynamics.state(fromObservation: Array(obs.dropLast())) }
        }
    }
}

@Suite struct VectorMathTests {
    @Test func elementaryFunctionsMatchLibm() {
        var worstSin = 0.0, worstCos = 0.0, worstExp = 0.0, worstLog = 0.0
        for i in 0..<20_000 {
            let x = Float(i - 10_000) * 0.0031  // [-31, 31]
            let lanes = Lanes(repeating: x)
            let (s, c) = VectorMath.sinCos(lanes)
            worstSin = max(worstSin, abs(Double(s[0]) - sin(Double(x))))
            worstCos = max(worstCos, abs(Double(c[0]) - cos(Double(x))))
            let e = Float(i - 10_000) * 0.008  // [-80, 80]
            let exact = exp(Double(e))
            worstExp = max(worstExp, abs(Double(VectorMath.exp(Lanes(repeating: e))[0]) - exact) / exact)
            let l = Float(i + 1) * 1e-4  // (0, 2]
            worstLog = max(worstLog, abs(Double(VectorMath.log(Lanes(repeating: l))[0]) - log(Double(l))))
        }
        #expect(worstSin < 3e-6, "sin error \(worstSin)")  // float rounding of x itself dominates at |x| ~ 31
        #expect(worstCos < 3e-6, "cos error \(worstCos)")
        #expect(worstExp < 1e-6, "exp relative error \(worstExp)")
        #expect(worstLog < 1e-6, "log error \(worstLog)")
    }

    @Test func wrapAngleMatchesGymnasiumAngleNormalize() {
        for x in stride(from: -20.0, through: 20.0, by: 0.37) {
            let expected = (x + .pi).truncatingRemainder(dividingBy: 2 * .pi)
            let wrapped = (expected < 0 ? expected + 2 * .pi : expected) - .pi
            #expect(abs(Double(VectorMath.wrapAngle(Lanes(repeating: Float(x)))[0]) - wrapped) < 2e-5)
        }
    }
}

@Suite struct TaskConfigurationTests {
    @Test func everyParameterIsSettable() throws {
        let task = try TaskRegistry.make(name: "pendulum", parameters: ConfigTable(["max_torque": .float(3), "gravity": .integer(9)], path: "task"))
        let d = try #require(task.dynamics as? PendulumDynamics)
        #expect(d.maxTorque == 3 && d.gravity == 9)
        #expect(task.dynamics.actionUpperBounds == [3])
    }

    @Test func unknownKeysAndBadValuesNameTheKey() {
        func failure(_ name: String, _ values: [String: ConfigValue]) -> ConfigurationError? {
            do {
                _ = try TaskRegistry.make(name: name, parameters: ConfigTable(values, path: "task"))
                return nil
            } catch { return error }
        }
        #expect(failure("pendulum", ["max_torqe": .float(1)])?.key == "task.max_torqe")
        #expect(failure("pendulum", ["mass": .float(-1)])?.reason.contains("> 0") == true)
        #expect(failure("pendulum", ["dt": .float(.nan)])?.key == "task.dt")
        #expect(failure("pendulum", ["dt": .string("fast")])?.reason.contains("got a string") == true)
        // a finite Double that would be an infinite Float (found by fuzzing)
        #expect(failure("cartpole", ["max_force": .float(2.2e130)])?.key == "task.max_force")
        #expect(failure("mountain_car", ["min_position": .float(1), "max_position": .float(0)])?.key == "task.max_position")
        #expect(failure("unicycle", ["min_speed": .float(2), "max_speed": .float(1)])?.key == "task.min_speed")
        #expect(failure("unicycle", ["obstacles": .array([.table(["x": .float(1), "y": .float(1)])])])?.key == "task.obstacles[0].radius")
        #expect(failure("walker", [:])?.reason.contains("unknown task") == true)
    }

    @Test func unicycleObstaclesComeFromConfiguration() throws {
        let obstacles: ConfigValue = .array([.table(["x": .float(1), "y": .float(2), "radius": .float(0.5)])])
        let task = try TaskRegistry.make(name: "unicycle", parameters: ConfigTable(["obstacles": obstacles, "goal": .array([.integer(3), .float(1.5)])], path: "task"))
        let cost = try #require(task.cost as? UnicycleCost)
        #expect(cost.obstacles == [Obstacle(x: 1, y: 2, radius: 0.5)])
        #expect(cost.goalX == 3 && cost.goalY == 1.5)
    }
}
