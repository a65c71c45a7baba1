/// A one-dimensional double integrator, exactly discretised with the acceleration held over a step:
/// `p += v dt + u dt^2 / 2`, `v += u dt`. Linear dynamics with a quadratic cost: its LQR solution
/// is the planner's test oracle.
public struct PointMassDynamics: BatchDynamics {
    /// Acceleration limit, m/s^2.
    public var maxAcceleration: Float = 2
    public var dt: Float = 0.1

    public init() {}

    public var stateNames: [String] { ["position", "velocity"] }
    public var actionNames: [String] { ["acceleration"] }
    public var actionLowerBounds: [Float] { [-maxAcceleration] }
    public var actionUpperBounds: [Float] { [maxAcceleration] }
    public var observationForms: [ObservationForm] {
        [ObservationForm(name: "state", components: stateNames)]
    }

    public func step(states: BatchView, actions: BatchView) {
        let position = states[component: 0], velocity = states[component: 1], acceleration = actions[component: 0]
        let uMax = Lanes(repeating: maxAcceleration), halfDt2 = 0.5 * dt * dt
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let u = acceleration.lanes(at: k).clamp(-uMax, uMax)
            let v = velocity.lanes(at: k)
            position.setLanes(position.lanes(at: k) + v * dt + u * halfDt2, at: k)
            velocity.setLanes(v + u * dt, at: k)
        }
    }

    /// Position in [-2, 2] m, velocity in [-1, 1] m/s.
    public func randomInitialState(_ uniform: () -> Float) -> [Float] { [4 * uniform() - 2, 2 * uniform() - 1] }

    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] {
        try stateFromObservationIdentity(observation)
    }
}

/// `positionWeight e^2 + velocityWeight v^2 + actionWeight u^2` per step, e = p - target, and the
/// quadratic form `[e v] [[terminalPP, terminalPV], [terminalPV, terminalVV]] [e v]^T` on the last
/// state.
public struct PointMassCost: BatchCost {
    /// The position to hold, m.
    public var target: Float = 0
    public var positionWeight: Float = 1
    public var velocityWeight: Float = 0.1
    public var actionWeight: Float = 0.1
    public var terminalPP: Float = 0
    public var terminalPV: Float = 0
    public var terminalVV: Float = 0

    public init() {}

    public func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let position = states[component: 0], velocity = states[component: 1], acceleration = actions[component: 0]
        let target = Lanes(repeating: self.target)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let p = position.lanes(at: k) - target, v = velocity.lanes(at: k), u = acceleration.lanes(at: k)
            let c = positionWeight * p * p + velocityWeight * v * v + actionWeight * u * u
            costs.setLanes(costs.lanes(at: k) + c, at: k)
        }
    }

    public func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let position = states[component: 0], velocity = states[component: 1]
        let target = Lanes(repeating: self.target)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let p = position.lanes(at: k) - target, v = velocity.lanes(at: k)
            let c = terminalPP * p * p + 2 * terminalPV * p * v + terminalVV * v * v
            costs.setLanes(costs.lanes(at: k) + c, at: k)
        }
    }
}

extension ControlTask {
    /// `[task]` keys: `max_acceleration`, `dt`, `target`, `position_weight`, `velocity_weight`,
    /// `action_weight`, `terminal_pp`, `terminal_pv`, `terminal_vv`.
    public static func pointMass(_ table: ConfigTable = ConfigTable([:])) throws(ConfigurationError) -> ControlTask {
        var d = PointMassDynamics(), c = PointMassCost()
        d.maxAcceleration = try table.float("max_acceleration", default: d.maxAcceleration, .positive)
        d.dt = try table.float("dt", default: d.dt, .positive)
        c.target = try table.float("target", default: c.target, .closed(-Double(PointMassCost.reach), Double(PointMassCost.reach)))
        c.positionWeight = try table.float("position_weight", default: c.positionWeight, .closed(0, 1e6))
        c.velocityWeight = try table.float("velocity_weight", default: c.velocityWeight, .closed(0, 1e6))
        c.actionWeight = try table.float("action_weight", default: c.actionWeight, .closed(0, 1e6))
        c.terminalPP = try table.float("terminal_pp", default: c.terminalPP, .nonNegative)
        c.terminalPV = try table.float("terminal_pv", default: c.terminalPV)
        c.terminalVV = try table.float("terminal_vv", default: c.terminalVV, .nonNegative)
        guard c.terminalPV * c.terminalPV <= c.terminalPP * c.terminalVV else {
            throw table.error("terminal_pv", "the terminal matrix must be positive semi-definite (terminal_pv^2 <= terminal_pp * terminal_vv)")
        }
        return ControlTask(name: "point_mass", dynamics: d, cost: c)
    }
}

extension PointMassCost: FieldParameterised {
    /// Targets lie within this distance of the origin, m.
    static let reach: Float = 10_000

    static var parameterFields: [ParameterField<PointMassCost>] {
        [
            .scalar("target", \.target, "the position to hold, m", lower: -reach, upper: reach),
            .scalar("position_weight", \.positionWeight, "price of (position - target)^2"),
            .scalar("velocity_weight", \.velocityWeight, "price of velocity^2"),
            .scalar("action_weight", \.actionWeight, "price of acceleration^2"),
        ]
    }
}
