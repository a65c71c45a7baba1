import Foundation

/// Gymnasium's Pendulum-v1, step for step.
///
/// State `[th, thdot]`: angle from upright in radians (unwrapped) and angular velocity in rad/s.
/// One step: the torque is clipped to +-`maxTorque`;
/// `thdot += (3 g / (2 l) sin th + 3 / (m l^2) u) dt`, clipped to +-`maxSpeed`; `th += thdot dt`.
/// Observations: Gymnasium's `[cos th, sin th, thdot]` (3 values) or the state `[th, thdot]` (2).
public struct PendulumDynamics: BatchDynamics {
    /// Gravity, m/s^2 (Gymnasium's default `g=10.0`).
    public var gravity: Float = 10
    /// Mass, kg.
    public var mass: Float = 1
    /// Length, m.
    public var length: Float = 1
    /// Torque limit, N m.
    public var maxTorque: Float = 2
    /// Angular speed limit, rad/s.
    public var maxSpeed: Float = 8
    public var dt: Float = 0.05

    public init() {}

    public var stateNames: [String] { ["theta", "theta_dot"] }
    public var actionNames: [String] { ["torque"] }
    public var actionLowerBounds: [Float] { [-maxTorque] }
    public var actionUpperBounds: [Float] { [maxTorque] }
    public var observationForms: [ObservationForm] {
        [ObservationForm(name: "gymnasium", components: ["cos_theta", "sin_theta", "theta_dot"]),
         ObservationForm(name: "state", components: ["theta", "theta_dot"])]
    }

    public func step(states: BatchView, actions: BatchView) {
        let th = states[component: 0], thdot = states[component: 1], torque = actions[component: 0]
        let gravityGain = 3 * gravity / (2 * length), torqueGain = 3 / (mass * length * length)
        let uMax = Lanes(repeating: maxTorque), vMax = Lanes(repeating: maxSpeed)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let u = torque.lanes(at: k).clamp(-uMax, uMax)
            let angle = th.lanes(at: k)
            var velocity = thdot.lanes(at: k)
            velocity = VectorMath.multiplyAdd(VectorMath.multiplyAdd(Lanes(repeating: gravityGain), VectorMath.sin(angle), torqueGain * u), Lanes(repeating: dt), velocity)
            velocity = velocity.clamp(-vMax, vMax)
            thdot.setLanes(velocity, at: k)
            th.setLanes(VectorMath.multiplyAdd(velocity, Lanes(repeating: dt), angle), at: k)
        }
    }

    /// Gymnasium's reset: theta uniform in [-pi, pi], theta_dot in [-1, 1].
    public func randomInitialState(_ uniform: () -> Float) -> [Float] { [(2 * uniform() - 1) * .pi, 2 * uniform() - 1] }

    /// Networks see Gymnasium's observation: the unwrapped angle is not a good input.
    public var featureNames: [String] { ["cos_theta", "sin_theta", "theta_dot"] }

    public func features(of state: [Float]) -> [Float] { [Foundation.cos(state[0]), Foundation.sin(state[0]), state[1]] }

    public func writeFeatures(states: BatchView, into columns: UnsafeMutablePointer<Float>) {
        let th = states[component: 0], thdot = states[component: 1], lanes = states.lanes
        for k in Swift.stride(from: 0, to: lanes, by: laneWidth) {
            let (s, c) = VectorMath.sinCos(th.lanes(at: k))
            columns.setLanes(c, at: k)
            (columns + lanes).setLanes(s, at: k)
            (columns + 2 &* lanes).setLanes(thdot.lanes(at: k), at: k)
        }
    }

    /// Any angle, any speed the model allows.
    public func randomState(_ uniform: () -> Float) -> [Float] { [(2 * uniform() - 1) * .pi, (2 * uniform() - 1) * maxSpeed] }

    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] {
        try checkFinite(observation)
        switch observation.count {
        case 3: return [Float(atan2(observation[1], observation[0])), Float(observation[2])]
        case 2: return observation.map { Float($0) }
        default: throw .wrongLength(got: observation.count, accepted: [3, 2])
        }
    }
}

