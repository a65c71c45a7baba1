import Foundation
import Models
import Planners
import Testing

@Suite struct DeterminismTests {
    func plans(threads: Int, seed: UInt64, samples: Int = 1000) throws -> [[Float]] {
        var configuration = PlannerConfiguration()
        configuration.samples = samples  // not a multiple of 16: exercises the padding
        configuration.threads = threads
        configuration.parallelThreshold = 0  // split even this small problem
        configuration.seed = seed
        let task = try TaskRegistry.make(name: "pendulum")
        // as many parts as asked for, whatever the cores of the machine running the test
        let pool = threads > 1 ? SpinningPool(threads: threads, cores: threads) : nil
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration, workers: pool)
        var state: [Float] = [3, 0.5]
        var out: [[Float]] = []
        for _ in 0..<20 {
            let plan = planner.plan(state: state)
            out.append(plan.sequence.mean + plan.sequence.std)
            state = task.step(state: state, action: plan.action).next
        }
        return out
    }

    @Test func sameSeedGivesBitIdenticalPlans() throws {
        #expect(try plans(threads: 1, seed: 7) == plans(threads: 1, seed: 7))
    }

    @Test func threadCountDoesNotChangeThePlan() throws {
        #expect(try plans(threads: 1, seed: 7) == plans(threads: 2, seed: 7))
        #expect(try plans(threads: 1, seed: 3, samples: 4096) == plans(threads: 4, seed: 3, samples: 4096))
    }

    @Test func differentSeedsGiveDifferentPlans() throws {
        #expect(try plans(threads: 1, seed: 7) != plans(threads: 1, seed: 8))
    }

    /// Planners come and go with sessions: each one's rollout workers must start on the first plan
    /// (even one posted before the thread runs) and be joined when the planner goes away.
    @Test func plannerWorkersStartAtOnceAndAreJoined() throws {
        func threadCount() throws -> Int { try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count }
        var configuration = PlannerConfiguration()
        configuration.threads = 3
        configuration.parallelThreshold = 0
        let task = try TaskRegistry.make(name: "pendulum")
        let reference = try MirrorDescentPlanner(task: task, configuration: configuration).plan(state: [3, 0.5]).action
        let before = try threadCount()
        for _ in 0..<40 {
            let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
            #expect(planner.plan(state: [3, 0.5]).action == reference)
        }
        // 40 leaked planners would leave 80 threads; other tests running alongside come and go
        #expect(try threadCount() < before + 20)
    }

    /// The daemon's sessions share one pool: planners planning at once, from as many threads,
    /// each get the plans they get alone (whoever finds the workers busy runs every part itself).
    @Test func plannersSharingOnePoolPlanAsTheyDoAlone() throws {
        var configuration = PlannerConfiguration()
        configuration.threads = 2
        configuration.parallelThreshold = 0
        configuration.samples = 2048
        let task = try TaskRegistry.make(name: "pendulum")
        let starts: [[Float]] = (0..<8).map { i in [Float(i) - 3.5, Float(i % 3) - 1] }
        @Sendable func trajectory(_ planner: MirrorDescentPlanner, from start: [Float]) -> [Float] {
            var state = start, actions: [Float] = []
            for _ in 0..<50 {
                let action = planner.plan(state: state).action
                actions += action
                state = task.step(state: state, action: action).next
            }
            return actions
        }
        let alone = try starts.enumerated().map { i, start in
            var c = configuration
            c.seed = UInt64(i)
            return trajectory(try MirrorDescentPlanner(task: task, configuration: c), from: start)
        }
        let pool = SpinningPool(threads: 2)
        let planners = try starts.indices.map { i in
            var c = configuration
            c.seed = UInt64(i)
            return try MirrorDescentPlanner(task: task, configuration: c, workers: pool)
        }
        let shared = Results(count: starts.count)
        DispatchQueue.concurrentPerform(iterations: starts.count) { i in
            shared.set(i, trajectory(planners[i], from: starts[i]))
        }
        #expect(shared.values == alone)
    }
}

@Suite struct NoiseTests {
    @Test func noiseIsStandardNormalAndFreshEveryIteration() {
        let n = 1 << 16
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n), b = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { a.deallocate(); b.deallocate() }
        GaussianNoise.fill(a, rows: 1, rowLength: n, start: 0, count: n, key: NoiseKey(seed: 1, plan: 1, iteration: 0))
        GaussianNoise.fill(b, rows: 1, rowLength: n, start: 0, count: n, key: NoiseKey(seed: 1, plan: 1, iteration: 1))
        var mean = 0.0, square = 0.0, fourth = 0.0, beyond2 = 0, same = 0, correlation = 0.0
        for i in 0..<n {
            let x = Double(a[i])
            mean += x
            square += x * x
            fourth += x * x * x * x
            if abs(x) > 2 { beyond2 += 1 }
            if a[i] == b[i] { same += 1 }
            correlation += x * Double(b[i])
        }
        mean /= Double(n)
        square /= Double(n)
        fourth /= Double(n)
        // standard errors at n = 65536: mean 0.004, variance 0.0055, kurtosis ~0.04
        #expect(abs(mean) < 0.02)
        #expect(abs(square - 1) < 0.03)
        #expect(abs(fourth - 3) < 0.2)
        #expect(abs(Double(beyond2) / Double(n) - 0.0455) < 0.004)  // P(|z| > 2)
        #expect(same < 5)
        #expect(abs(correlation / Double(n)) < 0.02)
    }

    @Test func anySplitOfTheLanesGivesTheSameNumbers() {
        let rows = 3, length = 64
        let whole = UnsafeMutablePointer<Float>.allocate(capacity: rows * length), parts = UnsafeMutablePointer<Float>.allocate(capacity: rows * length)
        defer { whole.deallocate(); parts.deallocate() }
        let key = NoiseKey(seed: 9, plan: 2, iteration: 1)
        GaussianNoise.fill(whole, rows: rows, rowLength: length, start: 0, count: length, key: key)
        GaussianNoise.fill(parts, rows: rows, rowLength: length, start: 0, count: 16, key: key)
        GaussianNoise.fill(parts, rows: rows, rowLength: length, start: 16, count: 48, key: key)
        #expect(Array(UnsafeBufferPointer(start: whole, count: rows * length)) == Array(UnsafeBufferPointer(start: parts, count: rows * length)))
    }
}

