import Foundation

/// A MuJoCo model as a batched task (``BatchDynamics``): the state is the model's positions,
/// velocities and actuator activations, the action its controls (bounded by `ctrlrange`), and one
/// step is `frameSkip` physics steps. Each lane is loaded into a simulation state, stepped and
/// stored back; a batch borrows one simulation state, so workers on other lanes never share one.
public struct MuJoCoDynamics: BatchDynamics {
    public let model: MuJoCoModel
    public let frameSkip: Int
    /// Half-width of the uniform noise around the initial state for training starts.
    public var initialNoise: Float = 0.1
    public let actionLowerBounds: [Float], actionUpperBounds: [Float]

    public var stateNames: [String] { model.stateNames }
    public var actionNames: [String] { model.controlNames }
    public var dt: Float { Float(model.timestep * Double(frameSkip)) }
    public var observationForms: [ObservationForm] { [ObservationForm(name: "state", components: model.stateNames)] }

    public func step(states: BatchView, actions: BatchView) {
        let stepped: Void? = model.withSimulation { simulation in
            for k in 0..<states.lanes {
                simulation.load(states, lane: k)
                simulation.control(actions, lane: k, lower: actionLowerBounds, upper: actionUpperBounds)
                if simulation.step(frameSkip) {
                    simulation.store(states, lane: k)
                } else {
                    simulation.invalidate(states, lane: k)
                }
            }
        }
        if stepped == nil {
            // no simulation state to step with: every lane is invalid, as a failed model's are
            for c in 0..<stateDimension { states[component: c].update(repeating: .nan, count: states.lanes) }
        }
    }

    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] {
        try stateFromObservationIdentity(observation)
    }

    public func randomInitialState(_ uniform: () -> Float) -> [Float] {
        let positions = model.initialPositions.map { Float($0) + initialNoise * (2 * uniform() - 1) }
        let rest = (0..<(model.velocityCount + model.activationCount)).map { _ in initialNoise * (2 * uniform() - 1) }
        return positions + rest
    }
}

extension ControlTask {
    /// `[task]` keys of `name = "mujoco"`: `model` (an MJCF file, relative to `baseDirectory`),
    /// `frame_skip`, `initial_noise`, and the cost: `[[task.cost]]` terms and `[[task.bounds]]`
    /// ranges (docs/models.md).
    public static func mujoco(_ table: ConfigTable, baseDirectory: String) throws(ConfigurationError) -> ControlTask {
        let file = try table.string("model", default: "")
        guard !file.isEmpty else { throw table.error("model", "required: an MJCF file (relative to the configuration file)") }
        let path = file.hasPrefix("/") ? file : (baseDirectory as NSString).appendingPathComponent(file)
        let model: MuJoCoModel
        do {
            model = try MuJoCoModel(path: path)
        } catch {
            throw table.error("model", error.description)
        }
        let frameSkip = try table.integer("frame_skip", default: 1, min: 1, max: 10_000)
        var lower: [Float] = [], upper: [Float] = []
        for (u, range) in model.controlRanges.enumerated() {
            guard let range else {
                throw table.error("model", "\(path): actuator \(model.controlNames[u]) has no ctrlrange (ctrllimited=\"true\" ctrlrange=\"lo hi\"): the planner samples within each control's range")
            }
            // a range MuJoCo takes (1e30, or nan, say) is no range to sample within
            guard abs(range.lower) <= ConfigTable.floatLimit, abs(range.upper) <= ConfigTable.floatLimit, range.lower < range.upper else {
                throw table.error("model", "\(path): actuator \(model.controlNames[u]) has ctrlrange \"\(range.lower) \(range.upper)\": it must be finite, at most \(ConfigTable.floatLimit) in magnitude, its lower end below its upper")
            }
            lower.append(Float(range.lower))
            upper.append(Float(range.upper))
        }
        guard model.controlCount > 0 else { throw table.error("model", "\(path) has no actuators: nothing to control") }
        var dynamics = MuJoCoDynamics(model: model, frameSkip: frameSkip, actionLowerBounds: lower, actionUpperBounds: upper)
        dynamics.initialNoise = try table.float("initial_noise", default: dynamics.initialNoise, .nonNegative)
        var terms: [MuJoCoCostTerm] = []
        for termTable in try table.tables("cost") { terms += try MuJoCoTermReader(model: model, table: termTable, isBounds: false).read() }
        for termTable in try table.tables("bounds") { terms += try MuJoCoTermReader(model: model, table: termTable, isBounds: true).read() }
        guard !terms.isEmpty else { throw table.error("cost", "required: at least one [[task.cost]] term (docs/models.md)") }
        let cost = MuJoCoCost(model: model, terms: terms)
        return ControlTask(name: "mujoco", dynamics: dynamics, cost: cost, sequenceRollout: MuJoCoRollout(dynamics: dynamics, cost: cost))
    }
}

/// Reads one `[[task.cost]]` or `[[task.bounds]]` table; errors name the term and the field.
struct MuJoCoTermReader {
    let model: MuJoCoModel
    let table: ConfigTable
    let isBounds: Bool

    static let quantities = ["qpos", "qvel", "act", "ctrl", "sensor", "body_position", "site_position", "body_velocity",
                             "site_velocity", "body_distance", "site_distance"]

    func object(_ kind: MuJoCoModel.ObjectKind, key: String) throws(ConfigurationError) -> Int {
        let name = try table.string(key, default: "")
        guard !name.isEmpty else { throw table.error(key, "required: the name of a \(kind.rawValue) of the model") }
        guard let id = model.id(of: kind, named: name) else {
            let known = model.names(of: kind)
            throw table.error(key, "the model has no \(kind.rawValue) named \"\(name)\"; its \(kind.rawValue)s: \(known.isEmpty ? "none" : known.prefix(40).joined(separator: ", "))")
        }
        return id
    }

