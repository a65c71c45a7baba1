/// What one mirror-descent iteration did.
public struct IterationDiagnostics: Sendable, Equatable {
    /// Lowest and mean cost J over the K samples (non-finite samples excluded).
    public var bestCost: Float
    public var meanCost: Float
    /// (sum w)^2 / sum w^2: how many samples effectively carried the update (1 ... K).
    public var effectiveSampleSize: Float
    /// KL(q_{i+1} || q_i), how far the update moved the plan distribution.
    public var klDivergence: Float
    /// Samples whose rollout cost was NaN or infinite (weighted 0).
    public var invalidSamples: Int
    public var seconds: Double
}

/// The result of planning from one state.
public struct Plan: Sendable {
    /// The action to apply now: the first step of the refined mean.
    public var action: [Float]
    /// The refined distribution over the next H actions (mean and std per step).
    public var sequence: GaussianSequence
    /// The prior the plan started from (the warm start, or the installed action prior's output).
    public var prior: GaussianSequence
    /// One entry per iteration run; empty when the deadline allowed none.
    public var iterations: [IterationDiagnostics]
    /// Why the installed action prior was not used, when it was rejected.
    public var priorProblem: String?
    /// Cost of rolling out the prior's mean sequence, and the refined mean sequence, from the
    /// state: their difference is the amortisation gap.
    public var priorCost: Float
    public var planCost: Float
    /// True when iterations ran but no rollout had a finite cost: the plan is the prior, unrefined.
    public var failed: Bool
    /// With a learned value installed: w V(x_H) at the end of the refined mean's rollout, the part
    /// of `planCost` that lies beyond the horizon (of the refined mean's cost even when `keptPrior`
    /// made `planCost` the prior's). Nil without a value.
    public var valueTerm: Float? = nil
    /// True when `never_worse` returned the prior's mean because the refined one cost more (the
    /// sequence's std is still the refined one's). `valueTerm` is then the refined mean's.
    public var keptPrior = false
    /// Cost of the mean sequence the first iteration started from (the prior's, or the previous
    /// plan carried forward when `prior_start` chose it); nil when no iteration ran, or when the
    /// start was not the prior's mean, `include_mean_sample` is off and `prior_start = "cheaper"`
    /// did not price it (no rollout did). What the adaptive rule measures the refinement against.
    public var startCost: Float? = nil

    /// How much the iterative refinement improved on the amortised proposal, in cost units
    /// (positive: the plan is cheaper than the prior's mean).
    public var amortisationGap: Float { priorCost - planCost }

    /// KL(refined || prior), summed over steps and actions.
    public var priorKL: Float { Float(sequence.klDivergence(from: prior)) }

    /// The lowest sampled cost of the last iteration, or nil when none ran.
    public var cost: Float? { iterations.last?.bestCost }
}
