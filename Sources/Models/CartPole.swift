/// Cart-pole with a continuous, bounded force: Gymnasium CartPole-v1's physics (explicit Euler,
/// `tau` = `dt`) with the force `u` in [-maxForce, maxForce] instead of +-`force_mag`.
///
/// State `[x, x_dot, theta, theta_dot]`, theta = 0 upright (Gymnasium's convention). With
/// total mass `M = cartMass + poleMass`, `ml = poleMass * halfLength`:
///
///     temp      = (u + ml thetadot^2 sin theta) / M
///     theta_acc = (g sin theta - cos theta temp) / (halfLength (4/3 - poleMass cos^2 theta / M))
///     x_acc     = temp - ml theta_acc cos theta / M
///     x += dt x_dot;  x_dot += dt x_acc;  theta += dt theta_dot;  theta_dot += dt theta_acc
///
/// Unlike CartPole-v1 there is no termination: the pole may swing through any angle.
public struct CartPoleDynamics: BatchDynamics {
    public var gravity: Float = 9.8
    public var cartMass: Float = 1
    public var poleMass: Float = 0.1
    /// Half the pole's length, m (Gymnasium's `length`).
    public var halfLength: Float = 0.5
    /// Force limit, N (Gymnasium's `force_mag`).
    public var maxForce: Float = 10
    public var dt: Float = 0.02

    public init() {}

    public var stateNames: [String] { ["x", "x_dot", "theta", "theta_dot"] }
    public var actionNames: [String] { ["force"] }
    public var actionLowerBounds: [Float] { [-maxForce] }
    public var actionUpperBounds: [Float] { [maxForce] }
    public var observationForms: [ObservationForm] {
        [ObservationForm(name: "gymnasium", components: stateNames)]
    }

    public func step(states: BatchView, actions: BatchView) {
        let x = states[component: 0], xDot = states[component: 1]
        let theta = states[component: 2], thetaDot = states[component: 3], force = actions[component: 0]
        let totalMass = cartMass + poleMass, poleMassLength = poleMass * halfLength
        let uMax = Lanes(repeating: maxForce)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let u = force.lanes(at: k).clamp(-uMax, uMax)
            let th = theta.lanes(at: k), thd = thetaDot.lanes(at: k)
            let xk = x.lanes(at: k), xd = xDot.lanes(at: k)
            let (sine, cosine) = VectorMath.sinCos(th)
            let temp = (u + poleMassLength * thd * thd * sine) * (1 / totalMass)
            let thetaAcc = (gravity * sine - cosine * temp)
                / (halfLength * (4.0 / 3.0 - poleMass * cosine * cosine * (1 / totalMass)))
            let xAcc = temp - poleMassLength * thetaAcc * cosine * (1 / totalMass)
            x.setLanes(xk + dt * xd, at: k)
            xDot.setLanes(xd + dt * xAcc, at: k)
            theta.setLanes(th + dt * thd, at: k)
            thetaDot.setLanes(thd + dt * thetaAcc, at: k)
        }
    }

    /// Anywhere on the middle of the track, the pole at any angle, moving slowly.
    public func randomInitialState(_ uniform: () -> Float) -> [Float] {
        [2 * uniform() - 1, 0.5 * (2 * uniform() - 1), (2 * uniform() - 1) * .pi, 2 * uniform() - 1]
    }

    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] {
        try stateFromObservationIdentity(observation)
    }
}

/// Swing-up and balance: `uprightWeight (1 - cos theta) + positionWeight x^2
/// + velocityWeight x_dot^2 + angularVelocityWeight theta_dot^2 + forceWeight u^2`, plus
/// `trackPenalty` while |x| > `trackLimit` (CartPole-v1's 2.4 m). The terminal cost is
/// `terminalWeight` times the state terms.
public struct CartPoleCost: BatchCost {
    public var uprightWeight: Float = 1
    public var positionWeight: Float = 0.05
    public var velocityWeight: Float = 0.01
    public var angularVelocityWeight: Float = 0.005
    public var forceWeight: Float = 0.0001
    public var trackLimit: Float = 2.4
    public var trackPenalty: Float = 10
    public var terminalWeight: Float = 5
    public var maxForce: Float = 10

    public init() {}

    @inline(__always)
    func stateCost(_ states: BatchView, _ k: Int) -> Lanes {
        let x = states[component: 0].lanes(at: k), xd = states[component: 1].lanes(at: k)
        let th = states[component: 2].lanes(at: k), thd = states[component: 3].lanes(at: k)
        var c = uprightWeight * (1 - VectorMath.cos(th)) + positionWeight * x * x
            + velocityWeight * xd * xd + angularVelocityWeight * thd * thd
        let outside = (x .> trackLimit) .| (x .< -trackLimit)
        c.replace(with: c + trackPenalty, where: outside)
        return c
    }

    public func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let force = actions[component: 0], uMax = Lanes(repeating: maxForce)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let u = force.lanes(at: k).clamp(-uMax, uMax)
            costs.setLanes(costs.lanes(at: k) + stateCost(states, k) + forceWeight * u * u, at: k)
        }
    }

    public func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            costs.setLanes(costs.lanes(at: k) + terminalWeight * stateCost(states, k), at: k)
        }
    }
}

extension ControlTask {
    /// `[task]` keys: `gravity`, `cart_mass`, `pole_mass`, `half_length`, `max_force`, `dt`,
    /// `upright_weight`, `position_weight`, `velocity_weight`, `angular_velocity_weight`,
    /// `force_weight`, `track_limit`, `track_penalty`, `terminal_weight`.
    public static func cartPole(_ table: ConfigTable = ConfigTable([:])) throws(ConfigurationError) -> ControlTask {
        var d = CartPoleDynamics(), c = CartPoleCost()
        d.gravity = try table.float("gravity", default: d.gravity, .nonNegative)
        d.cartMass = try table.float("cart_mass", default: d.cartMass, .positive)
        d.poleMass = try table.float("pole_mass", default: d.poleMass, .positive)
        d.halfLength = try table.float("half_length", default: d.halfLength, .positive)
        d.maxForce = try table.float("max_force", default: d.maxForce, .positive)
        d.dt = try table.float("dt", default: d.dt, .positive)
        c.uprightWeight = try table.float("upright_weight", default: c.uprightWeight, .nonNegative)
        c.positionWeight = try table.float("position_weight", default: c.positionWeight, .nonNegative)
        c.velocityWeight = try table.float("velocity_weight", default: c.velocityWeight, .nonNegative)
        c.angularVelocityWeight = try table.float("angular_velocity_weight", default: c.angularVelocityWeight, .nonNegative)
        c.forceWeight = try table.float("force_weight", default: c.forceWeight, .nonNegative)
        c.trackLimit = try table.float("track_limit", default: c.trackLimit, .positive)
        c.trackPenalty = try table.float("track_penalty", default: c.trackPenalty, .nonNegative)
        c.terminalWeight = try table.float("terminal_weight", default: c.terminalWeight, .nonNegative)
        c.maxForce = d.maxForce
        return ControlTask(name: "cartpole", dynamics: d, cost: c)
    }
}
