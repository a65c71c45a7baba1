import Foundation

/// Gymnasium's MountainCarContinuous-v0, step for step.
///
/// State `[position, velocity]`. One step: the force is clipped to [-1, 1];
/// `velocity += force * power - hill * cos(3 position)`, clipped to +-`maxSpeed`;
/// `position += velocity`, clipped to [`minPosition`, `maxPosition`]; at the left wall a negative
/// velocity becomes 0. The environment is discrete-time; `dt` is the nominal 1/30 s of its
/// rendering, used only for rates.
public struct MountainCarDynamics: BatchDynamics {
    public var power: Float = 0.0015
    /// The gravity term's coefficient (Gymnasium's constant 0.0025).
    public var hill: Float = 0.0025
    public var minPosition: Float = -1.2
    public var maxPosition: Float = 0.6
    public var maxSpeed: Float = 0.07
    public var dt: Float = 1.0 / 30

    public init() {}

    public var stateNames: [String] { ["position", "velocity"] }
    public var actionNames: [String] { ["force"] }
    public var actionLowerBounds: [Float] { [-1] }
    public var actionUpperBounds: [Float] { [1] }
    public var observationForms: [ObservationForm] {
        [ObservationForm(name: "gymnasium", components: ["position", "velocity"])]
    }

    public func step(states: BatchView, actions: BatchView) {
        let position = states[component: 0], velocity = states[component: 1], force = actions[component: 0]
        let one = Lanes(repeating: 1), vMax = Lanes(repeating: maxSpeed)
        let pMin = Lanes(repeating: minPosition), pMax = Lanes(repeating: maxPosition)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let u = force.lanes(at: k).clamp(-one, one)
            var p = position.lanes(at: k)
            var v = velocity.lanes(at: k)
            v += u * power - hill * VectorMath.cos(3 * p)
            v = v.clamp(-vMax, vMax)
            p = (p + v).clamp(pMin, pMax)
            v.replace(with: 0, where: (p .== pMin) .& (v .< 0))
            position.setLanes(p, at: k)
            velocity.setLanes(v, at: k)
        }
    }

    /// Gymnasium's reset: position uniform in [-0.6, -0.4], at rest.
    public func randomInitialState(_ uniform: () -> Float) -> [Float] { [-0.6 + 0.2 * uniform(), 0] }

    /// Anywhere on the track at any allowed speed.
    public func randomState(_ uniform: () -> Float) -> [Float] {
        [minPosition + (maxPosition - minPosition) * uniform(), (2 * uniform() - 1) * maxSpeed]
    }

    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] {
        try stateFromObservationIdentity(observation)
    }
}

/// A planning cost for MountainCarContinuous: an energy shaping that solves it at a modest
/// horizon (`objective = energy`, the default), or the environment's own price (`reward`).
///
/// `reward`: `actionWeight u^2 + timeWeight` per step while the car is short of the goal, 0 from
/// the goal on, and no terminal cost. With the environment's 0.1 for `actionWeight` this is its
/// reward minus the goal bonus, plus a small price on time: the gentle, long pumping that scores
/// best. It is far-sighted (hundreds of steps), so a planner needs a learned value (`[value]`) to
/// use it; without one it never leaves the valley.
///
/// `energy`:
/// The environment's reward (+100 at the goal, -0.1 u^2 per step) is too sparse for a 50-step
/// planner that starts in the valley. The shaping measures the car's mechanical energy
/// `E = v^2 / 2 + (hill / 3) sin(3 p)` (the potential whose slope is the gravity term) against the
/// energy of standing at the goal, `E_goal = (hill / 3) sin(3 goal)`:
///
///     c(x, u) = energyWeight * max(0, E_goal - E) / (E_goal - E_min)
///             + distanceWeight * max(0, goal - p) / (goal - minPosition)
///             + actionWeight * u^2,       and 0 for the first two terms once p >= goal, v >= 0
///
/// Pumping energy in is what reaches the goal, and the normalised deficit rewards it at every
/// step; the small distance term breaks ties towards the goal. The terminal cost is
/// `terminalWeight` times the same state terms.
public struct MountainCarCost: BatchCost {
    public enum Objective: String, Sendable, CaseIterable {
        case energy, reward
    }

