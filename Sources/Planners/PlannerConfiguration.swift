import Models

/// The planner's tunables. Field names follow the paper: K samples, H horizon, λ temperature.
public struct PlannerConfiguration: Sendable {
    /// The optimality likelihood: "mppi" or "cem".
    public var likelihood = "mppi"
    /// K, sampled action sequences per iteration.
    public var samples = 1024
    /// H, planning steps.
    public var horizon = 32
    /// Mirror-descent iterations per plan (fewer when a deadline cuts planning short; 0 returns the
    /// prior unrefined: an installed policy alone).
    public var iterations = 1
    /// λ, MPPI's temperature, in cost units.
    public var temperature: Float = 0.5
    /// CEM's elite count (at most K).
    public var elites = 64
    /// Exploration std at the start of each plan, as a fraction of each action's half range.
    public var initialStd: Float = 0.5
    /// Lower limit of the std, same unit: keeps CEM from collapsing.
    public var minStd: Float = 0.02
    /// Step size of the mean update: 1 moves the mean all the way to the weighted samples' mean.
    public var meanStep: Float = 1
    /// Step size of the std update; nil uses the likelihood's default (MPPI 0: fixed noise; CEM 1),
    /// or 1 when a network prior proposed the plan.
    public var stdStep: Float? = nil
    /// κ in [0, 1], the action prior's share of each update's base measure: the target is
    /// q_{i+1} ∝ q_i^{1-κ} p^κ W. 1 (the default): p W, the paper's bound with the amortised
    /// network as the action prior; 0: Eq. 5 with the prior as the first iteration's distribution
    /// only. Applies only when a network prior proposed the plan.
    public var priorStrength: Float = 1
    /// Where the first iteration starts when an action prior is installed.
    public enum PriorStart: String, Sendable, CaseIterable {
        /// Always from the prior: the paper's form, where the amortised output is the initial
        /// distribution of the iterative update.
        case prior
        /// From the prior or the previous plan carried forward, whichever's mean sequence costs
        /// less from the current state (one extra 8-lane rollout).
        case cheaper
        /// From the previous plan carried forward; the prior enters through `priorSamples` and
        /// the KL in the weights only (the prior at the very first plan).
        case carried
    }

    public var priorStart = PriorStart.prior

    /// Share of the K samples drawn from the action prior instead of the current distribution
    /// (the first iteration's distribution is the prior anyway; later ones keep exploring near it).
    public var priorSamples: Float = 0
    /// γ, the discount per step: J = Σ_t γ^t c(x_t, a_t) + γ^H c_T(x_H). 1: none. A learned value
    /// must be used with the discount it was learned with.
    public var discount: Float = 1
    /// Keep the current mean as sample 0, so an iteration never loses the plan it started from.
    public var includeMeanSample = true
    /// Price of changing the action from one step to the next: w Σ_t Σ_a ((a_t - a_{t-1}) / h_a)^2
    /// added to every sequence's cost, h_a the action's half range and a_{-1} the first action
    /// of the previous plan (the planner's, before the daemon's safety filter; none after a
    /// reset). 0: none. It damps chatter that the cost alone leaves free, such as a balancing
    /// task's high-frequency jitter.
    public var actionChangeCost: Float = 0
    /// Return the prior's mean sequence (the warm start, or the network's proposal) when the
    /// refined mean costs more from the current state: the plan is then never worse than the
    /// proposal it started from, on that proposal's own cost.
    public var neverWorse = false
    /// Seed of the noise: the same seed and the same states give bit-identical plans.
    public var seed: UInt64 = 0
    /// Worker threads for rollouts (results do not depend on it).
    public var threads = 1
    /// Smallest K x H that is split across threads: below it the hand-off costs more than it saves.
    public var parallelThreshold = 16_384
    /// Optional tighter action limits than the task's; nil keeps the task's.
    public var actionLowerBounds: [Float]? = nil
    public var actionUpperBounds: [Float]? = nil
    /// Per-action multipliers of `initialStd` and `minStd` (Nav2's per-axis std); nil: 1 each.
    public var noiseScale: [Float]? = nil
    /// Largest change of each action per second inside the plan, nil: none. Every sampled
    /// sequence is projected onto it step by step before its rollout, the first step measured from
    /// the action last applied (``MirrorDescentPlanner/setAppliedActions(last:beforeLast:firstStepLimit:)``),
    /// so the plan respects a slew limit instead of being cut by it. The daemon defaults it to
    /// `[safety] max_rate`.
    public var maxRate: [Float]? = nil
    /// Largest change of each action's rate per second, per second (the action's acceleration),
    /// nil: none. Applied with `maxRate`, in the same projection.
    public var maxRateChange: [Float]? = nil
    /// A filter on the plan's mean sequence after every update.
    public enum Smoothing: String, Sendable, CaseIterable {
        case none
        /// A 5-point Savitzky-Golay filter (a local quadratic fit) along time, the two actions
        /// last applied before the first step (as Nav2's MPPI controller smooths its output).
        case savitzkyGolay = "savitzky_golay"
    }
    public var smoothing = Smoothing.none

