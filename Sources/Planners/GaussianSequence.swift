import Foundation
import Models

/// A time-varying diagonal Gaussian over an H-step action sequence: the plan distribution q(a_{t:t+H})
/// the planner refines, and the form an action prior takes. Stored time-major: the value for step
/// `t`, action component `a` is at index `t * actionDimension + a`.
public struct GaussianSequence: Sendable, Equatable {
    public let horizon: Int
    public let actionDimension: Int
    public var mean: [Float]
    public var std: [Float]

    public init(horizon: Int, actionDimension: Int, mean: [Float], std: [Float]) {
        precondition(mean.count == horizon * actionDimension && std.count == mean.count, "sequence of the wrong size")
        self.horizon = horizon
        self.actionDimension = actionDimension
        self.mean = mean
        self.std = std
    }

    /// The same mean and std at every step.
    public init(horizon: Int, constantMean: [Float], constantStd: [Float]) {
        precondition(constantMean.count == constantStd.count)
        self.init(horizon: horizon, actionDimension: constantMean.count,
                  mean: Array((0..<horizon).map { _ in constantMean }.joined()),
                  std: Array((0..<horizon).map { _ in constantStd }.joined()))
    }

    /// The mean action at step `t`.
    public func meanAction(at t: Int) -> [Float] {
        Array(mean[(t * actionDimension)..<((t + 1) * actionDimension)])
    }

    /// The plan advanced by `steps` steps for a warm start: the first `steps` actions are dropped
    /// and the last mean is repeated at the end, with `std` in the new steps.
    public func shifted(by steps: Int, std fillStd: [Float]) -> GaussianSequence {
        let m = actionDimension, keep = Swift.max(0, horizon - steps)
        var newMean = [Float](), newStd = [Float]()
        newMean.reserveCapacity(mean.count)
        newStd.reserveCapacity(mean.count)
        newMean.append(contentsOf: mean[(mean.count - keep * m)...])
        newStd.append(contentsOf: std[(std.count - keep * m)...])
        let last = meanAction(at: horizon - 1)
        for _ in keep..<horizon {
            newMean.append(contentsOf: last)
            newStd.append(contentsOf: fillStd)
        }
        return GaussianSequence(horizon: horizon, actionDimension: m, mean: newMean, std: newStd)
    }

    /// Why this sequence cannot serve as a plan distribution for `horizon` x `actionDimension`, or nil.
    public func problem(horizon h: Int, actionDimension m: Int) -> String? {
        if horizon != h || actionDimension != m {
            return "expected \(h) steps of \(m) actions, got \(horizon) of \(actionDimension)"
        }
        if let i = mean.firstIndex(where: { !$0.isFinite }) { return "mean value \(i) is not finite" }
        if let i = std.firstIndex(where: { !($0.isFinite && $0 > 0) }) { return "std value \(i) is not a positive finite number" }
        return nil
    }

    /// KL(self || other), summed over steps and components (both diagonal Gaussians).
    public func klDivergence(from other: GaussianSequence) -> Double {
        var kl = 0.0
        for i in mean.indices {
            let s = Double(std[i]), o = Double(other.std[i]), d = Double(mean[i] - other.mean[i])
            kl += log(o / s) + (s * s + d * d) / (2 * o * o) - 0.5
        }
        return kl
    }
}

/// Where a learned (amortised) proposal enters the planner: the action prior p(a_{t:t+H} | s_t).
///
/// The prior is the first iteration's distribution (with `prior_start = "prior"`) and p in the
/// KL to the prior that the weights carry (`PlannerConfiguration.priorStrength`). Returning nil falls back to the warm start, the previous
/// plan shifted by one step, which is the prior when none is installed.
public protocol ActionPrior: Sendable {
    func prior(for state: [Float], warmStart: GaussianSequence?) -> GaussianSequence?
}
