import Foundation
import Models
import Planners
import Testing

@Suite struct ValueIterationTests {
    /// Fitted value iteration on the point mass, a linear system with a quadratic cost: the
    /// value-iteration target (the planner's minimum over H-step costs plus the learned value)
    /// must come to the LQR cost-to-go x'Px of the same (discounted) problem, which no finite
    /// horizon alone reaches.
    @Test func pointMassTargetsConvergeToTheLQRCostToGo() throws {
        let task = try TaskRegistry.make(name: "point_mass")
        let gamma: Float = 0.9
        let (p, gain) = ControlTests.lqr(dt: 0.1, q: (1, 0.1), r: 0.1, discount: Double(gamma))
        var planner = PlannerConfiguration()
        planner.discount = gamma
        planner.samples = 512
        planner.initialStd = 0.3
        planner.horizon = 10
        planner.temperature = 0.01
        planner.stdStep = 0.5  // let the std shrink around the optimum: a sharper minimum
        var settings = ValueIteration.Settings()
        settings.rounds = 30
        settings.statesPerRound = 512
        settings.closedLoopShare = 0
        settings.stateLower = [-1, -0.8]
        settings.stateUpper = [1, 0.8]
        settings.targetIterations = 6
        settings.targetRate = 0.7
        settings.epochsPerRound = 30
        settings.batchSize = 128
        settings.learningRate = 3e-3
        settings.seed = 3
        let learner = ValueIteration(task: task, planner: planner, network: ValueNetwork(task: task, hidden: [32, 32], seed: 3), settings: settings)
        let check = try MirrorDescentPlanner(task: task, configuration: planner)
        // states where the LQR action stays inside the +-2 bound, away from the origin (where
        // relative errors mean nothing)
        var states: [[Float]] = []
        var x: UInt64 = 11
        while states.count < 20 {
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let s: [Float] = [Float((x >> 11) % 1000) / 1000 * 1.6 - 0.8, Float((x >> 31) % 1000) / 1000 * 1.0 - 0.5]
            let u = abs(gain[0] * Double(s[0]) + gain[1] * Double(s[1]))
            if u < 1.5, abs(s[0]) > 0.3 { states.append(s) }
        }
        func worstRelativeError() throws -> Double {
            try check.installValue(learner.network)
            var worst = 0.0
            for s in states {
                check.reset()
                let plan = check.plan(state: s, iterations: settings.targetIterations)
                let target = Double(min(check.lastCostSoftMinimum(temperature: 0), plan.planCost))
                let optimum = Double(s[0]) * (p[0][0] * Double(s[0]) + p[0][1] * Double(s[1])) + Double(s[1]) * (p[1][0] * Double(s[0]) + p[1][1] * Double(s[1]))
                worst = max(worst, abs(target - optimum) / optimum)
            }
            return worst
        }
        for _ in 0..<3 { try learner.runRound() }
        let early = try worstRelativeError()
        while learner.completedRounds < settings.rounds { try learner.runRound() }
        let late = try worstRelativeError()
        #expect(late <= 0.05, "worst relative error of the value-iteration target against x'Px after \(settings.rounds) rounds: \(late)")
        // it is value iteration doing this, not the horizon: after three rounds it was far off
        #expect(early > 2 * late, "after 3 rounds \(early), after \(settings.rounds) \(late)")
    }

    /// J = Σ_t γ^t c_t + γ^H c_T, by Horner's rule for a mild discount and step by step for one so
    /// strong that γ^-H would overflow: both against the sum done by hand.
    @Test func discountedCostIsTheDiscountedSum() throws {
        let task = try TaskRegistry.make(name: "point_mass", parameters: ConfigTable(["terminal_pp": .float(3)], path: "task"))
        for gamma: Float in [1, 0.9, 0.01] {
            var configuration = PlannerConfiguration()
            configuration.samples = 64
            configuration.horizon = 10
            configuration.discount = gamma
            let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
            let start: [Float] = [1, -0.5]
            let plan = planner.plan(state: start)
            var state = start, total = 0.0, weight = 1.0
            for t in 0..<10 {
                let (next, cost) = task.step(state: state, action: [plan.sequence.mean[t]])
                total += weight * Double(cost)
                weight *= Double(gamma)
                state = next
            }
            total += weight * 3 * Double(state[0] * state[0])
            #expect(abs(Double(plan.planCost) - total) <= 1e-4 * max(1, abs(total)), "gamma \(gamma): \(plan.planCost) vs \(total)")
        }
    }

    @Test func softMinimumLiesBetweenTheMinimumAndTheMean() throws {
        let task = try TaskRegistry.make(name: "pendulum")
        var configuration = PlannerConfiguration()
        configuration.samples = 64
        configuration.horizon = 8
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        let plan = planner.plan(state: [3, 0])
        let hard = planner.lastCostSoftMinimum(temperature: 0), soft = planner.lastCostSoftMinimum(temperature: 1)
        let wide = planner.lastCostSoftMinimum(temperature: 1e6)
        #expect(hard == plan.iterations.last!.bestCost)
        #expect(hard < soft)
        #expect(abs(wide - plan.iterations.last!.meanCost) <= 1e-3 * abs(plan.iterations.last!.meanCost))
    }