@Suite struct LikelihoodTests {
    @Test func mppiWeighsByExponentiatedCost() {
        var costs: [Float] = [3, 1, 2, 1.5, 10, 1, 4, 2, 0.5]
        var weights = [Float](repeating: -1, count: costs.count), scratch = weights
        MPPILikelihood(temperature: 0.5).weigh(costs: &costs, count: costs.count, into: &weights, scratch: &scratch)
        for (c, w) in zip(costs, weights) {
            #expect(abs(w - exp(-(c - 0.5) / 0.5)) < 1e-6)
        }
    }

    @Test func cemKeepsExactlyTheElites() {
        var costs: [Float] = [5, 1, 3, 3, 3, 0, 9, 2]
        var weights = [Float](repeating: -1, count: costs.count), scratch = weights
        CEMLikelihood(elites: 4).weigh(costs: &costs, count: costs.count, into: &weights, scratch: &scratch)
        // 0, 1, 2 and the first of the tied 3s
        #expect(weights == [0, 1, 1, 0, 0, 1, 0, 1])
    }

    @Test func kthSmallestAgreesWithSorting() {
        var generator = SystemRandomNumberGenerator()
        for n in [1, 2, 7, 100, 1000] {
            let values = (0..<n).map { _ in Float(Int.random(in: -50...50, using: &generator)) }
            for k in [0, n / 2, n - 1] {
                var copy = values
                #expect(kthSmallest(&copy, count: n, k: k) == values.sorted()[k])
            }
        }
    }
}

/// A pendulum whose model returns NaN for large positive torques: an injected model fault.
struct FaultyPendulum: ForwardingDynamics {
    var inner: any BatchDynamics = PendulumDynamics()
    var faultAbove: Float
    func step(states: BatchView, actions: BatchView) {
        inner.step(states: states, actions: actions)
        for k in 0..<states.lanes where actions[component: 0][k] > faultAbove { states[component: 0][k] = .nan }
    }
}

@Suite struct PlannerBehaviourTests {
    let pendulum = try! TaskRegistry.make(name: "pendulum")

    @Test func nonFiniteRolloutsGetNoWeight() throws {
        let task = ControlTask(name: "faulty", dynamics: FaultyPendulum(faultAbove: 0.5), cost: PendulumCost())
        var configuration = PlannerConfiguration()
        configuration.iterations = 1
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        let plan = planner.plan(state: [0.5, 0])
        let d = try #require(plan.iterations.first)
        #expect(d.invalidSamples > 0 && d.invalidSamples < configuration.samples)
        #expect(d.bestCost.isFinite && d.meanCost.isFinite)
        #expect(plan.sequence.mean.allSatisfy { $0.isFinite })
        // every sequence with a torque above 0.5 anywhere was dropped, so the mean stays below it
        #expect(plan.sequence.mean.allSatisfy { $0 <= 0.5 })
    }

    @Test func allRolloutsNonFiniteLeavesThePlanUnchanged() throws {
        let task = ControlTask(name: "faulty", dynamics: FaultyPendulum(faultAbove: -10), cost: PendulumCost())
        var configuration = PlannerConfiguration()
        configuration.iterations = 2
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        let plan = planner.plan(state: [0.5, 0])
        #expect(plan.iterations.allSatisfy { $0.invalidSamples == configuration.samples })
        #expect(plan.failed)
        #expect(plan.sequence == plan.prior)
        #expect(plan.action.allSatisfy { $0.isFinite })
    }

    @Test func aPastDeadlineReturnsThePriorWithoutIterating() throws {
        let planner = try MirrorDescentPlanner(task: pendulum, configuration: PlannerConfiguration())
        _ = planner.plan(state: [1, 0])
        let plan = planner.plan(state: [1, 0], deadline: monotonicNanoseconds())
        #expect(plan.iterations.isEmpty)
        #expect(plan.sequence == plan.prior)
    }

    @Test func aDeadlineStopsIterationsEarly() throws {
        var configuration = PlannerConfiguration()
        configuration.iterations = 1000
        let planner = try MirrorDescentPlanner(task: pendulum, configuration: configuration)
        let start = monotonicNanoseconds()
        let plan = planner.plan(state: [1, 0], deadline: start + 5_000_000)
        #expect(plan.iterations.count >= 1 && plan.iterations.count < 1000)
    }

    /// A model whose step sleeps while `slow` is set: an iteration as slow as a busy machine makes one.
    final class Stall: @unchecked Sendable {
        var slow = false
    }

    struct StallingDynamics: ForwardingDynamics {
        let inner: any BatchDynamics
        let stall: Stall
        func step(states: BatchView, actions: BatchView) {
            if stall.slow { usleep(2_000) }
            inner.step(states: states, actions: actions)
        }
    }

