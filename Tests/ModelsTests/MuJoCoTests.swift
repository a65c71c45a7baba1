import Foundation
import Models
import Testing

/// The MuJoCo backend on a small model of mpcd's own (Fixtures/mujoco): the state and action it
/// reads from the model, its cost terms, its refusals, and that a lane's rollout depends on
/// nothing but the lane. Agreement with Gymnasium's environments is checked end to end in
/// clients/python/tests/test_mujoco.py.
@Suite struct MuJoCoTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/mujoco").path

    func task(_ text: String, in folder: String = Self.folder) throws -> ControlTask {
        let values = try TOMLParser.parse(text)
        guard case let .table(table)? = values["task"] else { throw ConfigurationError(key: "task", reason: "missing") }
        let parameters = ConfigTable(table, path: "task")
        let name = try parameters.string("name", default: "mujoco")
        return try TaskRegistry.make(name: name, parameters: parameters, baseDirectory: folder)
    }

    func refusal(_ text: String) -> ConfigurationError? {
        do {
            _ = try task(text)
            return nil
        } catch let error as ConfigurationError { return error } catch { return ConfigurationError(key: "?", reason: "\(error)") }
    }

    static let base = """
        [task]
        name = "mujoco"
        model = "pendulum_on_a_cart.xml"
        frame_skip = 2

        """

    @Test func theStateAndActionComeFromTheModel() throws {
        let t = try task(Self.base + "[[task.cost]]\nquantity = \"qpos\"\nname = \"hinge\"\n")
        let d = t.dynamics
        #expect(d.stateNames == ["qpos:slider", "qpos:hinge", "qvel:slider", "qvel:hinge"])
        #expect(d.actionNames == ["push"])
        #expect(d.actionLowerBounds == [-1] && d.actionUpperBounds == [1])
        #expect(d.dt == 0.02)
        // the pole falls, the cart does not move without a push: physics, one step of 2 x 0.01 s
        let (next, _) = t.step(state: [0, 0.3, 0, 0], action: [0])
        #expect(next[1] > 0.3 && next[3] > 0)
        let (pushed, _) = t.step(state: [0, 0, 0, 0], action: [1])
        #expect(pushed[0] > 0 && pushed[2] > 0)
    }

    @Test func costTermsMeasureWhatTheyName() throws {
        func cost(_ term: String, state: [Float], action: [Float] = [0]) throws -> Float {
            try task(Self.base + "[[task.cost]]\n" + term).step(state: state, action: action).cost
        }
        #expect(abs(try cost("quantity = \"qpos\"\nname = \"hinge\"\nweight = 2\n", state: [0, 0.5, 0, 0]) - 0.5) < 1e-6)
        #expect(abs(try cost("quantity = \"qvel\"\nname = \"slider\"\nnorm = \"linear\"\nweight = -1\n", state: [0, 0, 3, 0]) + 3) < 1e-6)
        #expect(abs(try cost("quantity = \"ctrl\"\nweight = 0.5\n", state: [0, 0, 0, 0], action: [0.4]) - 0.08) < 1e-6)
        // the tip of a pole tilted by 0.5 rad about y: x = 0.5 sin 0.5, z = 0.5 cos 0.5
        #expect(abs(try cost("quantity = \"site_position\"\nname = \"tip\"\naxis = \"z\"\nnorm = \"linear\"\n", state: [0, 0.5, 0, 0]) - 0.5 * cos(0.5)) < 1e-5)
        #expect(abs(try cost("quantity = \"sensor\"\nname = \"tip_position\"\ncomponent = 0\nnorm = \"linear\"\n", state: [0.2, 0.5, 0, 0]) - (0.2 + 0.5 * sin(0.5))) < 1e-5)
        #expect(abs(try cost("quantity = \"site_distance\"\nname = \"tip\"\npoint = [0, 0, 0]\nnorm = \"linear\"\n", state: [0.3, 0, 0, 0]) - (0.09 + 0.25 as Float).squareRoot()) < 1e-5)
        #expect(abs(try cost("quantity = \"qpos\"\nname = \"hinge\"\nnorm = \"smooth_absolute\"\nparameter = 0.1\n", state: [0, 1, 0, 0]) - ((1.01 as Float).squareRoot() - 0.1)) < 1e-5)
        // a bounds term: zero inside, weight x (distance outside)^2 outside
        #expect(try cost("quantity = \"qpos\"\nname = \"hinge\"\n", state: [0, 0, 0, 0]) == 0)
        let bounds = Self.base + "[[task.cost]]\nquantity = \"ctrl\"\nweight = 0\n[[task.bounds]]\nquantity = \"qpos\"\nname = \"hinge\"\nmin = -0.2\nmax = 0.2\nweight = 100\n"
        #expect(try task(bounds).step(state: [0, 0.1, 0, 0], action: [0]).cost == 0)
        #expect(abs(try task(bounds).step(state: [0, 0.5, 0, 0], action: [0]).cost - 9) < 1e-4)
    }

    @Test func mistakesAreRefusedNamingTheTermAndTheField() {
        let cases: [(String, String, String)] = [
            ("[task]\nname = \"mujoco\"\n", "task.model", "required"),
            ("[task]\nname = \"mujoco\"\nmodel = \"missing.xml\"\n", "task.model", "No such file"),
            ("[task]\nname = \"mujoco\"\nmodel = \"broken.xml\"\n", "task.model", "MuJoCo cannot load it"),
            ("[task]\nname = \"mujoco\"\nmodel = \"unlimited.xml\"\n[[task.cost]]\nquantity = \"ctrl\"\n", "task.model", "has no ctrlrange"),
            (Self.base, "task.cost", "at least one"),
            (Self.base + "[[task.cost]]\nquantity = \"qpos\"\nname = \"hinj\"\n", "task.cost[0].name", "no joint named \"hinj\"; its joints: slider, hinge"),
            (Self.base + "[[task.cost]]\nquantity = \"ctrl\"\n[[task.cost]]\nquantity = \"sensor\"\nname = \"speed\"\n", "task.cost[1].name", "no sensor named"),
            (Self.base + "[[task.cost]]\nquantity = \"site_position\"\nname = \"tip\"\naxis = \"w\"\n", "task.cost[0].axis", "unknown value"),
            (Self.base + "[[task.cost]]\nquantity = \"velocity\"\n", "task.cost[0].quantity", "unknown value"),
            (Self.base + "[[task.cost]]\nquantity = \"qpos\"\nname = \"hinge\"\nnorm = \"cubic\"\n", "task.cost[0].norm", "unknown value"),
            (Self.base + "[[task.cost]]\nquantity = \"qpos\"\nname = \"hinge\"\nweight = inf\n", "task.cost[0].weight", "finite"),
            (Self.base + "[[task.cost]]\nquantity = \"qpos\"\nname = \"hinge\"\ntraget = 1\n", "task.cost[0].traget", "unknown key"),
            (Self.base + "[[task.cost]]\nquantity = \"ctrl\"\nterminal = true\n", "task.cost[0].terminal", "no last state"),
            (Self.base + "[[task.cost]]\nquantity = \"sensor\"\nname = \"angle\"\ncomponent = 3\n", "task.cost[0].component", "[0, 0]"),
            (Self.base + "[[task.cost]]\nquantity = \"ctrl\"\n[[task.bounds]]\nquantity = \"qpos\"\nname = \"hinge\"\n", "task.bounds[0].min", "min, max or both"),
            (Self.base + "[[task.cost]]\nquantity = \"ctrl\"\n[[task.bounds]]\nquantity = \"qpos\"\nname = \"hinge\"\nmin = 1\nmax = 0\n", "task.bounds[0].max", "at least min"),
            ("[task]\nname = \"mujoco\"\nmodel = \"pendulum_on_a_cart.xml\"\nframe_skip = 0\n[[task.cost]]\nquantity = \"ctrl\"\n", "task.frame_skip", "[1, 10000]"),
        ]
        for (text, key, reason) in cases {
            let error = refusal(text)
            #expect(error?.key == key, "\(key): \(String(describing: error))")
            #expect(error?.reason.contains(reason) == true, "\(key): \(error?.reason ?? "accepted")")
        }
    }

    /// A model whose compilation exhausts MuJoCo's stack: MuJoCo's fatal error, which would end the
    /// process, becomes a refusal with its message.
    @Test func aFatalMuJoCoErrorIsARefusalNotAnExit() {
        let error = refusal("[task]\nname = \"mujoco\"\nmodel = \"stack_overflow.xml\"\n[[task.cost]]\nquantity = \"ctrl\"\n")
        #expect(error?.reason.contains("Stack overflow") == true, "\(String(describing: error))")
    }

    /// The same lanes give the same next states whichever simulation state steps them, in whatever
    /// order, on one thread or several: a lane's rollout depends on nothing but the lane.
    @Test func aLaneDependsOnlyOnItself() throws {
        let t = try task(Self.base + "[[task.cost]]\nquantity = \"site_distance\"\nname = \"tip\"\npoint = [0, 0, 1]\n")
        let lanes = 64, n = 4
        func run(chunks: Int) -> [Float] {
            var states = [Float](repeating: 0, count: n * lanes), actions = [Float](repeating: 0, count: lanes)
            for k in 0..<lanes {
                states[k] = Float(k) * 0.01
                states[lanes + k] = sin(Float(k))
                actions[k] = cos(Float(k))
            }
            states.withUnsafeMutableBufferPointer { s in
                actions.withUnsafeMutableBufferPointer { a in
                    // each worker writes its own lanes only
                    nonisolated(unsafe) let stateView = BatchView(base: s.baseAddress!, stride: lanes, lanes: lanes)
                    nonisolated(unsafe) let actionView = BatchView(base: a.baseAddress!, stride: lanes, lanes: lanes)
                    let size = lanes / chunks
                    DispatchQueue.concurrentPerform(iterations: chunks) { c in
                        for _ in 0..<5 { t.dynamics.step(states: stateView.slice(start: c * size, count: size), actions: actionView.slice(start: c * size, count: size)) }
                    }
                }
            }
            return states
        }
        let one = run(chunks: 1)
        #expect(one.allSatisfy { $0.isFinite })
        #expect(run(chunks: 8) == one)
        #expect(run(chunks: 2) == one)
    }

    /// Cost terms that read every stage of the model: positions, velocities, sensors, the state
    /// itself and the controls.
    static let everyStage = """
            [[task.cost]]
            quantity = "site_position"
            name = "tip"
            axis = "z"
            target = 0.5
            [[task.cost]]
            quantity = "body_velocity"
            name = "pole"
            axis = "x"
            weight = 0.3
            [[task.cost]]
            quantity = "sensor"
            name = "angle"
            norm = "smooth_absolute"
            [[task.cost]]
            quantity = "qpos"
            name = "slider"
            weight = 0.5
            [[task.cost]]
            quantity = "ctrl"
            weight = 0.1

        """

    /// The planner rolls MuJoCo lanes a whole sequence at a time (``MuJoCoRollout``): the same
    /// discounted running cost and final states as the step-by-step loop, which stores every lane to
    /// floats at every step (hence a tolerance, not equality).
    @Test func theSequenceRolloutAgreesWithTheStepByStepLoop() throws {
        let t = try task(Self.base + Self.everyStage)
        let sequence = try #require(t.sequenceRollout)
        let lanes = 32, n = 4, horizon = 12, gamma: Float = 0.9
        var start = [Float](repeating: 0, count: n * lanes), actions = [Float](repeating: 0, count: horizon * lanes)
        for k in 0..<lanes {
            start[k] = Float(k % 7) * 0.05 - 0.15
            start[lanes + k] = sin(Float(k)) * 0.8
            start[3 * lanes + k] = cos(Float(k))
            for s in 0..<horizon { actions[s * lanes + k] = sin(Float(k * horizon + s) * 1.7) }
        }
        var stepped = start, rolled = start
        var steppedCosts = [Float](repeating: 0, count: lanes), rolledCosts = [Float](repeating: 0, count: lanes)
        var stepCost = [Float](repeating: 0, count: lanes)
        actions.withUnsafeMutableBufferPointer { a in
            stepped.withUnsafeMutableBufferPointer { s in
                let states = BatchView(base: s.baseAddress!, stride: lanes, lanes: lanes)
                for step in 0..<horizon {
                    let actionView = BatchView(base: a.baseAddress! + step * lanes, stride: lanes, lanes: lanes)
                    stepCost.withUnsafeMutableBufferPointer { c in
                        c.update(repeating: 0)
                        t.cost.addRunningCost(states: states, actions: actionView, into: c.baseAddress!)
                    }
                    for k in 0..<lanes { steppedCosts[k] += pow(gamma, Float(step)) * stepCost[k] }
                    t.dynamics.step(states: states, actions: actionView)
                }
            }
            rolled.withUnsafeMutableBufferPointer { s in
                rolledCosts.withUnsafeMutableBufferPointer { c in
                    sequence.rollOut(states: BatchView(base: s.baseAddress!, stride: lanes, lanes: lanes), live: lanes, actions: a.baseAddress!, actionStride: lanes,
                                     horizon: horizon, discount: gamma, into: c.baseAddress!)
                }
            }
        }
        #expect(rolled != start)
        for k in 0..<lanes {
            #expect(abs(rolledCosts[k] - steppedCosts[k]) <= 1e-3 * max(1, abs(steppedCosts[k])), "lane \(k): \(rolledCosts[k]) against \(steppedCosts[k])")
        }
        for (i, (a, b)) in zip(rolled, stepped).enumerated() {
            #expect(abs(a - b) <= 1e-3 * max(1, abs(b)), "state value \(i): \(a) against \(b)")
        }
    }

    /// Split steps (the cost reads what the step's first half computes) roll out exactly as a
    /// forward pass for the cost followed by whole steps: the same states and costs (as floats,
    /// the lanes' precision), with every integrator the library has (RK4's rest mpcd spells out,
    /// mj_step2 being Euler), lanes pressed against the slider's limit among them.
    @Test(arguments: ["Euler", "RK4", "implicit"]) func splitStepsAreWholeSteps(integrator: String) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("mpcd-split-\(integrator)-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let xml = try String(contentsOfFile: Self.folder + "/pendulum_on_a_cart.xml", encoding: .utf8)
            .replacingOccurrences(of: "<option timestep=\"0.01\"/>", with: "<option timestep=\"0.01\" integrator=\"\(integrator)\"/>")
        #expect(xml.contains("integrator=\"\(integrator)\""))
        try xml.write(to: folder.appendingPathComponent("model.xml"), atomically: true, encoding: .utf8)
        let t = try task(Self.base.replacingOccurrences(of: "pendulum_on_a_cart.xml", with: "model.xml") + Self.everyStage, in: folder.path)
        let split = try #require(t.sequenceRollout as? MuJoCoRollout)
        #expect(split.splitSteps)
        let whole = MuJoCoRollout(dynamics: split.dynamics, cost: split.cost, splitSteps: false)
        let lanes = 16, n = 4, horizon = 25
        var start = [Float](repeating: 0, count: n * lanes), actions = [Float](repeating: 0, count: horizon * lanes)
        for k in 0..<lanes {
            // a quarter of the lanes start at the slider's end (its range is +-2), pushed outwards
            start[k] = k % 4 == 0 ? 1.95 : Float(k % 5) * 0.1 - 0.2
            start[lanes + k] = sin(Float(k)) * 2
            start[2 * lanes + k] = cos(Float(3 * k))
            start[3 * lanes + k] = cos(Float(k)) * 4
            for s in 0..<horizon { actions[s * lanes + k] = k % 4 == 0 ? 1 : 1.5 * sin(Float(k * horizon + s) * 0.9) }
        }
        func roll(_ rollout: MuJoCoRollout) -> (states: [Float], costs: [Float]) {
            var states = start, costs = [Float](repeating: 0, count: lanes)
            actions.withUnsafeMutableBufferPointer { a in
                states.withUnsafeMutableBufferPointer { s in
                    costs.withUnsafeMutableBufferPointer { c in
                        rollout.rollOut(states: BatchView(base: s.baseAddress!, stride: lanes, lanes: lanes), live: lanes, actions: a.baseAddress!,
                                        actionStride: lanes, horizon: horizon, discount: 0.95, into: c.baseAddress!)
                    }
                }
            }
            return (states, costs)
        }
        let (splitStates, splitCosts) = roll(split), (wholeStates, wholeCosts) = roll(whole)
        #expect(splitStates != start && splitCosts.allSatisfy { $0.isFinite && $0 > 0 })
        // the limit held the pushed lanes (a constraint was active): near the end, not beyond it
        #expect((0..<lanes).filter { $0 % 4 == 0 }.allSatisfy { splitStates[$0] > 1.8 && splitStates[$0] < 2.1 }, "\(splitStates[..<lanes])")
        #expect(splitStates == wholeStates)
        #expect(splitCosts == wholeCosts)
    }

    /// MuJoCo resets a simulation whose state blows up (a value NaN or beyond 1e10) to the model's
    /// initial state and carries on: a diverged rollout would look like a calm one at rest. mpcd
    /// makes such a lane invalid (NaN state, NaN cost: no weight in the plan).
    @Test func aDivergedLaneIsInvalidNotReset() throws {
        let t = try task(Self.base + "[[task.cost]]\nquantity = \"qpos\"\nname = \"hinge\"\n")
        let (next, cost) = t.step(state: [0, 0.1, 0, 1e11], action: [0])
        #expect(next.allSatisfy { $0.isNaN }, "\(next)")
        #expect(cost.isFinite)  // the cost of the state it started from
        var state: [Float] = [0, 0.1, 0, 1e11] + [Float](repeating: 0, count: 4 * 7), actions = [Float](repeating: 0, count: 8 * 3)
        state = (0..<4).flatMap { c in [state[c]] + [Float](repeating: 0.1, count: 7) }
        var costs = [Float](repeating: 0, count: 8)
        state.withUnsafeMutableBufferPointer { s in
            actions.withUnsafeMutableBufferPointer { a in
                costs.withUnsafeMutableBufferPointer { c in
                    t.sequenceRollout!.rollOut(states: BatchView(base: s.baseAddress!, stride: 8, lanes: 8), live: 8, actions: a.baseAddress!, actionStride: 8,
                                               horizon: 3, discount: 1, into: c.baseAddress!)
                }
            }
        }
        #expect(costs[0].isNaN && (0..<4).allSatisfy { state[$0 * 8].isNaN })
        #expect(costs[1...].allSatisfy { $0.isFinite } && (0..<4).allSatisfy { state[$0 * 8 + 1].isFinite })
    }
}