    public static let maxSamples = 1 << 20
    public static let maxHorizon = 10_000
    public static let maxIterations = 1000

    public init() {}

    /// Reads the `[planner]` table; every key is optional.
    public init(table: ConfigTable) throws(ConfigurationError) {
        self.init()
        likelihood = try table.choice("likelihood", default: likelihood, from: LikelihoodRegistry.names)
        samples = try table.integer("samples", default: samples, min: 1, max: Self.maxSamples)
        horizon = try table.integer("horizon", default: horizon, min: 1, max: Self.maxHorizon)
        iterations = try table.integer("iterations", default: iterations, min: 0, max: Self.maxIterations)
        temperature = try table.float("temperature", default: temperature, .positive)
        elites = try table.integer("elites", default: elites, min: 1)
        initialStd = try table.float("initial_std", default: initialStd, .positive)
        minStd = try table.float("min_std", default: minStd, .positive)
        meanStep = try table.float("mean_step", default: meanStep, .closed(0, 1))
        stdStep = try table.optionalNumber("std_step", .closed(0, 1)).map { Float($0) }
        priorStrength = try table.float("prior_strength", default: priorStrength, .closed(0, 1))
        priorSamples = try table.float("prior_samples", default: priorSamples, .closed(0, 1))
        priorStart = PriorStart(rawValue: try table.choice("prior_start", default: priorStart.rawValue, from: PriorStart.allCases.map(\.rawValue)))!
        includeMeanSample = try table.bool("include_mean_sample", default: includeMeanSample)
        actionChangeCost = try table.float("action_change_cost", default: actionChangeCost, .nonNegative)
        neverWorse = try table.bool("never_worse", default: neverWorse)
        discount = try table.float("discount", default: discount, .closed(0, 1))
        seed = UInt64(try table.integer("seed", default: Int(seed), min: 0))
        threads = try table.integer("threads", default: threads, min: 1, max: 64)
        parallelThreshold = try table.integer("parallel_threshold", default: parallelThreshold, min: 0)
        actionLowerBounds = try table.optionalNumbers("action_min")?.map { Float($0) }
        actionUpperBounds = try table.optionalNumbers("action_max")?.map { Float($0) }
        noiseScale = try table.optionalNumbers("noise_scale", .positive)?.map { Float($0) }
        maxRate = try table.optionalNumbers("max_rate", .positive)?.map { Float($0) }
        maxRateChange = try table.optionalNumbers("max_rate_change", .positive)?.map { Float($0) }
        smoothing = Smoothing(rawValue: try table.choice("smoothing", default: smoothing.rawValue, from: Smoothing.allCases.map(\.rawValue)))!
        try table.finish()
    }