    /// One iteration far slower than the budget (found on a loaded machine: after it, every plan of
    /// the session stopped before its first iteration and only replayed its warm start, for good).
    @Test func oneSlowIterationDoesNotStopLaterPlansFromIterating() throws {
        var configuration = PlannerConfiguration()
        configuration.iterations = 2
        configuration.samples = 64
        configuration.horizon = 16
        let stall = Stall()
        let task = ControlTask(name: "pendulum", dynamics: StallingDynamics(inner: pendulum.dynamics, stall: stall), cost: pendulum.cost)
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        stall.slow = true
        let slow = planner.plan(state: [1, 0], deadline: monotonicNanoseconds() + 20_000_000)
        #expect(slow.iterations.count == 1)  // 16 steps x 2 ms: past the deadline
        stall.slow = false
        // a budget of 20 ms, ample for an iteration without the stall (tens of microseconds)
        let later = (0..<12).map { _ in planner.plan(state: [1, 0], deadline: monotonicNanoseconds() + 20_000_000).iterations.count }
        #expect(later.suffix(4).allSatisfy { $0 == 2 }, "iterations per plan after the stall: \(later)")
    }

    @Test func warmStartIsThePreviousPlanShiftedByOneStep() throws {
        var configuration = PlannerConfiguration()
        configuration.iterations = 0 + 1
        let planner = try MirrorDescentPlanner(task: pendulum, configuration: configuration)
        let first = planner.plan(state: [1, 0])
        let second = planner.plan(state: [1, 0])
        #expect(Array(second.prior.mean.dropLast()) == Array(first.sequence.mean.dropFirst()))
        #expect(second.prior.mean.last == first.sequence.mean.last)
        planner.reset()
        #expect(planner.plan(state: [1, 0]).prior == planner.initialSequence)
    }

    struct ConstantPrior: ActionPrior {
        let sequence: GaussianSequence
        func prior(for state: [Float], warmStart: GaussianSequence?) -> GaussianSequence? { sequence }
    }

    @Test func aMalformedPriorIsRejectedAndTheWarmStartUsed() throws {
        let planner = try MirrorDescentPlanner(task: pendulum, configuration: PlannerConfiguration())
        planner.actionPrior = ConstantPrior(sequence: GaussianSequence(horizon: 3, constantMean: [.nan], constantStd: [1]))
        let plan = planner.plan(state: [0.1, 0])
        #expect(plan.priorProblem != nil)
        #expect(plan.prior == planner.initialSequence)
    }
}

@Suite struct ActionChangeCostTests {
    /// The plan's cost is the task's cost plus w Σ_t ((a_t - a_{t-1}) / h)^2, a_{-1} the action
    /// the previous plan sent: free at t = 0 for the first plan and after a reset.
    @Test func changesArePricedFromThePreviousPlansAction() throws {
        let task = try TaskRegistry.make(name: "point_mass", parameters: ConfigTable(["terminal_pp": .float(3)], path: "task"))
        var configuration = PlannerConfiguration()
        configuration.samples = 64
        configuration.horizon = 10
        configuration.iterations = 2
        configuration.actionChangeCost = 0.7
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        let half = Double(task.dynamics.actionUpperBounds[0] - task.dynamics.actionLowerBounds[0]) / 2
        func expectedCost(_ mean: [Float], from start: [Float], previous: Float?) -> Double {
            var state = start, total = 0.0
            for t in 0..<10 {
                let (next, cost) = task.step(state: state, action: [mean[t]])
                total += Double(cost)
                state = next
                if let before = t == 0 ? previous : mean[t - 1] {
                    let change = Double(mean[t] - before) / half
                    total += 0.7 * change * change
                }
            }
            return total + 3 * Double(state[0] * state[0])
        }
        let start: [Float] = [1, -0.5]
        let first = planner.plan(state: start)
        let next = task.step(state: start, action: first.action).next
        let second = planner.plan(state: next)
        planner.reset()
        let afterReset = planner.plan(state: next)
        for (plan, from, previous) in [(first, start, nil), (second, next, first.action[0]), (afterReset, next, nil)] as [(Plan, [Float], Float?)] {
            let expected = expectedCost(plan.sequence.mean, from: from, previous: previous)
            #expect(abs(Double(plan.planCost) - expected) <= 1e-4 * max(1, abs(expected)), "\(plan.planCost) vs \(expected)")
            // the prior's cost comes from the first iteration's sample 0 (the mean it started from)
            let expectedPrior = expectedCost(plan.prior.mean, from: from, previous: previous)
            #expect(abs(Double(plan.priorCost) - expectedPrior) <= 1e-4 * max(1, abs(expectedPrior)), "\(plan.priorCost) vs \(expectedPrior)")
        }
        // the second plan's first step is really priced against the first plan's action: leaving
        // that term out would miss its cost by far more than the tolerance
        let unanchored = expectedCost(second.sequence.mean, from: next, previous: nil)
        #expect(abs(Double(second.planCost) - unanchored) > 10 * 1e-4 * max(1, abs(unanchored)), "\(second.planCost) vs \(unanchored) without the anchor")
    }

    /// A large price on changes keeps successive plans' first actions closer together than none.
    @Test func aPriceOnChangesDampsStepToStepChatter() throws {
        let task = try TaskRegistry.make(name: "pendulum")
        func chatter(_ price: Float) throws -> Float {
            var configuration = PlannerConfiguration()
            configuration.samples = 64
            configuration.horizon = 15
            configuration.actionChangeCost = price
            let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
            var state: [Float] = [0.05, 0], previous: Float?, total: Float = 0
            for _ in 0..<100 {
                let action = planner.plan(state: state).action[0]
                if let previous { total += abs(action - previous) }
                previous = action
                state = task.step(state: state, action: [action]).next
            }
            return total / 99
        }
        let free = try chatter(0), priced = try chatter(20)
        #expect(priced < free / 2, "mean |a_t - a_t-1| \(priced) with the price, \(free) without")
    }
}

