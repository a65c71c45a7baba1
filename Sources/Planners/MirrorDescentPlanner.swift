import Foundation
import Models

/// One sampling planner for every optimality likelihood: mirror descent on the control-as-inference
/// bound over a time-varying diagonal Gaussian q(a_{t:t+H}) on the H-step action sequence.
///
/// Each iteration i applies the paper's Eq. 5, the mirror-descent step q_{i+1}(a) ∝ q_i(a) W(a), with
/// the amortised action prior p in it (step 3: target q_i^{1-κ} p^κ W, which is q_i W at κ = 0 or
/// without a prior), projected back onto the Gaussian family by moment matching:
///
/// 1. draw K sequences a^k = clamp(μ_i + σ_i ε^k), ε^k ~ N(0, I) fresh from the seeded generator;
///    with rate limits (`maxRate`, `maxRateChange`), each projected step by step onto them from
///    the action last applied;
/// 2. roll each out through the model from the current state, J(a^k) = Σ_t γ^t c(x_t, a_t) +
///    γ^H c_T(x_H) (γ = 1 unless a discount is set), where c_T is the task's terminal cost or, with
///    a ``TerminalValue`` installed, w V(x_H); with `actionChangeCost` w_Δ > 0, J also carries
///    w_Δ Σ_t Σ_a ((a_t - a_{t-1}) / h_a)^2, a_{-1} the action the previous plan sent;
/// 3. weigh them with the likelihood, W(a^k) (MPPI: exp(-(J - J_min)/λ); CEM: top-k indicator);
///    With an amortised action prior p = N(μ_p, σ_p) (a network's proposal) and strength κ in
///    [0, 1], the update's target is q_{i+1} ∝ q_i^{1-κ} p^κ W: at κ = 1, p W, the exact maximiser
///    of the paper's bound with p as the action prior, E_q[log W] - KL(q || p). It enters the
///    weights as the importance ratio (p / q_i)^κ; for MPPI that is the cost
///    J'(a) = J(a) + λ κ [log q_i(a) - log p(a)]. When a share ρ of the lanes samples p (the
///    mixture m = (1-ρ) q_i + ρ p), every weight also carries q_i / m, so the mixture's samples
///    stand for the same target. Densities are those of the unclamped draws μ + σ ε;
/// 4. fit μ_w, σ_w, the W-weighted mean and std of the samples (the target's moments);
/// 5. step: μ_{i+1} = (1-α) μ_i + α μ_w, σ_{i+1} = (1-β) σ_i + β σ_w, then clamp μ to the action
///    bounds and σ to at least `minStd`. β defaults to the likelihood's (MPPI 0, fixed noise), and
///    to 1 when a network proposed the plan: the posterior then has a width of its own, which a
///    distilled network's std head learns.
///
/// After the last iteration the refined mean is priced by one rollout; with `neverWorse`, a
/// refined mean that costs more than the prior's mean from the same state is replaced by it.
///
/// The first iteration starts from the prior: an installed ``ActionPrior``'s output, else the
/// previous plan shifted by one step (the warm start) with the initial std, else a constant plan
/// at the centre of the bounds. Buffers are structure-of-arrays and allocated once; results are
/// bit-identical for a given seed whatever the thread count.
public final class MirrorDescentPlanner: @unchecked Sendable {
    /// The model and the cost; only the cost's parameters change after creation (``setParameters(_:)``).
    public private(set) var task: ControlTask
    public let configuration: PlannerConfiguration
    public let likelihood: any OptimalityLikelihood
    /// The amortised proposal, when one is installed.
    public var actionPrior: (any ActionPrior)?
    /// The amortised value at the end of every rollout, when one is installed (``installValue(_:weight:)``).
    public private(set) var terminalValue: TerminalValue?

    /// K, H, action and state dimensions, and K padded to whole 16-lane noise blocks.
    public let samples: Int, horizon: Int, actionDimension: Int, stateDimension: Int
    let paddedSamples: Int
    public let lowerBounds: [Float], upperBounds: [Float]
    let initialStd: [Float], minStd: [Float]

    // Sample buffers, [row = t * A + a][lane], and the state and cost of every lane.
    let actions: UnsafeMutablePointer<Float>
    let states: UnsafeMutablePointer<Float>
    let costs: UnsafeMutablePointer<Float>
    let weights: UnsafeMutablePointer<Float>
    let scratch: UnsafeMutablePointer<Float>
    // The plan distribution and the prior, time-major [t * A + a].
    let mean: UnsafeMutablePointer<Float>
    let std: UnsafeMutablePointer<Float>
    let priorMean: UnsafeMutablePointer<Float>
    let priorStd: UnsafeMutablePointer<Float>
    let initialState: UnsafeMutablePointer<Float>
    let noise: NoisePipeline
    /// The rollout workers when `threads` > 1: the pool given at init (shared with other planners),
    /// or one of the planner's own.
    let pool: SpinningPool?
    /// Lanes 0 ..< priorLanes sample the prior (a multiple of 8).
    let priorLanes: Int
    // An 8-lane batch for rolling out whole sequences (the prior's mean, the plan's mean).
    let evaluationStates: UnsafeMutablePointer<Float>
    let evaluationActions: UnsafeMutablePointer<Float>
    let evaluationCosts: UnsafeMutablePointer<Float>
    /// One step's costs of every lane (sampled, then the 8 evaluation lanes), for discounting.
    let stepCosts: UnsafeMutablePointer<Float>
    /// The action the previous plan sent, or the one applied when the daemon says
    /// (`setAppliedActions`): a_{-1} of the action-change cost, valid when `hasPreviousAction`;
    /// and the cost's weight per action, w / h_a^2.
    let previousAction: UnsafeMutablePointer<Float>
    let changeWeights: [Float]
    /// Per lane, Σ_r ((a_r - μ_r) / σ_r)^2 of its unclamped draw under q_i and under p (the
    /// log densities up to Σ log σ), when the iteration weighs densities (`weighsDensities`).
    let squaredDistanceToPlan: UnsafeMutablePointer<Float>
    let squaredDistanceToPrior: UnsafeMutablePointer<Float>
    /// log of the importance ratio per lane, and the costs it adjusts.
    let logRatios: UnsafeMutablePointer<Float>
    /// One action's mean over time with two steps of history and two of padding, for `smooth`.
    let smoothingScratch: UnsafeMutablePointer<Float>
    /// Rate limits per action inside the plan: the most an action moves in one step (max_rate x
    /// dt) and the most its step-to-step change moves (max_rate_change x dt^2); nil: no limit.
    let maxStepChange: [Float]?, maxChangeOfChange: [Float]?
    /// The action last applied to the robot (a_{-1}) and its change from the one before, and the
    /// most the plan's first action may move from it (the guard's slew limit per reply): set by
    /// `setAppliedActions` before each plan; the first step is free without one.
    private var appliedAction: [Float]?, appliedBefore: [Float]?, firstStepLimit: [Float]?
    /// a_{-1} - a_{-2} of action `a`, when both are known.
    @inline(__always)
    private func appliedChange(_ a: Int) -> Float? {
        guard let appliedAction, let appliedBefore else { return nil }
        return appliedAction[a] - appliedBefore[a]
    }