    @Test func aValueFileRoundTripsAndBadOnesAreRefusedWithTheReason() throws {
        let pendulum = try TaskRegistry.make(name: "pendulum")
        var value = ValueNetwork(task: pendulum, hidden: [8], scale: 12.5, seed: 1)
        value.version = 4
        let decoded = try ValueNetwork.decode(value.encode(), for: pendulum, path: "v")
        #expect(decoded == value)
        let workspace = value.makeWorkspace(capacity: 1)
        #expect(value.value(features: [1, 0, 0], workspace: workspace) == decoded.value(features: [1, 0, 0], workspace: workspace))
        // a policy is not a value, and a value is not a policy
        let policy = AmortisedNetwork(kind: .policy, task: pendulum, hidden: [8])
        #expect(throws: AmortisedNetwork.LoadError(path: "p", reason: "__metadata__ kind is \"policy\"; expected value")) {
            try ValueNetwork.decode(policy.encode(), for: pendulum, path: "p")
        }
        #expect(throws: AmortisedNetwork.LoadError(path: "v", reason: "__metadata__ kind is \"value\"; expected policy or plan")) {
            try AmortisedNetwork.decode(value.encode(), for: pendulum, path: "v")
        }
        #expect(throws: AmortisedNetwork.LoadError(path: "v", reason: "made for task pendulum, but the task is mountain_car")) {
            try ValueNetwork.decode(value.encode(), for: try TaskRegistry.make(name: "mountain_car"), path: "v")
        }
        var file = try SafeTensors.decode(value.encode())
        file.metadata["value_scale"] = "-1"
        #expect(throws: AmortisedNetwork.LoadError(path: "v", reason: "__metadata__ value_scale must be a positive number, got \"-1\"")) {
            try ValueNetwork.decode(SafeTensors.encode(file), for: pendulum, path: "v")
        }
    }

    /// The lane-blocked forward pass the planner uses for a value gives what the row-wise (sgemm)
    /// pass gives, for both activations and widths that are not multiples of four or eight.
    @Test func laneBlockedForwardMatchesTheRowWiseOne() throws {
        for activation in MLPArchitecture.Activation.allCases {
            let mlp = MLP(architecture: MLPArchitecture(inputs: 3, hidden: [5, 7], outputs: 1, activation: activation), seed: 9)
            let lanes = 24, workspace = MLPWorkspace(architecture: mlp.architecture, capacity: lanes)
            let columns = UnsafeMutablePointer<Float>.allocate(capacity: 3 * lanes), out = UnsafeMutablePointer<Float>.allocate(capacity: lanes)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: mlp.laneScratchCount)
            defer { columns.deallocate(); out.deallocate(); scratch.deallocate() }
            for k in 0..<lanes {
                for i in 0..<3 {
                    let x = Float((k * 7 + i * 13) % 17) / 8 - 1
                    columns[i * lanes + k] = x
                    workspace.input[k * 3 + i] = x
                }
            }
            mlp.forward(rows: lanes, workspace: workspace)
            mlp.forwardLanes(lanes: lanes, input: columns, output: out, scratch: scratch)
            for k in 0..<lanes { #expect(abs(out[k] - workspace.rawMean[k]) <= 1e-5, "\(activation) lane \(k): \(out[k]) vs \(workspace.rawMean[k])") }
        }
    }

    /// The batched features the value sees at the end of the rollouts are the task's own.
    @Test func batchedFeaturesMatchFeaturesOfEachState() throws {
        for name in TaskRegistry.builtInNames {
            let task = try TaskRegistry.make(name: name)
            let d = task.dynamics, n = d.stateDimension, lanes = 16, width = d.featureNames.count
            var seed: UInt64 = 5
            let states = (0..<lanes).map { _ in d.randomState { seed = seed &* 6_364_136_223_846_793_005 &+ 1; return Float(seed >> 40) / Float(1 << 24) } }
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: n * lanes), rows = UnsafeMutablePointer<Float>.allocate(capacity: width * lanes)
            defer { buffer.deallocate(); rows.deallocate() }
            for k in 0..<lanes { for c in 0..<n { buffer[c * lanes + k] = states[k][c] } }
            d.writeFeatures(states: BatchView(base: buffer, stride: lanes, lanes: lanes), into: rows)
            for k in 0..<lanes {
                let expected = d.features(of: states[k])
                for c in 0..<width { #expect(abs(rows[c * lanes + k] - expected[c]) <= 1e-5 * max(1, abs(expected[c])), "\(name) lane \(k) feature \(c)") }
            }
        }
    }
}