@Suite struct NeverWorseTests {
    /// With uniform weights (a huge λ) an update is a random step, often uphill: `never_worse`
    /// must then send the prior's mean, and every sequence it sends must cost no more, stepped
    /// through the model here, than the prior's mean did from the same state.
    @Test func aRefinementNeverCostsMoreThanTheProposalItStartedFrom() throws {
        let task = try TaskRegistry.make(name: "point_mass", parameters: ConfigTable(["terminal_pp": .float(3)], path: "task"))
        func cost(of mean: [Float], from start: [Float]) -> Double {
            var state = start, total = 0.0
            for t in 0..<10 {
                let (next, c) = task.step(state: state, action: [mean[t]])
                total += Double(c)
                state = next
            }
            return total + 3 * Double(state[0] * state[0])
        }
        func run(neverWorse: Bool) throws -> (uphill: Int, kept: Int) {
            var configuration = PlannerConfiguration()
            configuration.samples = 16
            configuration.horizon = 10
            configuration.temperature = 1e4
            configuration.neverWorse = neverWorse
            let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
            var state: [Float] = [1, -0.5], uphill = 0, kept = 0
            for _ in 0..<40 {
                let plan = planner.plan(state: state)
                let sent = cost(of: plan.sequence.mean, from: state), proposal = cost(of: plan.prior.mean, from: state)
                if sent > proposal + 1e-4 * max(1, abs(proposal)) { uphill += 1 }
                if plan.keptPrior { kept += 1 }
                state = task.step(state: state, action: plan.action).next
            }
            return (uphill, kept)
        }
        let free = try run(neverWorse: false), guarded = try run(neverWorse: true)
        #expect(free.uphill > 5, "the scenario must produce uphill updates to test anything: \(free.uphill)")
        #expect(guarded.uphill == 0)
        // it keeps the proposal when the update went uphill, and only then: downhill updates pass
        #expect(guarded.kept > 5 && guarded.kept < 35, "kept the proposal in \(guarded.kept) of 40 plans")
    }
}

@Suite struct BadConfigurationTests {
    let pendulum = try! TaskRegistry.make(name: "pendulum")

    func failure(_ edit: (inout PlannerConfiguration) -> Void) -> ConfigurationError? {
        var configuration = PlannerConfiguration()
        edit(&configuration)
        do {
            _ = try MirrorDescentPlanner(task: pendulum, configuration: configuration)
            return nil
        } catch { return error }
    }

    func failure(table: [String: ConfigValue]) -> ConfigurationError? {
        do {
            _ = try PlannerConfiguration(table: ConfigTable(table, path: "planner"))
            return nil
        } catch { return error }
    }

    @Test func everyBadFieldIsNamedWithItsRange() {
        let cases: [(ConfigurationError?, String, String)] = [
            (failure { $0.samples = 0 }, "planner.samples", "[1, 1048576]"),
            (failure { $0.samples = -5 }, "planner.samples", "[1, 1048576]"),
            (failure { $0.horizon = 0 }, "planner.horizon", "[1, 10000]"),
            (failure { $0.horizon = -1 }, "planner.horizon", "[1, 10000]"),
            (failure { $0.temperature = 0 }, "planner.temperature", "> 0"),
            (failure { $0.temperature = -1 }, "planner.temperature", "> 0"),
            (failure { $0.temperature = .nan }, "planner.temperature", "> 0"),
            (failure { $0.likelihood = "cem"; $0.elites = 2000 }, "planner.elites", "[1, 1024]"),
            (failure { $0.likelihood = "smc" }, "planner.likelihood", "mppi, cem"),
            (failure { $0.actionLowerBounds = [.nan] }, "planner.action_min", "finite"),
            (failure { $0.actionLowerBounds = [1]; $0.actionUpperBounds = [-1] }, "planner.action_min", "below"),
            (failure { $0.actionUpperBounds = [5] }, "planner.action_max", "outside"),
            (failure { $0.actionChangeCost = -1 }, "planner.action_change_cost", ">= 0"),
            (failure { $0.actionChangeCost = .nan }, "planner.action_change_cost", ">= 0"),
            (failure(table: ["action_change_cost": .float(-0.5)]), "planner.action_change_cost", ">= 0"),
            (failure { $0.priorStrength = 2 }, "planner.prior_strength", "[0, 1]"),
            (failure(table: ["prior_strength": .float(1.5)]), "planner.prior_strength", "[0, 1]"),
            (failure(table: ["prior_strength": .float(-0.5)]), "planner.prior_strength", "[0, 1]"),
            (failure(table: ["samples": .integer(0)]), "planner.samples", "[1, 1048576]"),
            (failure(table: ["horizon": .integer(-3)]), "planner.horizon", "[1, 10000]"),
            (failure(table: ["temperature": .float(0)]), "planner.temperature", "> 0"),
            (failure(table: ["likelihood": .string("smc")]), "planner.likelihood", "mppi, cem"),
            (failure(table: ["samples": .float(1.5)]), "planner.samples", "integer"),
            (failure(table: ["temprature": .float(1)]), "planner.temprature", "unknown key"),
            (failure { $0.maxRate = [1, 2] }, "planner.max_rate", "expected 1 numbers"),
            (failure { $0.maxRate = [0] }, "planner.max_rate", "> 0"),
            (failure { $0.maxRate = [.infinity] }, "planner.max_rate", "> 0"),
            (failure { $0.maxRateChange = [1] }, "planner.max_rate_change", "needs max_rate"),
            (failure { $0.noiseScale = [-1] }, "planner.noise_scale", "> 0"),
            (failure(table: ["max_rate": .array([.float(-1)])]), "planner.max_rate", "> 0"),
            (failure(table: ["noise_scale": .float(1)]), "planner.noise_scale", "array"),
        ]
        for (error, key, phrase) in cases {
            #expect(error?.key == key, "expected an error on \(key), got \(String(describing: error))")
            #expect(error?.reason.contains(phrase) == true, "\(key): \"\(error?.reason ?? "")\" should say \(phrase)")
        }
    }