    func axis() throws(ConfigurationError) -> Int {
        ["x", "y", "z"].firstIndex(of: try table.choice("axis", default: "x", from: ["x", "y", "z"]))!
    }

    /// A joint's position or velocity: `name` (a joint; `component` for a ball or free joint's
    /// others) or `index` into qpos / qvel.
    func stateIndex(velocity: Bool) throws(ConfigurationError) -> Int {
        let count = velocity ? model.velocityCount : model.positionCount
        if table.contains("index") {
            return try table.integer("index", default: 0, min: 0, max: count - 1)
        }
        let id = try object(.joint, key: "name")
        let address = velocity ? model.joint(id).velocity : model.joint(id).position
        let component = try table.integer("component", default: 0, min: 0, max: 6)
        guard address + component < count else { throw table.error("component", "joint has fewer components than \(component + 1)") }
        return address + component
    }

    /// The term, or with `quantity = "ctrl"` and neither `name` nor `index`, one per control.
    func read() throws(ConfigurationError) -> [MuJoCoCostTerm] {
        let kind = try table.choice("quantity", default: "", from: Self.quantities)
        var quantities: [MuJoCoCostTerm.Quantity] = []
        var quantity: MuJoCoCostTerm.Quantity = .control(0)
        switch kind {
        case "qpos": quantity = .position(try stateIndex(velocity: false))
        case "qvel": quantity = .velocity(try stateIndex(velocity: true))
        case "act": quantity = .activation(try table.integer("index", default: 0, min: 0, max: max(0, model.activationCount - 1)))
            guard model.activationCount > 0 else { throw table.error("quantity", "the model has no actuator activations") }
        case "ctrl":
            if table.contains("index") {
                quantity = .control(try table.integer("index", default: 0, min: 0, max: model.controlCount - 1))
            } else if table.contains("name") {
                quantity = .control(try object(.actuator, key: "name"))
            } else {
                _ = try table.optionalNumber("index")  // known keys for the message below
                quantities = (0..<model.controlCount).map { .control($0) }
            }
        case "sensor":
            let id = try object(.sensor, key: "name")
            // a cost reads sensors between the two halves of a step, before accelerations exist:
            // an acceleration or force sensor would read what the last lane or step left there
            guard !model.sensorNeedsAcceleration(id) else {
                throw table.error("name", "sensor \"\(try table.string("name", default: ""))\" needs accelerations (an accelerometer, a force or touch sensor, ...): a cost reads position and velocity sensors only")
            }
            let (address, dimension) = model.sensor(id)
            let component = try table.integer("component", default: 0, min: 0, max: dimension - 1)
            quantity = .sensor(address: address + component)
        case "body_position", "site_position":
            let objectKind: MuJoCoModel.ObjectKind = kind.hasPrefix("body") ? .body : .site
            quantity = .place(objectKind, id: try object(objectKind, key: "name"), axis: try axis())
        case "body_velocity", "site_velocity":
            let objectKind: MuJoCoModel.ObjectKind = kind.hasPrefix("body") ? .body : .site
            quantity = .motion(objectKind, id: try object(objectKind, key: "name"), axis: try axis())
        default:  // body_distance, site_distance
            let objectKind: MuJoCoModel.ObjectKind = kind.hasPrefix("body") ? .body : .site
            let id = try object(objectKind, key: "name")
            if let point = try table.optionalNumbers("point", count: 3) {
                guard point.allSatisfy({ abs($0) <= ConfigTable.floatLimit }) else { throw table.error("point", "coordinates above 1e12") }
                quantity = .distanceToPoint(objectKind, id: id, point: (point[0], point[1], point[2]))
            } else {
                quantity = .distance(objectKind, id: id, to: objectKind, otherID: try object(objectKind, key: "to"))
            }
        }
        if quantities.isEmpty { quantities = [quantity] }
        var term = MuJoCoCostTerm(quantity: quantities[0])
        term.weight = Double(try table.float("weight", default: isBounds ? 1000 : 1))
        term.terminal = try table.bool("terminal", default: false)
        if isBounds {
            let lower = Double(try table.float("min", default: -Float(ConfigTable.floatLimit)))
            let upper = Double(try table.float("max", default: Float(ConfigTable.floatLimit)))
            guard lower <= upper else { throw table.error("max", "must be at least min (\(lower)), got \(upper)") }
            guard table.contains("min") || table.contains("max") else { throw table.error("min", "a bounds term needs min, max or both") }
            guard term.weight >= 0 else { throw table.error("weight", "a bounds term's weight must be >= 0") }
            term.bounds = lower...upper
        } else {
            term.target = Double(try table.float("target", default: 0))
            term.norm = MuJoCoCostTerm.Norm(rawValue: try table.choice("norm", default: "quadratic", from: MuJoCoCostTerm.Norm.allCases.map(\.rawValue)))!
            term.parameter = Double(try table.float("parameter", default: term.norm == .power ? 2 : 0.1, .positive))
            // any other norm is bounded below by 0: a negative weight would make the planner chase
            // the quantity away from its target without end
            guard term.weight >= 0 || term.norm == .linear else {
                throw table.error("weight", "may be negative with norm = \"linear\" only (a reward), got \(term.weight) with norm = \"\(term.norm.rawValue)\"")
            }
        }
        if term.terminal && term.quantity.isControl { throw table.error("terminal", "a control term has no last state to apply to") }
        try table.finish()
        return quantities.map { q in
            var t = term
            t.quantity = q
            return t
        }
    }
}
