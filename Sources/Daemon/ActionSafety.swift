/// The last guard between the planner and an actuator: every action that leaves the daemon is
/// finite, within the action bounds, and within the slew limit of the action sent before it.
///
/// Applied to the action and to the planned actions sent with it (as a chain from the action), so
/// a client that rides through a lost reply on the plan gets limited actions too.
public struct ActionSafety: Sendable, Equatable {
    /// What a session gets when its observations stop (`stale_after`).
    public enum SafeAction: String, Sendable, CaseIterable {
        /// Zero, clamped into the bounds.
        case zero
        /// The last action sent, again.
        case hold
        /// The prior network's action for the last observed state (zero without a prior).
        case prior
    }

    public let lower: [Float]
    public let upper: [Float]
    /// Largest change per reply for each action (max_rate * period), or nil: no slew limit.
    public let maxStep: [Float]?

    public init(lower: [Float], upper: [Float], maxStep: [Float]?) {
        self.lower = lower
        self.upper = upper
        self.maxStep = maxStep
    }

    /// The zero action, clamped into the bounds.
    public var zero: [Float] { zip(lower, upper).map { Swift.min(Swift.max(0, $0), $1) } }

    /// A safe version of `proposed` given the action sent before (nil: none yet). Non-finite
    /// components become the previous action's (or zero's); then the slew limit, then the bounds.
    /// `limited` says whether anything was changed.
    public func filter(_ proposed: [Float], previous: [Float]?) -> (action: [Float], limited: Bool) {
        // a previous action of another size (sent under another task) is no reference at all
        let previous = previous?.count == lower.count ? previous : nil
        let fallback = previous ?? zero
        var out = proposed.count == lower.count ? proposed : fallback
        var limited = proposed.count != lower.count
        for i in out.indices {
            var u = out[i]
            if !u.isFinite {
                u = fallback[i].isFinite ? fallback[i] : zero[i]
                limited = true
            }
            if let maxStep, let p = previous?[i], p.isFinite {
                let clamped = Swift.min(Swift.max(u, p - maxStep[i]), p + maxStep[i])
                if clamped != u { limited = true }
                u = clamped
            }
            let bounded = Swift.min(Swift.max(u, lower[i]), upper[i])
            if bounded != u { limited = true }
            out[i] = bounded
        }
        return (out, limited)
    }

    /// Filters a time-major sequence of actions as a chain, starting after `previous`.
    public func filterSequence(_ flat: [Float], previous: [Float]?) -> [Float] {
        let m = lower.count
        guard m > 0, flat.count % m == 0 else { return [] }
        var last = previous
        var out: [Float] = []
        out.reserveCapacity(flat.count)
        for t in 0..<(flat.count / m) {
            let (action, _) = filter(Array(flat[(t * m)..<((t + 1) * m)]), previous: last)
            out += action
            last = action
        }
        return out
    }
}