    @Test func badTaskBoundsAreRejected() {
        for (name, table, key) in [
            ("pendulum", ["max_torque": ConfigValue.float(.nan)], "task.max_torque"),
            ("unicycle", ["min_speed": .float(1), "max_speed": .float(0.5)], "task.min_speed"),
            ("cartpole", ["max_force": .float(-1)], "task.max_force"),
            ("bicycle", [:], "task.name"),
        ] {
            #expect(throws: ConfigurationError.self) { try TaskRegistry.make(name: name, parameters: ConfigTable(table, path: "task")) }
            do { _ = try TaskRegistry.make(name: name, parameters: ConfigTable(table, path: "task")) } catch { #expect(error.key == key) }
        }
    }
}

/// Results written by concurrent workers, one slot each.
final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [[Float]]
    init(count: Int) { values = Array(repeating: [], count: count) }
    func set(_ i: Int, _ value: [Float]) { lock.lock(); values[i] = value; lock.unlock() }
}

/// One action, a state that never changes and a cost (λ / 2 s^2) Σ_t (a_t - c)^2: MPPI's
/// likelihood W = exp(-J / λ) is then a Gaussian N(c, s^2) in every step's action, so the targets
/// of the update have closed forms.
private struct StillDynamics: BatchDynamics {
    /// Wide enough that clamping never moves a moment the tests check.
    var bound: Float = 50
    var stateNames: [String] { ["x"] }
    var actionNames: [String] { ["u"] }
    var actionLowerBounds: [Float] { [-bound] }
    var actionUpperBounds: [Float] { [bound] }
    var dt: Float { 0.1 }
    var observationForms: [ObservationForm] { [ObservationForm(name: "state", components: ["x"])] }
    func step(states: BatchView, actions: BatchView) {}
    func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] { try stateFromObservationIdentity(observation) }
}

private struct QuadraticActionCost: BatchCost {
    /// Per step λ / (2 s^2); 0 makes every sequence cost the same.
    let weight: Float, centre: Float
    func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let u = actions[component: 0]
        for k in 0..<actions.lanes { costs[k] += weight * (u[k] - centre) * (u[k] - centre) }
    }
    func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {}
}

/// Hands out the given proposals in turn (the last one from then on).
private final class ProposalSequence: ActionPrior, @unchecked Sendable {
    var proposals: [GaussianSequence]
    init(_ proposals: [GaussianSequence]) { self.proposals = proposals }
    func prior(for state: [Float], warmStart: GaussianSequence?) -> GaussianSequence? {
        proposals.count > 1 ? proposals.removeFirst() : proposals[0]
    }
}

@Suite struct PriorInTheWeightsTests {
    static let horizon = 3

    func configuration(samples: Int, iterations: Int, strength: Float) -> PlannerConfiguration {
        var c = PlannerConfiguration()
        c.samples = samples
        c.horizon = Self.horizon
        c.iterations = iterations
        c.temperature = 0.5
        c.priorStrength = strength
        c.stdStep = 1
        c.includeMeanSample = false  // a point mass at the mean has no density to weigh
        c.minStd = 1e-4
        return c
    }

    func gaussian(_ mean: Float, _ std: Float) -> GaussianSequence {
        GaussianSequence(horizon: Self.horizon, constantMean: [mean], constantStd: [std])
    }

    func expectMoments(_ plan: Plan, mean: Float, std: Float, tolerance: Float, sourceLocation: SourceLocation = #_sourceLocation) {
        for t in 0..<Self.horizon {
            #expect(abs(plan.sequence.mean[t] - mean) < tolerance, "step \(t): mean \(plan.sequence.mean[t]), expected \(mean)", sourceLocation: sourceLocation)
            #expect(abs(plan.sequence.std[t] - std) < tolerance, "step \(t): std \(plan.sequence.std[t]), expected \(std)", sourceLocation: sourceLocation)
        }
    }

    /// Half the lanes from the prior p, half from the carried plan q: with every sequence equally
    /// good, the weighted moments must be those of the update's target q^(1-κ) p^κ, which the
    /// mixture recovers only through the importance ratios.
    @Test(arguments: [Float(0), 0.5, 1])
    func aMixtureProposalRecoversTheTargetsMoments(strength: Float) throws {
        var c = configuration(samples: 1 << 16, iterations: 1, strength: strength)
        c.priorStart = .carried
        c.priorSamples = 0.5
        c.initialStd = 2.0 / 50  // the carried plan's std: 2
        let task = ControlTask(name: "still", dynamics: StillDynamics(), cost: QuadraticActionCost(weight: 0, centre: 0))
        let planner = try MirrorDescentPlanner(task: task, configuration: c)
        let p = gaussian(1, 0.5)
        planner.actionPrior = ProposalSequence([gaussian(-1, 1), p])
        let first = planner.plan(state: [0])
        let qMean = first.sequence.mean[Self.horizon - 1], qStd: Float = 2  // q: the first plan carried forward
        let second = planner.plan(state: [0])
        #expect(second.prior == p)
        // the geometric mixture of two Gaussians: precisions and precision-weighted means mix
        let precision = (1 - strength) / (qStd * qStd) + strength / (0.25)
        let mean = ((1 - strength) * qMean / (qStd * qStd) + strength * 1 / 0.25) / precision
        expectMoments(second, mean: mean, std: 1 / precision.squareRoot(), tolerance: 0.05)
        // (without the ratios the fit would be the plain mixture's, mean near 0 and std near 1.8)
    }

