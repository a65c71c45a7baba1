/// A mobile robot with unicycle kinematics, the use case of Nav2's MPPI controller.
///
/// State `[x, y, heading]` (m, m, rad); action `[speed, turn_rate]` (m/s, rad/s), explicit Euler:
/// `x += v cos(heading) dt`, `y += v sin(heading) dt`, `heading += w dt`.
public struct UnicycleDynamics: BatchDynamics {
    public var minSpeed: Float = -0.2
    public var maxSpeed: Float = 1
    public var maxTurnRate: Float = 1.5
    public var dt: Float = 0.1

    public init() {}

    public var stateNames: [String] { ["x", "y", "heading"] }
    public var actionNames: [String] { ["speed", "turn_rate"] }
    public var actionLowerBounds: [Float] { [minSpeed, -maxTurnRate] }
    public var actionUpperBounds: [Float] { [maxSpeed, maxTurnRate] }
    public var observationForms: [ObservationForm] {
        [ObservationForm(name: "state", components: stateNames)]
    }

    public func step(states: BatchView, actions: BatchView) {
        let x = states[component: 0], y = states[component: 1], heading = states[component: 2]
        let speed = actions[component: 0], turnRate = actions[component: 1]
        let vLow = Lanes(repeating: minSpeed), vHigh = Lanes(repeating: maxSpeed), wMax = Lanes(repeating: maxTurnRate)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let v = speed.lanes(at: k).clamp(vLow, vHigh)
            let w = turnRate.lanes(at: k).clamp(-wMax, wMax)
            let h = heading.lanes(at: k)
            let (sine, cosine) = VectorMath.sinCos(h)
            x.setLanes(x.lanes(at: k) + v * cosine * dt, at: k)
            y.setLanes(y.lanes(at: k) + v * sine * dt, at: k)
            heading.setLanes(h + w * dt, at: k)
        }
    }

    /// Near the origin, facing any way.
    public func randomInitialState(_ uniform: () -> Float) -> [Float] {
        [uniform() - 0.5, uniform() - 0.5, (2 * uniform() - 1) * .pi]
    }

    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] {
        try stateFromObservationIdentity(observation)
    }
}

/// A circular obstacle, m.
public struct Obstacle: Sendable, Equatable {
    public var x: Float
    public var y: Float
    public var radius: Float

    public init(x: Float, y: Float, radius: Float) {
        self.x = x
        self.y = y
        self.radius = radius
    }
}

/// Drive to the goal, keep clear of obstacles:
/// `goalWeight * |p - goal| + collisionCost * [clearance < 0]
///  + obstacleWeight * max(0, safetyMargin - clearance)^2 + speedWeight v^2 + turnWeight w^2`,
/// where `clearance` is the distance from the robot's edge (`robotRadius`) to the nearest obstacle's
/// edge. The terminal cost is `terminalWeight * |p - goal|`.
public struct UnicycleCost: BatchCost {
    public var goalX: Float = 4
    public var goalY: Float = 0
    public var obstacles: [Obstacle] = [Obstacle(x: 2, y: 0, radius: 0.5)]
    public var robotRadius: Float = 0.2
    public var safetyMargin: Float = 0.3
    public var goalWeight: Float = 1
    public var obstacleWeight: Float = 20
    public var collisionCost: Float = 1000
    public var speedWeight: Float = 0.01
    public var turnWeight: Float = 0.01
    public var terminalWeight: Float = 5

    public init() {}

    @inline(__always)
    func goalDistance(_ states: BatchView, _ k: Int) -> Lanes {
        let dx = states[component: 0].lanes(at: k) - goalX, dy = states[component: 1].lanes(at: k) - goalY
        return (dx * dx + dy * dy).squareRoot()
    }