/// Gymnasium's Pendulum-v1 cost (the negative reward) on the pre-step state:
/// `angleWeight * angle_normalize(th)^2 + velocityWeight * thdot^2 + torqueWeight * u^2`.
public struct PendulumCost: BatchCost {
    /// The angle to hold, rad (0: upright, Gymnasium's); the angle term prices wrap(θ - target).
    public var targetAngle: Float = 0
    public var angleWeight: Float = 1
    public var velocityWeight: Float = 0.1
    public var torqueWeight: Float = 0.001
    /// Weight of the same quadratic (without the torque term) on the last state; Gymnasium has none.
    public var terminalWeight: Float = 0
    /// The torque limit, so the cost sees the clipped torque as Gymnasium does.
    public var maxTorque: Float = 2

    public init() {}

    public func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let th = states[component: 0], thdot = states[component: 1], torque = actions[component: 0]
        let uMax = Lanes(repeating: maxTorque), target = Lanes(repeating: targetAngle)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let u = torque.lanes(at: k).clamp(-uMax, uMax)
            let angle = VectorMath.wrapAngle(th.lanes(at: k) - target), velocity = thdot.lanes(at: k)
            let c = angleWeight * angle * angle + velocityWeight * velocity * velocity + torqueWeight * u * u
            costs.setLanes(costs.lanes(at: k) + c, at: k)
        }
    }

    public func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {
        guard terminalWeight != 0 else { return }
        let th = states[component: 0], thdot = states[component: 1], target = Lanes(repeating: targetAngle)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let angle = VectorMath.wrapAngle(th.lanes(at: k) - target), velocity = thdot.lanes(at: k)
            let c = angleWeight * angle * angle + velocityWeight * velocity * velocity
            costs.setLanes(costs.lanes(at: k) + terminalWeight * c, at: k)
        }
    }
}

extension ControlTask {
    /// `[task]` keys: `gravity`, `mass`, `length`, `max_torque`, `max_speed`, `dt`,
    /// `target_angle`, `angle_weight`, `velocity_weight`, `torque_weight`, `terminal_weight`.
    public static func pendulum(_ table: ConfigTable = ConfigTable([:])) throws(ConfigurationError) -> ControlTask {
        var d = PendulumDynamics(), c = PendulumCost()
        d.gravity = try table.float("gravity", default: d.gravity, .positive)
        d.mass = try table.float("mass", default: d.mass, .positive)
        d.length = try table.float("length", default: d.length, .positive)
        d.maxTorque = try table.float("max_torque", default: d.maxTorque, .positive)
        d.maxSpeed = try table.float("max_speed", default: d.maxSpeed, .positive)
        d.dt = try table.float("dt", default: d.dt, .positive)
        c.targetAngle = try table.float("target_angle", default: c.targetAngle, .closed(-Double.pi, Double.pi))
        c.angleWeight = try table.float("angle_weight", default: c.angleWeight, .closed(0, 1e6))
        c.velocityWeight = try table.float("velocity_weight", default: c.velocityWeight, .closed(0, 1e6))
        c.torqueWeight = try table.float("torque_weight", default: c.torqueWeight, .closed(0, 1e6))
        c.terminalWeight = try table.float("terminal_weight", default: c.terminalWeight, .closed(0, 1e6))
        c.maxTorque = d.maxTorque
        return ControlTask(name: "pendulum", dynamics: d, cost: c)
    }
}

extension PendulumCost: FieldParameterised {
    static var parameterFields: [ParameterField<PendulumCost>] {
        [
            // Float(Double.pi), not Float.pi (rounded down): a configured target_angle = pi reads as the
            // former, and a session must always be able to set the configured value back
            .scalar("target_angle", \.targetAngle, "the angle to hold, rad (0: upright)", lower: -Float(Double.pi), upper: Float(Double.pi)),
            .scalar("angle_weight", \.angleWeight, "price of wrap(theta - target_angle)^2"),
            .scalar("velocity_weight", \.velocityWeight, "price of theta_dot^2"),
            .scalar("torque_weight", \.torqueWeight, "price of torque^2"),
        ]
    }
}