    /// The same at a planner's real size, 32 steps, with the mean kept as sample 0 (the default):
    /// the ratios multiply over 32 dimensions, and q_i and p a fifth of a std apart per step still
    /// leave thousands of effective samples, enough to land on the target's moments.
    @Test(arguments: [Float(0), 1])
    func theRatiosHoldOverThirtyTwoStepsWithTheMeanSample(strength: Float) throws {
        var c = configuration(samples: 1 << 16, iterations: 1, strength: strength)
        c.horizon = 32
        c.priorStart = .carried
        c.priorSamples = 0.25
        c.includeMeanSample = true
        c.initialStd = 1.0 / 50  // the carried plan's std: 1, as the prior's
        let task = ControlTask(name: "still", dynamics: StillDynamics(), cost: QuadraticActionCost(weight: 0, centre: 0))
        let planner = try MirrorDescentPlanner(task: task, configuration: c)
        let p = GaussianSequence(horizon: 32, constantMean: [0], constantStd: [1])
        planner.actionPrior = ProposalSequence([GaussianSequence(horizon: 32, constantMean: [0.2], constantStd: [1]), p])
        let first = planner.plan(state: [0])
        let carried = first.sequence.shifted(by: 1, std: [1]).mean
        let second = planner.plan(state: [0])
        let ess = second.iterations[0].effectiveSampleSize
        #expect(ess > 2000, "effective sample size \(ess)")
        for t in 0..<32 {
            let mean = strength == 1 ? 0 : carried[t]
            #expect(abs(second.sequence.mean[t] - mean) < 0.05, "step \(t): mean \(second.sequence.mean[t]), expected \(mean)")
            #expect(abs(second.sequence.std[t] - 1) < 0.05, "step \(t): std \(second.sequence.std[t])")
        }
    }

    /// κ = 1 (the default): every iteration targets p W, the Gaussian product, however many run;
    /// κ = 0: Eq. 5 from the prior sharpens it, p W^i after i iterations.
    @Test func theKLInTheWeightsTargetsTheGaussianProduct() throws {
        // W's centre within a std of the prior's: the first iteration's effective sample size stays in the thousands
        let lambda: Float = 0.5, s: Float = 1, c0: Float = 1, priorMean: Float = 0, priorStd: Float = 1
        let task = ControlTask(name: "still", dynamics: StillDynamics(), cost: QuadraticActionCost(weight: lambda / (2 * s * s), centre: c0))
        func plan(strength: Float, iterations: Int) throws -> Plan {
            let planner = try MirrorDescentPlanner(task: task, configuration: configuration(samples: 1 << 16, iterations: iterations, strength: strength))
            planner.actionPrior = ProposalSequence([gaussian(priorMean, priorStd)])
            return planner.plan(state: [0])
        }
        func product(likelihoods n: Float) -> (mean: Float, std: Float) {
            let precision = 1 / (priorStd * priorStd) + n / (s * s)
            return ((priorMean / (priorStd * priorStd) + n * c0 / (s * s)) / precision, 1 / precision.squareRoot())
        }
        for iterations in [1, 3] {
            let target = product(likelihoods: 1)
            expectMoments(try plan(strength: 1, iterations: iterations), mean: target.mean, std: target.std, tolerance: 0.03)
        }
        let sharpened = product(likelihoods: 3)
        expectMoments(try plan(strength: 0, iterations: 3), mean: sharpened.mean, std: sharpened.std, tolerance: 0.03)
        // the two differ by far more than the tolerance, so the test tells them apart
        #expect(abs(sharpened.mean - product(likelihoods: 1).mean) > 0.2)
    }

    /// The std a distilled network's head learns is the plan's: with the prior weighed in it is
    /// the posterior's width (narrower than the prior's here), not the prior's own std handed back.
    @Test func thePlansStdIsThePosteriorsWidthWithAPrior() throws {
        let task = ControlTask(name: "still", dynamics: StillDynamics(), cost: QuadraticActionCost(weight: 0.5 / 2, centre: 1))
        var c = PlannerConfiguration()
        c.samples = 1 << 14
        c.horizon = Self.horizon
        c.iterations = 1
        c.temperature = 0.5
        c.minStd = 1e-4  // of the half range, 50: far below the width expected
        let planner = try MirrorDescentPlanner(task: task, configuration: c)  // the defaults: κ = 1, std step unset
        planner.actionPrior = ProposalSequence([gaussian(0, 1)])
        let plan = planner.plan(state: [0])
        let expected = 1 / Float(2).squareRoot()
        #expect(plan.sequence.std.allSatisfy { abs($0 - expected) < 0.03 }, "\(plan.sequence.std) against \(expected)")
        // classic MPPI without a network prior keeps its exploration std
        let alone = try MirrorDescentPlanner(task: task, configuration: c).plan(state: [0])
        #expect(alone.sequence.std.allSatisfy { $0 == alone.prior.std[0] })
    }