    /// w V(x_H) at the end of the last evaluated plan mean (0 without a value).
    private var lastValueTerm: Float = 0
    /// Plans made so far: each plan's noise is drawn for its number (a replay counts the same).
    public private(set) var planCount: UInt64 = 0
    private var hasPlan = false
    private var iterationEstimate: UInt64 = 0
    /// This plan's prior is an amortised network's proposal (κ applies only then: without one the
    /// action prior is uniform and the update is Eq. 5 as it stands).
    private var priorIsNetwork = false
    /// The current iteration's samples need density ratios (a KL to the prior, or prior lanes,
    /// with q_i different from p).
    private var weighsDensities = false

    /// `workers`: a pool shared with other planners (the daemon's, one for all its sessions); without
    /// it, a planner of `threads` > 1 starts workers of its own.
    public init(task: ControlTask, configuration: PlannerConfiguration, workers: SpinningPool? = nil) throws(ConfigurationError) {
        try configuration.validate(for: task)
        self.task = task
        self.configuration = configuration
        likelihood = configuration.makeLikelihood()
        samples = configuration.samples
        horizon = configuration.horizon
        actionDimension = task.dynamics.actionDimension
        stateDimension = task.dynamics.stateDimension
        paddedSamples = Self.sampleBlocks(samples) * 16
        (lowerBounds, upperBounds) = try configuration.bounds(for: task)
        let halfRange = zip(lowerBounds, upperBounds).map { ($1 - $0) / 2 }
        let scale = configuration.noiseScale ?? [Float](repeating: 1, count: halfRange.count)
        initialStd = zip(halfRange, scale).map { $0 * $1 * configuration.initialStd }
        minStd = zip(halfRange, scale).map { $0 * $1 * configuration.minStd }
        let dt = task.dynamics.dt
        maxStepChange = configuration.maxRate?.map { $0 * dt }
        maxChangeOfChange = configuration.maxRateChange?.map { $0 * dt * dt }
        changeWeights = halfRange.map { configuration.actionChangeCost / ($0 * $0) }

        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
            p.initialize(repeating: 0, count: count)
            return p
        }
        let rows = horizon * actionDimension
        actions = buffer(rows * paddedSamples)
        states = buffer(stateDimension * paddedSamples)
        costs = buffer(paddedSamples)
        weights = buffer(paddedSamples)
        scratch = buffer(paddedSamples)
        mean = buffer(rows)
        std = buffer(rows)
        priorMean = buffer(rows)
        priorStd = buffer(rows)
        initialState = buffer(stateDimension)
        priorLanes = Swift.min(paddedSamples, Int((configuration.priorSamples * Float(samples) / 8).rounded()) * 8)
        pool = configuration.threads > 1 ? workers ?? SpinningPool(threads: Swift.min(configuration.threads, paddedSamples / 16)) : nil
        evaluationStates = buffer(stateDimension * laneWidth)
        evaluationActions = buffer(rows * laneWidth)
        evaluationCosts = buffer(laneWidth)
        stepCosts = buffer(paddedSamples + laneWidth)
        previousAction = buffer(actionDimension)
        squaredDistanceToPlan = buffer(paddedSamples)
        squaredDistanceToPrior = buffer(paddedSamples)
        logRatios = buffer(paddedSamples)
        smoothingScratch = buffer(horizon + 4)
        noise = NoisePipeline(rows: rows, rowLength: paddedSamples, seed: configuration.seed,
                              capacity: Swift.min(configuration.iterations, Self.preparedIterations) + 1)
    }

    /// Sets some of the task's cost parameters, all or none (``ControlTask/settingParameters(_:)``);
    /// they apply from the next plan. Not while a plan runs.
    public func setParameters(_ values: [String: [Double]]) throws(ParameterError) {
        task = try task.settingParameters(values)
    }

    /// Sets a session's parameters (all or none) under the rule every session follows: `configured`
    /// holds the configuration's values, taken before the first change (nil until then); while the
    /// task's differ from them, the prior only proposes (`priorFitsTask`). The daemon's sessions and
    /// a replay of their recording both call this.
    public func setParameters(_ values: [String: [Double]], configured: inout [[Float]]?) throws(ParameterError) {
        let before = task.parameters.map(\.value)
        try setParameters(values)
        if configured == nil { configured = before }
        priorFitsTask = task.parameters.map(\.value) == configured
    }

    /// Bytes a planner of `configuration` for `task` allocates (its sample, noise and plan
    /// buffers), computed in floating point so that no configuration can overflow it. What the
    /// daemon checks against its memory limit before a session is ever opened.
    public static func memoryFootprint(task: ControlTask, configuration: PlannerConfiguration) -> Double {
        let padded = Double((Swift.min(configuration.samples, PlannerConfiguration.maxSamples) + 15) / 16 * 16)
        let n = Double(task.dynamics.stateDimension), rows = Double(configuration.horizon) * Double(task.dynamics.actionDimension)
        let noiseBuffers = Double(Swift.min(configuration.iterations, preparedIterations) + 1)
        let lanes = Double(laneWidth)
        let m = Double(task.dynamics.actionDimension)
        let floats = rows * padded * (1 + noiseBuffers) + n * padded + 4 * padded + lanes + 4 * rows + n
            + n * lanes + rows * lanes + lanes + 3 * padded + m + Double(configuration.horizon) + 4
        return 4 * floats
    }

    deinit {
        for p in [actions, states, costs, weights, scratch, mean, std, priorMean, priorStd, initialState,
                  evaluationStates, evaluationActions, evaluationCosts, stepCosts, previousAction,
                  squaredDistanceToPlan, squaredDistanceToPrior, logRatios, smoothingScratch] {
            p.deallocate()
        }
    }

    /// Puts `network`'s value, times `weight`, at the end of every rollout in place of the task's
    /// terminal cost; nil removes it.
    public func installValue(_ network: ValueNetwork?, weight: Float = 1) throws(ConfigurationError) {
        guard let network else { return terminalValue = nil }
        if let terminalValue, terminalValue.weight == weight, terminalValue.network.mlp.architecture == network.mlp.architecture {
            return terminalValue.replace(network)
        }
        terminalValue = try TerminalValue(network: network, weight: weight, task: task, capacity: paddedSamples)
    }

    /// The soft minimum over the last iteration's K rollout costs, -τ ln((1/K) Σ_k exp(-J_k / τ))
    /// (the paper's soft-max over trajectories, for costs); τ = 0 gives the hard minimum. Rollouts
    /// with non-finite costs count as infinitely expensive. Infinity when none had a finite cost.
    public func lastCostSoftMinimum(temperature: Float) -> Float {
        var best = Float.infinity
        for k in 0..<samples where costs[k] < best { best = costs[k] }
        guard best.isFinite, temperature > 0 else { return best }
        var sum = 0.0
        for k in 0..<samples where costs[k].isFinite { sum += Foundation.exp(-Double(costs[k] - best) / Double(temperature)) }
        return best - temperature * Float(Foundation.log(sum / Double(samples)))
    }

    /// The plan the next call warm-starts from, or nil before the first plan and after `reset()`.
    public var currentPlan: GaussianSequence? { hasPlan ? snapshot(mean, std) : nil }

    /// The K action sequences the last iteration rolled out (sampled, clipped to the bounds and
    /// rate-limited), sample by sample: value [k][t][a] at (k * H + t) * A + a. For benchmarks
    /// that time other code on the planner's own workload.
    public func lastSampledActions() -> [Float] {
        let m = actionDimension
        var out = [Float](repeating: 0, count: samples * horizon * m)
        for r in 0..<(horizon * m) {
            let row = actions + r * paddedSamples, t = r / m, a = r % m
            for k in 0..<samples { out[(k * horizon + t) * m + a] = row[k] }
        }
        return out
    }

    /// Forgets the warm start: the next plan starts from the prior or the centre of the bounds.
    public func reset() { hasPlan = false }

    /// Whether the action prior was made for this task as it is. A network learns the task with
    /// the cost parameters it was trained under; once a session has set others (another goal, a
    /// target angle), anchoring the plan to it would pull towards the old ones. Then the prior
    /// is a proposal only: κ = 0, and the plan starts from the cheaper of the proposal and the
    /// plan carried forward.
    public var priorFitsTask = true
    var priorStrength: Float { priorFitsTask ? configuration.priorStrength : 0 }
    var priorStart: PlannerConfiguration.PriorStart { priorFitsTask ? configuration.priorStart : .cheaper }

    /// The actions the robot was last sent, newest first (after the daemon's guard), and the most
    /// the next plan's first action may move from the last (nil: `max_rate` x dt). With rate
    /// limits (`max_rate`, `max_rate_change`), every sampled sequence starts within them of what
    /// was applied; the action-change cost measures its first step from `last` too. nil `last`:
    /// nothing applied yet.
    public func setAppliedActions(last: [Float]?, beforeLast: [Float]?, firstStepLimit: [Float]?) {
        let m = actionDimension
        // kept as given (no copies, no arithmetic): this runs every tick
        appliedAction = last?.count == m ? last : nil
        appliedBefore = appliedAction != nil && beforeLast?.count == m ? beforeLast : nil
        self.firstStepLimit = firstStepLimit?.count == m ? firstStepLimit : nil
        if let appliedAction { for i in 0..<m { previousAction[i] = appliedAction[i] } }
    }

    /// Whether the action-change cost and the rate limits have an a_{-1} to measure from.
    private var hasPreviousAction: Bool { hasPlan || appliedAction != nil }

    /// The distribution a plan starts from when there is neither a warm start nor a prior.
    public var initialSequence: GaussianSequence {
        let centre = zip(lowerBounds, upperBounds).map { ($0 + $1) / 2 }
        return GaussianSequence(horizon: horizon, constantMean: centre, constantStd: initialStd)
    }

    /// The previous plan advanced `steps` steps, with the initial std everywhere.
    public func warmStart(advancedBy steps: Int = 1) -> GaussianSequence? {
        guard var shifted = currentPlan?.shifted(by: steps, std: initialStd) else { return nil }
        for i in shifted.std.indices { shifted.std[i] = initialStd[i % actionDimension] }
        return shifted
    }

    /// The 16-sample blocks K samples are padded to: the most parts one iteration's rollouts split into.
    public static func sampleBlocks(_ samples: Int) -> Int { (samples + 15) / 16 }

    /// Most iterations whose noise `prepareNoise()` generates ahead.
    public static let preparedIterations = 4

    /// Generates the next plan's noise now, so `plan` need not: call it between ticks, after the
    /// reply has gone out, to take noise generation off the critical path. Changes no result.
    public func prepareNoise() {
        let next = planCount &+ 1
        let split = samples * horizon >= configuration.parallelThreshold ? pool : nil
        noise.prepare((0..<Swift.min(configuration.iterations, Self.preparedIterations)).map { .init(plan: next, iteration: $0) }, pool: split)
    }

    /// Plans from `state` (the task's internal state). With a `deadline` (monotonic nanoseconds),
    /// iterations stop when the next one is expected to cross it; the plan then holds the best
    /// distribution so far (possibly the prior itself when not even one iteration fits).
    /// `shift` is how many model steps (dt) have passed since the previous plan: the warm start
    /// drops that many actions (1 when each plan follows one step, as in a simulator).
    /// `iterations` overrides the configured count for this plan (adaptive iterations).
    /// `stopAfter` ends the plan after that many iterations as a deadline would have (a replay of
    /// a plan its deadline cut short: the iterations still draw the noise of `iterations`).
    public func plan(state: [Float], deadline: UInt64? = nil, shift: Int = 1, iterations: Int? = nil, stopAfter: Int? = nil) -> Plan {
        precondition(state.count == stateDimension, "state has \(state.count) values, the task \(stateDimension)")
        let warm = warmStart(advancedBy: shift)
        var prior = warm ?? initialSequence
        var priorProblem: String?
        var proposed = false
        /// The cost of the mean the first iteration starts from, when a rollout priced it already.
        var pricedStart: Float?
        if let actionPrior, let proposal = actionPrior.prior(for: state, warmStart: warm) {
            if let problem = proposal.problem(horizon: horizon, actionDimension: actionDimension) {
                priorProblem = problem
            } else {
                prior = proposal
                proposed = true
            }
        }
        for i in 0..<stateDimension { initialState[i] = state[i] }
        load(prior, into: priorMean, priorStd)
        load(warm ?? prior, into: mean, std)
        if proposed {
            switch priorStart {
            case .prior:
                mean.update(from: priorMean, count: horizon * actionDimension)
                std.update(from: priorStd, count: horizon * actionDimension)
            case .carried:
                if warm == nil {
                    mean.update(from: priorMean, count: horizon * actionDimension)
                    std.update(from: priorStd, count: horizon * actionDimension)
                }
            case .cheaper:
                // Start from whichever proposal's mean sequence costs less from this state: the
                // network's, or the previous plan carried forward.
                let (priorCost, warmCost) = evaluate(priorMean, mean)
                pricedStart = warmCost
                if !(warmCost <= priorCost!) {
                    mean.update(from: priorMean, count: horizon * actionDimension)
                    std.update(from: priorStd, count: horizon * actionDimension)
                    pricedStart = priorCost
                }
            }
        }
        // the start and the prior within the rate limits from the applied action (a network's
        // proposal, or a plan carried from before a limited reply, may not be): the prior's
        // mean is what never_worse may send and what κ pulls towards
        limitRates(of: priorMean)
        limitRates(of: mean)
        planCount &+= 1
        priorIsNetwork = proposed
        // With the mean kept as sample 0, the first iteration rolls out the sequence the plan
        // started from: when that is the prior's mean, its cost needs no rollout of its own.
        let startsAtPrior = (0..<(horizon * actionDimension)).allSatisfy { mean[$0] == priorMean[$0] }
        let laneZeroIsPrior = configuration.includeMeanSample && startsAtPrior
        var knownPriorCost: Float?
        /// The cost of the mean the first iteration started from (lane 0 of its samples).
        var startCost: Float?

        let count = iterations ?? configuration.iterations
        var diagnostics: [IterationDiagnostics] = []
        diagnostics.reserveCapacity(count)
        for i in 0..<count {
            if let stopAfter, i >= stopAfter { break }
            let start = monotonicNanoseconds()
            if let deadline, start &+ iterationEstimate > deadline {
                // One slow iteration (a page fault, a machine busy for a moment) must not keep every
                // later plan from iterating, which would only replay the warm start from then on:
                // a plan the estimate stops before its first iteration halves it, so a later plan
                // tries again within a few ticks and measures the real cost.
                if i == 0 { iterationEstimate /= 2 }
                break
            }
            var d = iterate(i, of: count)
            if i == 0 && configuration.includeMeanSample {
                startCost = costs[0].isFinite ? costs[0] : .infinity
                if laneZeroIsPrior { knownPriorCost = startCost }
            }
            let elapsed = monotonicNanoseconds() &- start
            iterationEstimate = Swift.max(elapsed, iterationEstimate - iterationEstimate / 20)
            d.seconds = Double(elapsed) * 1e-9
            diagnostics.append(d)
        }
        var (evaluatedPriorCost, planCost) = evaluate(knownPriorCost == nil ? priorMean : nil, mean)
        let priorCost = knownPriorCost ?? evaluatedPriorCost!
        // never worse: a refinement whose mean costs more than the prior's, from this very state, is
        // noise in the update rather than progress; the prior's mean is the plan then
        let kept = configuration.neverWorse && priorCost < planCost
        if kept {
            mean.update(from: priorMean, count: horizon * actionDimension)
            planCost = priorCost
            limitRates(of: mean)
        }
        let sequence = snapshot(mean, std)
        for a in 0..<actionDimension { previousAction[a] = mean[a] }
        hasPlan = true
        let failed = !diagnostics.isEmpty && diagnostics.allSatisfy { $0.invalidSamples == samples }
        return Plan(action: sequence.meanAction(at: 0), sequence: sequence,
                    prior: snapshot(priorMean, priorStd), iterations: diagnostics, priorProblem: priorProblem,
                    priorCost: priorCost, planCost: planCost, failed: failed,
                    valueTerm: terminalValue == nil ? nil : lastValueTerm, keptPrior: kept,
                    startCost: diagnostics.isEmpty ? nil : startCost ?? pricedStart ?? (startsAtPrior ? priorCost : nil))
    }

    /// Copies a sequence into mean and std buffers, clamping the mean to the bounds and the std
    /// to at least `minStd`.
    private func load(_ sequence: GaussianSequence, into m: UnsafeMutablePointer<Float>, _ s: UnsafeMutablePointer<Float>) {
        for r in 0..<(horizon * actionDimension) {
            let a = r % actionDimension
            m[r] = Swift.min(Swift.max(sequence.mean[r], lowerBounds[a]), upperBounds[a])
            s[r] = Swift.max(sequence.std[r], minStd[a])
        }
    }

    /// The costs J of two mean sequences rolled out from the plan's state (non-finite: infinity);
    /// without a first, the second's alone (a lane fewer for a model that rolls out a lane at a time).
    private func evaluate(_ first: UnsafeMutablePointer<Float>?, _ second: UnsafeMutablePointer<Float>) -> (Float?, Float) {
        let m = actionDimension, secondLane = first == nil ? 0 : 1
        for r in 0..<(horizon * m) {
            let row = evaluationActions + r * laneWidth
            row.update(repeating: (first ?? second)[r], count: laneWidth)
            row[secondLane] = second[r]
        }
        for s in 0..<stateDimension { (evaluationStates + s * laneWidth).update(repeating: initialState[s], count: laneWidth) }
        let stateView = BatchView(base: evaluationStates, stride: laneWidth, lanes: laneWidth)
        // the lanes after the last one used are padding: a model that rolls out a lane at a time skips them
        rollOut(stateView, live: secondLane + 1, actions: evaluationActions, actionStride: laneWidth, into: evaluationCosts,
                scratch: stepCosts + paddedSamples)
        addActionChangeCost(actions: evaluationActions, actionStride: laneWidth, lanes: laneWidth, into: evaluationCosts)
        if let terminalValue {
            lastValueTerm = terminalValue.add(states: stateView, into: evaluationCosts, factor: horizonDiscount, report: secondLane)
        }
        let a = evaluationCosts[0], b = evaluationCosts[secondLane]
        return (first == nil ? nil : (a.isFinite ? a : .infinity), b.isFinite ? b : .infinity)
    }

    private func snapshot(_ m: UnsafeMutablePointer<Float>, _ s: UnsafeMutablePointer<Float>) -> GaussianSequence {
        let n = horizon * actionDimension
        return GaussianSequence(horizon: horizon, actionDimension: actionDimension,
                                mean: Array(UnsafeBufferPointer(start: m, count: n)),
                                std: Array(UnsafeBufferPointer(start: s, count: n)))
    }

    // MARK: - One iteration

    private func iterate(_ iteration: Int, of count: Int) -> IterationDiagnostics {
        let blocks = paddedSamples / 16
        let workers = pool != nil && samples * horizon >= configuration.parallelThreshold ? 2 : 1
        let tag = NoisePipeline.Tag(plan: planCount, iteration: iteration)
        let rows = horizon * actionDimension
        weighsDensities = ((priorIsNetwork && priorStrength > 0) || priorLanes > 0)
            && !(0..<rows).allSatisfy { mean[$0] == priorMean[$0] && std[$0] == priorStd[$0] }
        let epsilon = noise.noise(for: tag, pool: workers > 1 ? pool : nil)
        if let pool, workers > 1 {
            // each part rolls out a contiguous run of 16-lane blocks; the split never changes a result
            let parts = pool.extraWorkers + 1, chunk = (blocks + parts - 1) / parts * 16, shared = SharedBuffer(base: epsilon)
            pool.run { part in
                let start = part * chunk
                let count = Swift.min(chunk, self.paddedSamples - start)
                if count > 0 { self.sampleAndRollOut(start: start, count: count, epsilon: shared.base) }
            }
        } else {
            sampleAndRollOut(start: 0, count: paddedSamples, epsilon: epsilon)
        }
        // one batched forward pass over all K final states, on this thread
        terminalValue?.add(states: BatchView(base: states, stride: paddedSamples, lanes: paddedSamples), into: costs, factor: horizonDiscount)
        return update()
    }

    /// Steps 1-2 for lanes `start ..< start + count`: a = clamp(μ + σ ε), roll out, accumulate cost.
    private func sampleAndRollOut(start: Int, count: Int, epsilon: UnsafeMutablePointer<Float>) {
        let lanesPerRow = paddedSamples, m = actionDimension
        let priorEnd = Swift.min(Swift.max(priorLanes, start), start &+ count)
        for r in 0..<(horizon * m) {
            let a = r % m
            let lo = Lanes(repeating: lowerBounds[a]), hi = Lanes(repeating: upperBounds[a])
            let row = actions + r &* lanesPerRow, noiseRow = epsilon + r &* lanesPerRow
            // lanes below priorLanes sample the prior, the rest the current distribution
            var mu = Lanes(repeating: priorMean[r]), sigma = Lanes(repeating: priorStd[r])
            for k in Swift.stride(from: start, to: priorEnd, by: laneWidth) {
                row.setLanes((mu + sigma * noiseRow.lanes(at: k)).clamp(lo, hi), at: k)
            }
            mu = Lanes(repeating: mean[r])
            sigma = Lanes(repeating: std[r])
            for k in Swift.stride(from: priorEnd, to: start &+ count, by: laneWidth) {
                row.setLanes((mu + sigma * noiseRow.lanes(at: k)).clamp(lo, hi), at: k)
            }
            if start == 0 && configuration.includeMeanSample { row[0] = mean[r] }
            if maxStepChange != nil { limitRates(row: r, actions: actions, stride: lanesPerRow, start: start, end: start &+ count) }
            if weighsDensities { accumulateSquaredDistances(row: r, noise: noiseRow, start: start, priorEnd: priorEnd, end: start &+ count) }
        }
        if weighsDensities && start == 0 && configuration.includeMeanSample {
            // lane 0 is the plan's mean itself: no distance from q_i, its distance from p
            var toPrior: Float = 0
            for r in 0..<(horizon * m) {
                let z = (mean[r] - priorMean[r]) / priorStd[r]
                toPrior += z * z
            }
            squaredDistanceToPlan[0] = 0
            squaredDistanceToPrior[0] = toPrior
        }
        for s in 0..<stateDimension {
            (states + s * lanesPerRow + start).update(repeating: initialState[s], count: count)
        }
        let stateView = BatchView(base: states + start, stride: lanesPerRow, lanes: count)
        // lanes from K on pad the batch to whole blocks: a model that rolls out a lane at a time skips them
        rollOut(stateView, live: Swift.max(0, Swift.min(count, samples - start)), actions: actions + start, actionStride: lanesPerRow,
                into: costs + start, scratch: stepCosts + start)
        addActionChangeCost(actions: actions + start, actionStride: lanesPerRow, lanes: count, into: costs + start)
    }

    /// Adds row `r`'s squared standardised distances of lanes `start ..< end` to the two
    /// accumulators (zeroed at row 0): lanes below `priorEnd` drew a = μ_p + σ_p ε, the rest
    /// a = μ + σ ε, both before clamping.
    @inline(__always)
    private func accumulateSquaredDistances(row r: Int, noise: UnsafeMutablePointer<Float>, start: Int, priorEnd: Int, end: Int) {
        let toPlan = squaredDistanceToPlan, toPrior = squaredDistanceToPrior
        if r == 0 {
            (toPlan + start).update(repeating: 0, count: end - start)
            (toPrior + start).update(repeating: 0, count: end - start)
        }
        // a lane of p is (μ_p - μ)/σ + (σ_p/σ) ε from q's centre in q's units, and conversely
        let pOffset = Lanes(repeating: (priorMean[r] - mean[r]) / std[r]), pScale = Lanes(repeating: priorStd[r] / std[r])
        for k in Swift.stride(from: start, to: priorEnd, by: laneWidth) {
            let e = noise.lanes(at: k), z = pOffset + pScale * e
            toPrior.setLanes(VectorMath.multiplyAdd(e, e, toPrior.lanes(at: k)), at: k)
            toPlan.setLanes(VectorMath.multiplyAdd(z, z, toPlan.lanes(at: k)), at: k)
        }
        let qOffset = Lanes(repeating: (mean[r] - priorMean[r]) / priorStd[r]), qScale = Lanes(repeating: std[r] / priorStd[r])
        for k in Swift.stride(from: priorEnd, to: end, by: laneWidth) {
            let e = noise.lanes(at: k), z = qOffset + qScale * e
            toPlan.setLanes(VectorMath.multiplyAdd(e, e, toPlan.lanes(at: k)), at: k)
            toPrior.setLanes(VectorMath.multiplyAdd(z, z, toPrior.lanes(at: k)), at: k)
        }
    }

    /// log of each lane's importance ratio, q_i^{1-κ} p^κ / m with m = (1-ρ) q_i + ρ p the
    /// distribution the lanes were drawn from (κ = 0 without a network prior), into `logRatios`.
    private func computeLogRatios() {
        var logStdPlan = 0.0, logStdPrior = 0.0
        for r in 0..<(horizon * actionDimension) {
            logStdPlan += Foundation.log(Double(std[r]))
            logStdPrior += Foundation.log(Double(priorStd[r]))
        }
        let kappa = priorIsNetwork ? Double(priorStrength) : 0
        let rho = Double(Swift.min(priorLanes, samples)) / Double(samples)
        let logPlanShare = Foundation.log(1 - rho), logPriorShare = Foundation.log(rho)
        for k in 0..<samples {
            let logQ = -0.5 * Double(squaredDistanceToPlan[k]) - logStdPlan
            let logP = -0.5 * Double(squaredDistanceToPrior[k]) - logStdPrior
            var logM = logQ
            if rho >= 1 {
                logM = logP
            } else if rho > 0 {
                let a = logPlanShare + logQ, b = logPriorShare + logP, top = Swift.max(a, b)
                logM = top + Foundation.log(Foundation.exp(a - top) + Foundation.exp(b - top))
            }
            logRatios[k] = Float((1 - kappa) * logQ + kappa * logP - logM)
        }
    }

    /// The limits on row r = t m + a: the largest step from the action before, and the largest
    /// change of that step (infinite where there is none).
    @inline(__always)
    private func rateLimits(row r: Int) -> (step: Float, changeOfStep: Float) {
        let a = r % actionDimension
        let step = r < actionDimension ? (firstStepLimit?[a] ?? maxStepChange![a]) : maxStepChange![a]
        return (step, maxChangeOfChange?[a] ?? .infinity)
    }

    /// Projects row r of the lanes `start ..< end` onto the rate limits, given the rows before it
    /// (already projected): a_t within ±step of a_{t-1}, and a_t - a_{t-1} within ±changeOfStep
    /// of a_{t-1} - a_{t-2}, then within the bounds. t = 0 measures from the applied action (free
    /// without one); a step with no change before it has only the first limit. The set of
    /// sequences within the limits is convex, so the weighted mean of projected samples is
    /// within them too.
    private func limitRates(row r: Int, actions: UnsafeMutablePointer<Float>, stride: Int, start: Int, end: Int) {
        let m = actionDimension, a = r % m
        let (step, changeOfStep) = rateLimits(row: r)
        let lo = Lanes(repeating: lowerBounds[a]), hi = Lanes(repeating: upperBounds[a])
        let row = actions + r &* stride
        if r < m {
            guard let applied = appliedAction?[a] else { return }
            var low = applied - step, high = applied + step
            if let change = appliedChange(a), changeOfStep.isFinite {
                (low, high) = Self.window(rate: (low, high), change: (applied + change - changeOfStep, applied + change + changeOfStep))
            }
            let l = Lanes(repeating: low), h = Lanes(repeating: high)
            for k in Swift.stride(from: start, to: end, by: laneWidth) {
                row.setLanes(row.lanes(at: k).clamp(l, h).clamp(lo, hi), at: k)
            }
            return
        }
        let before = row - m &* stride
        let twoBefore: UnsafeMutablePointer<Float>? = r >= 2 &* m ? row - 2 &* m &* stride : nil
        let stepLanes = Lanes(repeating: step), changeLanes = Lanes(repeating: changeOfStep)
        let appliedLanes = appliedAction.map { Lanes(repeating: $0[a]) }
        for k in Swift.stride(from: start, to: end, by: laneWidth) {
            let previous = before.lanes(at: k)
            var low = previous - stepLanes, high = previous + stepLanes
            if changeOfStep.isFinite {
                let lastChange: Lanes? = if let twoBefore { previous - twoBefore.lanes(at: k) } else { appliedLanes.map { previous - $0 } }
                if let lastChange {
                    // the change window clamped into the rate window: their overlap, or the rate
                    // bound nearest to it when they do not meet (the rate limit wins)
                    let changeLow = previous + lastChange - changeLanes, changeHigh = previous + lastChange + changeLanes
                    (low, high) = (changeLow.clamp(low, high), changeHigh.clamp(low, high))
                }
            }
            let x = row.lanes(at: k)
            row.setLanes(x.atLeast(low).atMost(high).clamp(lo, hi), at: k)
        }
    }

    /// A 5-point Savitzky-Golay filter (quadratic, weights -3, 12, 17, 12, -3 over 35) along time,
    /// each action on its own, in place. Before the first step stand the two actions last applied
    /// (the first step's own value where there are none); past the last step, the last.
    private func smooth(_ sequence: UnsafeMutablePointer<Float>) {
        let m = actionDimension, h = horizon
        guard h >= 3 else { return }
        let padded = smoothingScratch
        for a in 0..<m {
            let before1 = appliedAction?[a] ?? sequence[a]
            padded[0] = appliedChange(a).map { before1 - $0 } ?? before1
            padded[1] = before1
            for t in 0..<h { padded[t + 2] = sequence[t * m + a] }
            padded[h + 2] = sequence[(h - 1) * m + a]
            padded[h + 3] = padded[h + 2]
            for t in 0..<h {
                let sum = -3 * padded[t] + 12 * padded[t + 1] + 17 * padded[t + 2] + 12 * padded[t + 3] - 3 * padded[t + 4]
                sequence[t * m + a] = Swift.min(Swift.max(sum / 35, lowerBounds[a]), upperBounds[a])
            }
        }
    }

    /// The change window clamped into the rate window: their overlap, or, when they do not meet,
    /// the rate bound nearest the change window (the rate limit wins).
    static func window(rate: (Float, Float), change: (Float, Float)) -> (Float, Float) {
        (Swift.min(Swift.max(change.0, rate.0), rate.1), Swift.min(Swift.max(change.1, rate.0), rate.1))
    }

    /// The same projection for a single sequence (the plan's mean), time-major.
    private func limitRates(of sequence: UnsafeMutablePointer<Float>) {
        guard maxStepChange != nil else { return }
        let m = actionDimension
        for r in 0..<(horizon * m) {
            let a = r % m
            let (step, changeOfStep) = rateLimits(row: r)
            let previous: Float? = r >= m ? sequence[r - m] : appliedAction?[a]
            guard let previous else { continue }
            var low = previous - step, high = previous + step
            let lastChange: Float? = r >= 2 * m ? sequence[r - m] - sequence[r - 2 * m] : r >= m ? appliedAction.map { sequence[r - m] - $0[a] } : appliedChange(a)
            if let lastChange, changeOfStep.isFinite {
                (low, high) = Self.window(rate: (low, high), change: (previous + lastChange - changeOfStep, previous + lastChange + changeOfStep))
            }
            sequence[r] = Swift.min(Swift.max(Swift.min(Swift.max(sequence[r], low), high), lowerBounds[a]), upperBounds[a])
        }
    }

    /// Adds the action-change cost w Σ_t Σ_a ((a_t - a_{t-1}) / h_a)^2 of `lanes` lanes (a multiple
    /// of 8) to `laneCosts`; a_{-1} is the previous plan's action, and t = 0 is free without one.
    private func addActionChangeCost(actions: UnsafeMutablePointer<Float>, actionStride: Int, lanes: Int, into laneCosts: UnsafeMutablePointer<Float>) {
        guard configuration.actionChangeCost > 0 else { return }
        let m = actionDimension
        for r in 0..<(horizon * m) {
            let a = r % m
            if r < m && !hasPreviousAction { continue }
            let w = Lanes(repeating: changeWeights[a])
            let row = actions + r &* actionStride
            for k in Swift.stride(from: 0, to: lanes, by: laneWidth) {
                let before = r < m ? Lanes(repeating: previousAction[a]) : (row - m &* actionStride).lanes(at: k)
                let d = row.lanes(at: k) - before
                laneCosts.setLanes(VectorMath.multiplyAdd(w, d * d, laneCosts.lanes(at: k)), at: k)
            }
        }
    }

    private func scale(_ values: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        let f = Lanes(repeating: factor)
        for k in Swift.stride(from: 0, to: count, by: laneWidth) { values.setLanes(values.lanes(at: k) * f, at: k) }
    }

    /// β, the std's step in the current plan: configured, else 1 when a network proposed the plan
    /// (the posterior it starts, p W at κ = 1 or Eq. 5's p W^i at κ = 0, has a width of its own,
    /// which a distilled network's std head learns), else the likelihood's default.
    var stdStep: Float {
        configuration.stdStep ?? (priorIsNetwork ? 1 : likelihood.defaultStdStep)
    }

    /// γ^H, the weight of whatever comes after the horizon.
    var horizonDiscount: Float { Float(Foundation.pow(Double(configuration.discount), Double(horizon))) }

    /// Rolls the lanes of `stateView` through the model under the action rows at `actions`
    /// (row t * A + a, `actionStride` apart) and writes J = Σ_t γ^t c(x_t, a_t) + γ^H c_T(x_H) to
    /// `laneCosts`; with a learned value the terminal term is left to the caller (it batches all
    /// lanes). `scratch` holds one step's costs when γ < 1.
    private func rollOut(_ stateView: BatchView, live: Int? = nil, actions: UnsafeMutablePointer<Float>, actionStride: Int,
                         into laneCosts: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let m = actionDimension, count = stateView.lanes, dynamics = task.dynamics, cost = task.cost
        let gamma = configuration.discount
        laneCosts.update(repeating: 0, count: count)
        // Σ_t γ^t c_t by Horner's rule, A_t = A_{t-1} / γ + c_t and J = γ^(H-1) A_(H-1): the costs
        // add into the accumulator as they are, at one multiply per lane and step. When γ^-H could
        // overflow, a per-step buffer instead.
        let horner = gamma < 1 && Foundation.pow(Double(gamma), Double(horizon)) > 1e-12
        var weight: Float = 1  // γ^t
        if let sequence = task.sequenceRollout {
            sequence.rollOut(states: stateView, live: live ?? count, actions: actions, actionStride: actionStride, horizon: horizon, discount: gamma,
                             into: laneCosts)
            weight = Float(Foundation.pow(Double(gamma), Double(horizon)))
        } else {
            for t in 0..<horizon {
                let actionView = BatchView(base: actions + t * m * actionStride, stride: actionStride, lanes: count)
                if gamma == 1 || horner {
                    if horner && t > 0 { scale(laneCosts, count: count, by: 1 / gamma) }
                    cost.addRunningCost(states: stateView, actions: actionView, into: laneCosts)
                } else {
                    scratch.update(repeating: 0, count: count)
                    cost.addRunningCost(states: stateView, actions: actionView, into: scratch)
                    let w = Lanes(repeating: weight)
                    for k in Swift.stride(from: 0, to: count, by: laneWidth) { laneCosts.setLanes(VectorMath.multiplyAdd(w, scratch.lanes(at: k), laneCosts.lanes(at: k)), at: k) }
                }
                dynamics.step(states: stateView, actions: actionView)
                weight *= gamma  // γ^(t+1)
            }
            if horner { scale(laneCosts, count: count, by: weight / gamma) }  // γ^(H-1)
        }
        guard terminalValue == nil else { return }
        if gamma == 1 {
            cost.addTerminalCost(states: stateView, into: laneCosts)
        } else {
            scratch.update(repeating: 0, count: count)
            cost.addTerminalCost(states: stateView, into: scratch)
            for k in 0..<count { laneCosts[k] += weight * scratch[k] }
        }
    }

    /// Steps 3-5: weigh (with the importance ratios when they apply), fit, step, clamp.
    private func update() -> IterationDiagnostics {
        let k = samples
        var best = Float.infinity, total = 0.0, valid = 0
        for i in 0..<k {
            let c = costs[i]
            if c.isFinite {
                best = Swift.min(best, c)
                total += Double(c)
                valid += 1
            } else {
                costs[i] = .infinity
            }
        }
        guard valid > 0 else {
            return IterationDiagnostics(bestCost: .infinity, meanCost: .infinity, effectiveSampleSize: 0,
                                        klDivergence: 0, invalidSamples: k, seconds: 0)
        }
        if weighsDensities {
            computeLogRatios()
            likelihood.weigh(costs: costs, logRatios: logRatios, count: k, into: weights, scratch: scratch)
        } else {
            likelihood.weigh(costs: costs, count: k, into: weights, scratch: scratch)
        }
        var sum: Float = 0
        for i in 0..<k {
            if !costs[i].isFinite { weights[i] = 0 }
            sum += weights[i]
        }
        if weighsDensities && !(sum > 0 && sum.isFinite) {
            // every ratio underflowed against one taken where the cost was not finite (CEM can
            // choose such elites): the likelihood alone rather than no weights at all
            likelihood.weigh(costs: costs, count: k, into: weights, scratch: scratch)
            sum = 0
            for i in 0..<k {
                if !costs[i].isFinite { weights[i] = 0 }
                sum += weights[i]
            }
        }
        (weights + k).update(repeating: 0, count: paddedSamples - k)
        var squares: Float = 0
        let inverse = 1 / sum
        for i in 0..<k {
            weights[i] *= inverse
            squares += weights[i] * weights[i]
        }

        let alpha = configuration.meanStep, beta = stdStep
        var kl: Double = 0
        for r in 0..<(horizon * actionDimension) {
            let a = r % actionDimension
            let row = actions + r * paddedSamples
            let fitMean = weightedSum(row, shift: 0)
            let oldMean = mean[r], oldStd = std[r]
            var fitStd = oldStd
            if beta > 0 { fitStd = Swift.max(weightedSum(row, shift: fitMean, squared: true).squareRoot(), minStd[a]) }
            let newMean = Swift.min(Swift.max((1 - alpha) * oldMean + alpha * fitMean, lowerBounds[a]), upperBounds[a])
            let newStd = Swift.max((1 - beta) * oldStd + beta * fitStd, minStd[a])
            mean[r] = newMean
            std[r] = newStd
            let d = Double(newMean - oldMean), s = Double(newStd), o = Double(oldStd)
            kl += Foundation.log(o / s) + (s * s + d * d) / (2 * o * o) - 0.5
        }
        if configuration.smoothing == .savitzkyGolay { smooth(mean) }
        // a convex combination of sequences within the rate limits is within them; this only
        // corrects a start that was not (and float rounding), and what smoothing moved
        limitRates(of: mean)
        return IterationDiagnostics(bestCost: best, meanCost: Float(total / Double(valid)),
                                    effectiveSampleSize: 1 / squares, klDivergence: Float(kl),
                                    invalidSamples: k - valid, seconds: 0)
    }

    /// Σ_k w_k (a_k - shift) or Σ_k w_k (a_k - shift)^2 over the padded row (padding has w = 0).
    @inline(__always)
    private func weightedSum(_ row: UnsafeMutablePointer<Float>, shift: Float, squared: Bool = false) -> Float {
        var acc0 = Lanes(repeating: 0), acc1 = Lanes(repeating: 0)
        let centre = Lanes(repeating: shift)
        for k in Swift.stride(from: 0, to: paddedSamples, by: 16) {
            var d0 = row.lanes(at: k) - centre, d1 = row.lanes(at: k + 8) - centre
            if squared {
                d0 *= d0
                d1 *= d1
            }
            acc0 += weights.lanes(at: k) * d0
            acc1 += weights.lanes(at: k + 8) * d1
        }
        return (acc0 + acc1).sum()
    }
}