    public var objective = Objective.energy
    public var timeWeight: Float = 0.002
    public var goalPosition: Float = 0.45
    public var energyWeight: Float = 1
    public var distanceWeight: Float = 0.1
    public var actionWeight: Float = 0.01
    public var terminalWeight: Float = 10
    public var hill: Float = 0.0025
    public var minPosition: Float = -1.2

    public init() {}

    @inline(__always)
    func stateCost(_ p: Lanes, _ v: Lanes) -> Lanes {
        let potentialScale = hill / 3
        let goalEnergy = potentialScale * Foundation.sin(3 * goalPosition)
        let energySpan = goalEnergy + potentialScale
        let energy = 0.5 * v * v + potentialScale * VectorMath.sin(3 * p)
        let deficit = (goalEnergy - energy).atLeast(Lanes(repeating: 0)) * (1 / energySpan)
        let distance = (goalPosition - p).atLeast(Lanes(repeating: 0)) * (1 / (goalPosition - minPosition))
        var c = energyWeight * deficit + distanceWeight * distance
        c.replace(with: 0, where: (p .>= goalPosition) .& (v .>= 0))
        return c
    }

    public func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let position = states[component: 0], velocity = states[component: 1], force = actions[component: 0]
        let one = Lanes(repeating: 1)
        if objective == .reward {
            let goal = Lanes(repeating: goalPosition), zero = Lanes(repeating: 0)
            for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
                let u = force.lanes(at: k).clamp(-one, one)
                var c = actionWeight * u * u + timeWeight
                c.replace(with: zero, where: position.lanes(at: k) .>= goal)
                costs.setLanes(costs.lanes(at: k) + c, at: k)
            }
            return
        }
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let u = force.lanes(at: k).clamp(-one, one)
            let c = stateCost(position.lanes(at: k), velocity.lanes(at: k)) + actionWeight * u * u
            costs.setLanes(costs.lanes(at: k) + c, at: k)
        }
    }

    public func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {
        guard objective == .energy else { return }
        let position = states[component: 0], velocity = states[component: 1]
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let c = terminalWeight * stateCost(position.lanes(at: k), velocity.lanes(at: k))
            costs.setLanes(costs.lanes(at: k) + c, at: k)
        }
    }
}

extension ControlTask {
    /// `[task]` keys: `power`, `hill`, `min_position`, `max_position`, `max_speed`, `dt`,
    /// `goal_position`, `objective` (energy or reward), `energy_weight`, `distance_weight`,
    /// `action_weight`, `terminal_weight`, `time_weight`.
    public static func mountainCar(_ table: ConfigTable = ConfigTable([:])) throws(ConfigurationError) -> ControlTask {
        var d = MountainCarDynamics(), c = MountainCarCost()
        d.power = try table.float("power", default: d.power, .positive)
        d.hill = try table.float("hill", default: d.hill, .nonNegative)
        d.minPosition = try table.float("min_position", default: d.minPosition)
        d.maxPosition = try table.float("max_position", default: d.maxPosition)
        guard d.minPosition < d.maxPosition else { throw table.error("max_position", "must be greater than min_position (\(d.minPosition))") }
        d.maxSpeed = try table.float("max_speed", default: d.maxSpeed, .positive)
        d.dt = try table.float("dt", default: d.dt, .positive)
        c.goalPosition = try table.float("goal_position", default: c.goalPosition)
        guard c.goalPosition > d.minPosition, c.goalPosition <= d.maxPosition else {
            throw table.error("goal_position", "must lie in (min_position, max_position]")
        }
        c.objective = MountainCarCost.Objective(rawValue: try table.choice("objective", default: c.objective.rawValue,
                                                                             from: MountainCarCost.Objective.allCases.map(\.rawValue)))!
        c.timeWeight = try table.float("time_weight", default: c.timeWeight, .nonNegative)
        c.energyWeight = try table.float("energy_weight", default: c.energyWeight, .nonNegative)
        c.distanceWeight = try table.float("distance_weight", default: c.distanceWeight, .nonNegative)
        c.actionWeight = try table.float("action_weight", default: c.actionWeight, .nonNegative)
        c.terminalWeight = try table.float("terminal_weight", default: c.terminalWeight, .nonNegative)
        c.hill = d.hill
        c.minPosition = d.minPosition
        return ControlTask(name: "mountain_car", dynamics: d, cost: c)
    }
}