    /// What `mpcd train` teaches a network's std head: the width of the refined distribution, the
    /// Gaussian product of the network's own proposal and W, not the network's std handed back
    /// nor MPPI's fixed exploration noise.
    @Test func distillationLabelsCarryThePosteriorsWidth() throws {
        // a range of ±6: an untrained network's std is a share of it, a few times W's width of 1
        let task = ControlTask(name: "still", dynamics: StillDynamics(bound: 6), cost: QuadraticActionCost(weight: 0.5 / 2, centre: 1))
        var c = PlannerConfiguration()
        c.samples = 1 << 16
        c.horizon = Self.horizon
        c.iterations = 1
        c.temperature = 0.5
        c.minStd = 1e-4
        c.initialStd = 2.0 / 6  // the exploration std: 2
        var settings = Distiller.Settings()
        settings.rounds = 2
        settings.episodesPerRound = 1
        settings.stepsPerEpisode = 4
        settings.epochsPerRound = 1
        let distiller = Distiller(task: task, planner: c, network: AmortisedNetwork(kind: .policy, task: task, hidden: [4]), settings: settings)
        var proposalStd: Float = .nan
        try distiller.run(progress: { _ in }) { d in
            // the network that will propose during round 1's labelling: its std at the only state
            if d.completedRounds == 1 { proposalStd = d.network.distribution(features: [0], workspace: d.network.makeWorkspace()).std[0] }
        }
        let labels = try SafeTensors.decode(distiller.checkpointData()).tensors["checkpoint.target_std"]!.values
        #expect(labels.count == 8)
        // round 0, no prior: the product of the planner's start, std 2, and W, std 1
        let planned = 1 / (Float(0.25) + 1).squareRoot()
        #expect(labels.prefix(4).allSatisfy { abs($0 - planned) < 0.05 }, "\(labels.prefix(4)) against \(planned)")
        let posterior = 1 / (1 / (proposalStd * proposalStd) + 1).squareRoot()
        #expect(abs(proposalStd - posterior) > 0.1, "the test needs the two apart: proposal std \(proposalStd)")
        #expect(labels.suffix(4).allSatisfy { abs($0 - posterior) < 0.05 }, "\(labels.suffix(4)) against \(posterior)")
    }

    /// The adaptive rule measures a plan against where it started: with the carried plan as the
    /// start, that plan's cost, not the network proposal's.
    @Test func theStartCostIsTheCostOfTheMeanThePlanStartedFrom() throws {
        let weight: Float = 0.3, centre: Float = 1
        let task = ControlTask(name: "still", dynamics: StillDynamics(), cost: QuadraticActionCost(weight: weight, centre: centre))
        var c = configuration(samples: 256, iterations: 1, strength: 1)
        c.priorStart = .carried
        c.includeMeanSample = true
        let planner = try MirrorDescentPlanner(task: task, configuration: c)
        planner.actionPrior = ProposalSequence([gaussian(-2, 1), gaussian(3, 1)])
        let first = planner.plan(state: [0])
        func cost(_ mean: [Float]) -> Float { mean.reduce(0) { $0 + weight * ($1 - centre) * ($1 - centre) } }
        #expect(abs(first.startCost! - cost(first.prior.mean)) < 1e-4)  // the first plan starts at the prior
        let carried = first.sequence.shifted(by: 1, std: [1]).mean
        let second = planner.plan(state: [0])
        #expect(abs(second.startCost! - cost(carried)) < 1e-4)
        #expect(abs(second.priorCost - cost(second.prior.mean)) < 1e-4)
        #expect(abs(second.startCost! - second.priorCost) > 1)  // the two starts are far apart
        #expect(planner.plan(state: [0], iterations: 0).startCost == nil)
        // "cheaper" prices both starts before choosing: the start's cost is known without the mean sample
        c.priorStart = .cheaper
        c.includeMeanSample = false
        let choosing = try MirrorDescentPlanner(task: task, configuration: c)
        choosing.actionPrior = ProposalSequence([gaussian(-2, 1), gaussian(3, 1)])
        let firstChoice = choosing.plan(state: [0])
        let carriedChoice = firstChoice.sequence.shifted(by: 1, std: [1]).mean
        let secondChoice = choosing.plan(state: [0])
        #expect(abs(secondChoice.startCost! - Swift.min(cost(carriedChoice), cost(secondChoice.prior.mean))) < 1e-4)
    }

    @Test func aPriorStrengthOutsideZeroToOneIsRefused() throws {
        for bad: Float in [-0.1, 1.5, .nan, .infinity] {
            var c = PlannerConfiguration()
            c.priorStrength = bad
            #expect(throws: ConfigurationError.self) { try c.validate(for: TaskRegistry.make(name: "pendulum")) }
        }
    }
}

/// Rate limits inside the plan: sampled sequences are projected onto them, so the plan the
/// daemon's guard receives already respects them.
@Suite struct RateLimitTests {
    func unicyclePlanner(_ change: (inout PlannerConfiguration) -> Void = { _ in }) throws -> (ControlTask, MirrorDescentPlanner) {
        let task = try TaskRegistry.make(name: "unicycle")
        var configuration = PlannerConfiguration()
        configuration.samples = 256
        configuration.horizon = 20
        configuration.iterations = 3
        change(&configuration)
        return (task, try MirrorDescentPlanner(task: task, configuration: configuration))
    }

    /// The largest step-to-step change of each action in a time-major sequence, starting from `first`.
    func largestSteps(_ mean: [Float], after first: [Float]) -> [Float] {
        let m = first.count
        var largest = [Float](repeating: 0, count: m), previous = first
        for t in 0..<(mean.count / m) {
            for a in 0..<m { largest[a] = max(largest[a], abs(mean[t * m + a] - previous[a])) }
            previous = Array(mean[(t * m)..<((t + 1) * m)])
        }
        return largest
    }

