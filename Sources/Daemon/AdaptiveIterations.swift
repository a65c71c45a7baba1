import Planners

/// How many iterations a session's next plan runs when `[prior] adaptive` is on: fewer while the
/// iterations barely improve on the plan they start from, more when they do.
///
/// The measure is the relative gain, (J_start - J_plan) / (|J_start| + s): the cost the refined
/// mean saves against the mean the tick started from (the network's proposal, or the previous plan
/// when `prior_start` carried it), over that cost plus a scale s in cost units (`gap_scale`, by
/// default the planner's λ). The scale keeps the ratio bounded where the cost is near zero, as at
/// a balancing task's equilibrium: a gain of a few thousandths of λ there is noise, not a reason
/// to add iterations.
public struct AdaptiveIterations: Sendable {
    public let settings: PriorConfiguration
    /// The configured iterations: the most a plan runs.
    let maximum: Int
    let scale: Double
    /// Iterations the next plan runs (before probing).
    public private(set) var target: Int
    /// The last finite relative gain measured (NaN before any), for `mpcctl status`.
    public private(set) var lastGain = Double.nan
    private var ticksAtZero = 0
    private var smallGains = 0

    public init(settings: PriorConfiguration, maximum: Int, temperature: Float) {
        self.settings = settings
        self.maximum = maximum
        scale = settings.gapScale ?? Double(temperature)
        target = maximum
    }

    /// The rule for a planner: at most its iterations, gaps on the scale of its λ by default.
    public init(settings: PriorConfiguration, planner: PlannerConfiguration) {
        self.init(settings: settings, maximum: planner.iterations, temperature: planner.temperature)
    }

    /// Iterations for the next plan: the target, or one every `probe_every` ticks at a target of 0
    /// (to keep measuring the gain). A planner configured with no iterations never probes.
    public mutating func next() -> Int {
        guard settings.adaptive else { return maximum }
        if target == 0 && maximum > 0 {
            ticksAtZero += 1
            if ticksAtZero >= settings.probeEvery {
                ticksAtZero = 0
                return 1
            }
        }
        return target
    }

    /// The relative gain of a plan that started at cost `startCost` and ended at `planCost`.
    public func relativeGain(startCost: Float, planCost: Float) -> Double {
        Double(startCost - planCost) / (abs(Double(startCost)) + scale)
    }

    /// Moves the target by one iteration when the relative gain leaves [gap_low, gap_high]: down
    /// after `patience` small gains in a row, up at once after a large one.
    public mutating func record(startCost: Float, planCost: Float) {
        let gain = relativeGain(startCost: startCost, planCost: planCost)
        guard settings.adaptive, gain.isFinite else { return }
        lastGain = gain
        if gain < settings.gapLow {
            smallGains += 1
            if smallGains >= settings.patience {
                smallGains = 0
                target = Swift.min(maximum, Swift.max(settings.minIterations, target - 1))
            }
        } else if gain > settings.gapHigh {
            smallGains = 0
            target = Swift.min(maximum, target + 1)
        } else {
            smallGains = 0
        }
    }
}
