import Foundation
import Models

/// The optimality likelihood p(O = 1 | tau) of Eq. 5, as a weight W(a^k) on each of the K sampled
/// action sequences given its cost J(a^k).
///
/// Eq. 5 of the paper updates the plan distribution by q_{i+1}(a) ∝ q_i(a) W(a); with samples
/// drawn from q_i, the update is the W-weighted moment match of the samples. MPPI and CEM differ
/// only here: this is their whole difference.
public protocol OptimalityLikelihood: Sendable {
    /// The name a configuration uses.
    var name: String { get }
    /// How far the plan's std moves towards the weighted samples' std per iteration when the
    /// configuration does not say (0 keeps the exploration noise fixed, as classic MPPI does).
    var defaultStdStep: Float { get }
    /// Writes W(a^k) >= 0 for k in 0..<count, not necessarily normalised. `scratch` holds `count`
    /// floats the likelihood may overwrite.
    func weigh(costs: UnsafePointer<Float>, count: Int, into weights: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>)
    /// The same, times the importance ratios exp(`logRatios`[k]) (the target and proposal
    /// densities of each sample, when they differ).
    func weigh(costs: UnsafePointer<Float>, logRatios: UnsafePointer<Float>, count: Int, into weights: UnsafeMutablePointer<Float>,
               scratch: UnsafeMutablePointer<Float>)
}

extension OptimalityLikelihood {
    /// W(a^k) times the ratio, scaled so that the largest ratio among the weighted samples is 1.
    public func weigh(costs: UnsafePointer<Float>, logRatios: UnsafePointer<Float>, count: Int, into weights: UnsafeMutablePointer<Float>,
                      scratch: UnsafeMutablePointer<Float>) {
        weigh(costs: costs, count: count, into: weights, scratch: scratch)
        var top = -Float.infinity
        for k in 0..<count where weights[k] > 0 && costs[k].isFinite { top = Swift.max(top, logRatios[k]) }
        guard top.isFinite else { return }
        for k in 0..<count where weights[k] > 0 { weights[k] *= Foundation.exp(logRatios[k] - top) }
    }
}

/// MPPI: W = exp(-(J - J_min) / λ). Subtracting the minimum keeps the best sample's weight at 1,
/// so no temperature or cost scale can underflow every weight.
public struct MPPILikelihood: OptimalityLikelihood {
    /// λ, the temperature: small λ trusts the best samples, large λ averages more of them.
    public let temperature: Float

    public init(temperature: Float) { self.temperature = temperature }

    public var name: String { "mppi" }
    public var defaultStdStep: Float { 0 }

    /// exp(-(J' - J'_min) / λ) with J' = J - λ log ratio: the ratio folded into the cost, so that
    /// the best adjusted sample keeps weight 1 and nothing underflows.
    public func weigh(costs: UnsafePointer<Float>, logRatios: UnsafePointer<Float>, count: Int, into weights: UnsafeMutablePointer<Float>,
                      scratch: UnsafeMutablePointer<Float>) {
        for k in 0..<count { scratch[k] = costs[k] - temperature * logRatios[k] }
        // The MPPI weigh below never reads its scratch, so `weights` may stand in for it; a
        // likelihood that did would need a buffer of its own here.
        weigh(costs: scratch, count: count, into: weights, scratch: weights)
    }

    public func weigh(costs: UnsafePointer<Float>, count: Int, into weights: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        var minimum = Float.infinity
        for k in 0..<count { minimum = Swift.min(minimum, costs[k]) }
        let scale = -1 / temperature
        let full = count / laneWidth * laneWidth
        let shift = Lanes(repeating: minimum)
        for k in Swift.stride(from: 0, to: full, by: laneWidth) {
            weights.setLanes(VectorMath.exp((costs.lanes(at: k) - shift) * scale), at: k)
        }
        for k in full..<count {
            weights[k] = VectorMath.exp(Lanes(repeating: (costs[k] - minimum) * scale))[0]
        }
    }
}

/// CEM: W = 1 for the `elites` lowest-cost samples, else 0 (the indicator 1[J <= J_threshold]
/// with the threshold at the elite count). Ties at the threshold go to the lower sample index.
public struct CEMLikelihood: OptimalityLikelihood {
    public let elites: Int

    public init(elites: Int) { self.elites = elites }

    public var name: String { "cem" }
    public var defaultStdStep: Float { 1 }

    public func weigh(costs: UnsafePointer<Float>, count: Int, into weights: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let keep = Swift.min(elites, count)
        scratch.update(from: costs, count: count)
        let threshold = kthSmallest(scratch, count: count, k: keep - 1)
        var below = 0
        for k in 0..<count where costs[k] < threshold { below += 1 }
        var tiesLeft = keep - below
        for k in 0..<count {
            let c = costs[k]
            if c < threshold {
                weights[k] = 1
            } else if c == threshold && tiesLeft > 0 {
                weights[k] = 1
                tiesLeft -= 1
            } else {
                weights[k] = 0
            }
        }
    }
}

/// The k-th smallest (0-based) of `count` values, reordering them (Hoare quickselect with a
/// median-of-three pivot; NaN never reaches here because non-finite costs are replaced first).
public func kthSmallest(_ values: UnsafeMutablePointer<Float>, count: Int, k: Int) -> Float {
    var lo = 0, hi = count - 1
    while lo < hi {
        let mid = lo + (hi - lo) / 2
        let a = values[lo], b = values[mid], c = values[hi]
        let pivot = Swift.max(Swift.min(a, b), Swift.min(Swift.max(a, b), c))
        var i = lo, j = hi
        while i <= j {
            while values[i] < pivot { i += 1 }
            while values[j] > pivot { j -= 1 }
            if i <= j {
                values.swapAt(i, j)
                i += 1
                j -= 1
            }
        }
        if k <= j { hi = j } else if k >= i { lo = i } else { return values[k] }
    }
    return values[k]
}

/// The likelihoods by the name a configuration uses.
public enum LikelihoodRegistry {
    public static let names = ["mppi", "cem"]
}

extension UnsafeMutablePointer where Pointee == Float {
    @inlinable
    func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]
        self[i] = self[j]
        self[j] = t
    }
}