    public func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let zero = Lanes(repeating: 0)
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            let x = states[component: 0].lanes(at: k), y = states[component: 1].lanes(at: k)
            let v = actions[component: 0].lanes(at: k), w = actions[component: 1].lanes(at: k)
            var c = goalWeight * goalDistance(states, k) + speedWeight * v * v + turnWeight * w * w
            for obstacle in obstacles {
                let dx = x - obstacle.x, dy = y - obstacle.y
                let clearance = (dx * dx + dy * dy).squareRoot() - (obstacle.radius + robotRadius)
                let intrusion = (safetyMargin - clearance).atLeast(zero)
                c += obstacleWeight * intrusion * intrusion
                c.replace(with: c + collisionCost, where: clearance .< 0)
            }
            costs.setLanes(costs.lanes(at: k) + c, at: k)
        }
    }

    public func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {
        for k in Swift.stride(from: 0, to: states.lanes, by: laneWidth) {
            costs.setLanes(costs.lanes(at: k) + terminalWeight * goalDistance(states, k), at: k)
        }
    }

    /// The smallest clearance between the robot at (x, y) and any obstacle, m (negative: touching).
    public func clearance(x: Float, y: Float) -> Float {
        obstacles.map { o in ((x - o.x) * (x - o.x) + (y - o.y) * (y - o.y)).squareRoot() - (o.radius + robotRadius) }
            .min() ?? .infinity
    }
}

extension ControlTask {
    /// `[task]` keys: `min_speed`, `max_speed`, `max_turn_rate`, `dt`, `goal` ([x, y]),
    /// `robot_radius`, `safety_margin`, `goal_weight`, `obstacle_weight`, `collision_cost`,
    /// `speed_weight`, `turn_weight`, `terminal_weight`, and `[[task.obstacles]]` tables with `x`,
    /// `y`, `radius`.
    public static func unicycle(_ table: ConfigTable = ConfigTable([:])) throws(ConfigurationError) -> ControlTask {
        var d = UnicycleDynamics(), c = UnicycleCost()
        d.minSpeed = try table.float("min_speed", default: d.minSpeed)
        d.maxSpeed = try table.float("max_speed", default: d.maxSpeed, .positive)
        guard d.minSpeed < d.maxSpeed else { throw table.error("min_speed", "must be less than max_speed (\(d.maxSpeed))") }
        d.maxTurnRate = try table.float("max_turn_rate", default: d.maxTurnRate, .positive)
        d.dt = try table.float("dt", default: d.dt, .positive)
        let goal = try table.numbers("goal", default: [Double(c.goalX), Double(c.goalY)], count: 2, .closed(-Double(UnicycleCost.reach), Double(UnicycleCost.reach)))
        c.goalX = Float(goal[0])
        c.goalY = Float(goal[1])
        if table.contains("obstacles") {
            c.obstacles = []
        }
        for entry in try table.tables("obstacles") {
                let x = try entry.requiredNumber("x"), y = try entry.requiredNumber("y")
                let radius = try entry.requiredNumber("radius", .positive)
                try entry.finish()
                c.obstacles.append(Obstacle(x: Float(x), y: Float(y), radius: Float(radius)))
        }
        c.robotRadius = try table.float("robot_radius", default: c.robotRadius, .nonNegative)
        c.safetyMargin = try table.float("safety_margin", default: c.safetyMargin, .nonNegative)
        c.goalWeight = try table.float("goal_weight", default: c.goalWeight, .closed(0, 1e6))
        c.obstacleWeight = try table.float("obstacle_weight", default: c.obstacleWeight, .closed(0, 1e6))
        c.collisionCost = try table.float("collision_cost", default: c.collisionCost, .nonNegative)
        c.speedWeight = try table.float("speed_weight", default: c.speedWeight, .closed(0, 1e6))
        c.turnWeight = try table.float("turn_weight", default: c.turnWeight, .closed(0, 1e6))
        c.terminalWeight = try table.float("terminal_weight", default: c.terminalWeight, .closed(0, 1e6))
        return ControlTask(name: "unicycle", dynamics: d, cost: c)
    }
}

extension UnicycleCost: FieldParameterised {
    /// Goals and targets lie within this distance of the origin, m.
    static let reach: Float = 10_000

    static var parameterFields: [ParameterField<UnicycleCost>] {
        [
            ParameterField("goal", "the goal's position [x, y], m", lower: -reach, upper: reach,
                           read: { [$0.goalX, $0.goalY] }, write: { ($0.goalX, $0.goalY) = ($1[0], $1[1]) }),
            .scalar("goal_weight", \.goalWeight, "price per metre from the goal, per step"),
            .scalar("terminal_weight", \.terminalWeight, "price per metre from the goal at the last planned state"),
            .scalar("obstacle_weight", \.obstacleWeight, "price of intruding into the safety margin, per m^2"),
            .scalar("speed_weight", \.speedWeight, "price of speed^2"),
            .scalar("turn_weight", \.turnWeight, "price of turn_rate^2"),
        ]
    }
}