    /// Checks every field against `task`; the error names the field (as in the `[planner]` table)
    /// and the allowed range.
    public func validate(for task: ControlTask) throws(ConfigurationError) {
        func fail(_ key: String, _ reason: String) -> ConfigurationError { ConfigurationError(key: "planner.\(key)", reason: reason) }
        guard LikelihoodRegistry.names.contains(likelihood) else {
            throw fail("likelihood", "unknown likelihood \"\(likelihood)\"; expected one of \(LikelihoodRegistry.names.joined(separator: ", "))")
        }
        guard (1...Self.maxSamples).contains(samples) else { throw fail("samples", "expected an integer in [1, \(Self.maxSamples)], got \(samples)") }
        guard (1...Self.maxHorizon).contains(horizon) else { throw fail("horizon", "expected an integer in [1, \(Self.maxHorizon)], got \(horizon)") }
        guard (0...Self.maxIterations).contains(iterations) else { throw fail("iterations", "expected an integer in [0, \(Self.maxIterations)], got \(iterations)") }
        guard temperature.isFinite, temperature > 0 else { throw fail("temperature", "expected a number > 0, got \(temperature)") }
        if likelihood == "cem" {
            guard elites >= 1, elites <= samples else {
                throw fail("elites", "expected an integer in [1, \(samples)] (at most samples), got \(elites)")
            }
        }
        guard initialStd.isFinite, initialStd > 0 else { throw fail("initial_std", "expected a number > 0, got \(initialStd)") }
        guard minStd.isFinite, minStd > 0 else { throw fail("min_std", "expected a number > 0, got \(minStd)") }
        guard meanStep.isFinite, meanStep >= 0, meanStep <= 1 else { throw fail("mean_step", "expected a number in [0, 1], got \(meanStep)") }
        if let stdStep, !(stdStep >= 0 && stdStep <= 1) { throw fail("std_step", "expected a number in [0, 1], got \(stdStep)") }
        guard priorSamples >= 0, priorSamples <= 1 else { throw fail("prior_samples", "expected a number in [0, 1], got \(priorSamples)") }
        guard priorStrength >= 0, priorStrength <= 1 else { throw fail("prior_strength", "expected a number in [0, 1], got \(priorStrength)") }
        guard actionChangeCost.isFinite, actionChangeCost >= 0 else { throw fail("action_change_cost", "expected a number >= 0, got \(actionChangeCost)") }
        guard threads >= 1 else { throw fail("threads", "expected an integer >= 1, got \(threads)") }
        guard discount > 0, discount <= 1 else { throw fail("discount", "expected a number in (0, 1], got \(discount)") }
        let m = task.dynamics.actionDimension
        for (key, values) in [("noise_scale", noiseScale), ("max_rate", maxRate), ("max_rate_change", maxRateChange)] {
            guard let values else { continue }
            guard values.count == m else { throw fail(key, "expected \(m) numbers (one per action), got \(values.count)") }
            for (i, v) in values.enumerated() where !(v.isFinite && v > 0) {
                throw fail(key, "action \(i) (\(task.dynamics.actionNames[i])): expected a number > 0, got \(v)")
            }
            // a scale's product with min_std and the half range must stay a usable std
            if key == "noise_scale", let i = values.firstIndex(where: { !(0.001...1000).contains($0) }) {
                throw fail(key, "action \(i) (\(task.dynamics.actionNames[i])): expected a number in [0.001, 1000], got \(values[i])")
            }
        }
        if maxRateChange != nil && maxRate == nil { throw fail("max_rate_change", "needs max_rate (or [safety] max_rate) as well") }
        let (lower, upper) = try bounds(for: task)
        for i in lower.indices where !(lower[i] < upper[i]) {
            throw fail("action_min", "action \(i) (\(task.dynamics.actionNames[i])): lower bound \(lower[i]) must be below upper bound \(upper[i])")
        }
    }

    /// The action bounds in force: the task's, tightened by `actionLowerBounds`/`actionUpperBounds`.
    public func bounds(for task: ControlTask) throws(ConfigurationError) -> (lower: [Float], upper: [Float]) {
        let m = task.dynamics.actionDimension
        var lower = task.dynamics.actionLowerBounds, upper = task.dynamics.actionUpperBounds
        for (key, override, isLower) in [("action_min", actionLowerBounds, true), ("action_max", actionUpperBounds, false)] {
            guard let override else { continue }
            guard override.count == m else {
                throw ConfigurationError(key: "planner.\(key)", reason: "expected \(m) numbers (one per action), got \(override.count)")
            }
            for i in 0..<m {
                let v = override[i]
                guard v.isFinite else { throw ConfigurationError(key: "planner.\(key)", reason: "element \(i) is not a finite number") }
                guard v >= task.dynamics.actionLowerBounds[i], v <= task.dynamics.actionUpperBounds[i] else {
                    throw ConfigurationError(key: "planner.\(key)", reason: "element \(i) (\(v)) lies outside the task's range [\(task.dynamics.actionLowerBounds[i]), \(task.dynamics.actionUpperBounds[i])]")
                }
                if isLower { lower[i] = v } else { upper[i] = v }
            }
        }
        return (lower, upper)
    }

    /// The likelihood plug-in this configuration names.
    public func makeLikelihood() -> any OptimalityLikelihood {
        likelihood == "cem" ? CEMLikelihood(elites: elites) : MPPILikelihood(temperature: temperature)
    }
}