    @Test func everyPlanStaysWithinTheRatesFromTheAppliedAction() throws {
        let rate: [Float] = [4, 4], dt: Float = 0.1
        let (task, free) = try unicyclePlanner()
        let (_, limited) = try unicyclePlanner { $0.maxRate = rate }
        var freeExceeds = false
        var state: [Float] = [0, 0, 2.5], applied: [Float] = [0, 0]
        for _ in 0..<30 {
            free.setAppliedActions(last: applied, beforeLast: nil, firstStepLimit: nil)
            let unconstrained = free.plan(state: state)
            if largestSteps(unconstrained.sequence.mean, after: applied).contains(where: { $0 > rate[0] * dt + 1e-4 }) { freeExceeds = true }
            limited.setAppliedActions(last: applied, beforeLast: nil, firstStepLimit: [0.2, 0.3])
            let plan = limited.plan(state: state)
            let mean = plan.sequence.mean
            // the first step within the guard's limit, every later one within max_rate x dt
            #expect(abs(mean[0] - applied[0]) <= 0.2 + 1e-5 && abs(mean[1] - applied[1]) <= 0.3 + 1e-5, "first \(mean[0..<2]) after \(applied)")
            let later = largestSteps(Array(mean[2...]), after: Array(mean[0..<2]))
            #expect(later.allSatisfy { $0 <= rate[0] * dt + 1e-5 }, "steps \(later)")
            applied = plan.action
            state = task.step(state: state, action: applied).next
        }
        #expect(freeExceeds, "the unconstrained planner never moved faster than the limit: the test would prove nothing")
    }

    /// The change of each step stays within max_rate_change x dt^2 of the step before, except
    /// where an action reaches its bound: the bound wins (an actuator cannot pass it).
    @Test func theRateOfChangeIsLimitedToo() throws {
        let dt: Float = 0.1, changeLimit: Float = 10  // per s^2: 0.1 per step, per step
        func largestChangeOfStep(_ change: (inout PlannerConfiguration) -> Void) throws -> Float {
            let (task, planner) = try unicyclePlanner(change)
            let lower = task.dynamics.actionLowerBounds, upper = task.dynamics.actionUpperBounds
            var state: [Float] = [0, 0, -2], applied: [Float] = [0.5, 0], beforeLast: [Float] = [0.45, 0.05]
            var largest: Float = 0
            for _ in 0..<20 {
                planner.setAppliedActions(last: applied, beforeLast: beforeLast, firstStepLimit: nil)
                let mean = planner.plan(state: state).sequence.mean
                var previous = applied, change = zip(applied, beforeLast).map { $0 - $1 }
                for t in 0..<(mean.count / 2) {
                    let current = Array(mean[(t * 2)..<(t * 2 + 2)])
                    let step = zip(current, previous).map { $0 - $1 }
                    for a in 0..<2 where current[a] > lower[a] && current[a] < upper[a] {
                        largest = max(largest, abs(step[a] - change[a]))
                    }
                    change = step
                    previous = current
                }
                beforeLast = applied
                applied = Array(mean[0..<2])
                state = task.step(state: state, action: applied).next
            }
            return largest
        }
        let limited = try largestChangeOfStep { $0.maxRate = [4, 4]; $0.maxRateChange = [changeLimit, changeLimit] }
        let rateOnly = try largestChangeOfStep { $0.maxRate = [4, 4] }
        #expect(limited <= changeLimit * dt * dt + 1e-5)
        #expect(rateOnly > 2 * changeLimit * dt * dt, "without the limit the steps change by \(rateOnly) at most: the test would prove nothing")
    }

    /// The filter takes the plan's high-frequency wiggle out: the summed squared second
    /// differences of the mean drop by more than half, and the plan stays within the bounds.
    @Test func smoothingCalmsThePlan() throws {
        func roughness(_ smoothing: PlannerConfiguration.Smoothing) throws -> Float {
            let (task, planner) = try unicyclePlanner { $0.smoothing = smoothing; $0.samples = 64 }
            var state: [Float] = [0, 0, 1], total: Float = 0
            for _ in 0..<20 {
                let plan = planner.plan(state: state)
                let mean = plan.sequence.mean
                for i in 0..<mean.count {
                    let a = i % 2
                    #expect(mean[i] >= task.dynamics.actionLowerBounds[a] && mean[i] <= task.dynamics.actionUpperBounds[a])
                }
                for t in 1..<(mean.count / 2 - 1) {
                    for a in 0..<2 {
                        let d = mean[(t + 1) * 2 + a] - 2 * mean[t * 2 + a] + mean[(t - 1) * 2 + a]
                        total += d * d
                    }
                }
                state = task.step(state: state, action: plan.action).next
            }
            return total
        }
        let rough = try roughness(.none), smooth = try roughness(.savitzkyGolay)
        #expect(smooth < rough / 2, "squared second differences \(smooth) smoothed, \(rough) not")
    }

    /// When the last change was faster than the change limit allows to undo in one step, the
    /// rate limit still holds (it wins over the change limit).
    @Test func theRateLimitWinsWhenTheTwoLimitsCannotBothHold() throws {
        let (_, planner) = try unicyclePlanner { $0.maxRate = [1, 1]; $0.maxRateChange = [1, 1] }
        // speed 0.5 after -0.5 and turn rate -0.5 after 0.5: changes of +1 and -1 per step; the rate
        // allows 0.1 a step, the change limit 0.01 around them: both directions
        planner.setAppliedActions(last: [0.5, -0.5], beforeLast: [-0.5, 0.5], firstStepLimit: nil)
        let mean = planner.plan(state: [0, 0, 0]).sequence.mean
        #expect(abs(mean[0] - 0.5) <= 0.1 + 1e-5 && abs(mean[1] + 0.5) <= 0.1 + 1e-5, "\(mean[0..<2])")
        let steps = largestSteps(Array(mean[2...]), after: Array(mean[0..<2]))
        #expect(steps.allSatisfy { $0 <= 0.1 + 1e-5 }, "\(steps)")
    }

    @Test func aPerActionNoiseScaleSetsEachActionsStd() throws {
        let (_, planner) = try unicyclePlanner { $0.noiseScale = [1, 0.25]; $0.iterations = 0 }
        let std = planner.initialSequence.std
        // half ranges 0.6 and 1.5, initial_std 0.5
        #expect(abs(std[0] - 0.3) < 1e-6 && abs(std[1] - 0.1875) < 1e-6, "\(std[0..<2])")
    }
}
