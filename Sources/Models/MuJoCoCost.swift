import Foundation

/// One term of a MuJoCo task's cost, as mujoco_mpc writes residuals: a quantity of the state (or
/// the action), less a target, through a norm, times a weight, on every planned state and, if
/// `terminal`, on the last one too. A bounds term prices leaving a range instead of a target.
public struct MuJoCoCostTerm: Sendable {
    /// What is measured.
    public enum Quantity: Sendable {
        case position(Int)
        case velocity(Int)
        case activation(Int)
        case control(Int)
        case sensor(address: Int)
        case place(MuJoCoModel.ObjectKind, id: Int, axis: Int)
        case motion(MuJoCoModel.ObjectKind, id: Int, axis: Int)
        case distance(MuJoCoModel.ObjectKind, id: Int, to: MuJoCoModel.ObjectKind, otherID: Int)
        case distanceToPoint(MuJoCoModel.ObjectKind, id: Int, point: (Double, Double, Double))

        var stage: MuJoCoSimulation.Stage {
            switch self {
            case .position, .velocity, .activation, .control: .state
            case .place, .distance, .distanceToPoint: .positions
            case .motion: .velocities
            case .sensor: .sensors
            }
        }

        var isControl: Bool { if case .control = self { true } else { false } }
    }

    /// How a deviation d = value - target becomes a cost (p: `parameter`).
    public enum Norm: String, Sendable, CaseIterable {
        /// d²
        case quadratic
        /// |d|
        case absolute
        /// sqrt(d² + p²) - p: quadratic near 0, absolute far away (mujoco_mpc's smooth abs)
        case smoothAbsolute = "smooth_absolute"
        /// d itself: with a negative weight, a reward for more (a forward velocity, say)
        case linear
        /// p² (cosh(d / p) - 1): quadratic near 0, growing exponentially far away
        case cosh
        /// |d|^p
        case power
    }

    public var quantity: Quantity
    public var target: Double = 0
    public var norm = Norm.quadratic
    public var parameter = 0.1
    public var weight = 1.0
    public var terminal = false
    /// A bounds term: priced weight x (how far outside [lower, upper])² instead of the norm.
    public var bounds: ClosedRange<Double>?

    public init(quantity: Quantity) { self.quantity = quantity }

    /// The term's cost for a measured value.
    func cost(_ value: Double) -> Double {
        if let bounds {
            let outside = value < bounds.lowerBound ? bounds.lowerBound - value : (value > bounds.upperBound ? value - bounds.upperBound : 0)
            return weight * outside * outside
        }
        let d = value - target
        let p = parameter
        let n: Double = switch norm {
        case .quadratic: d * d
        case .absolute: abs(d)
        case .smoothAbsolute: (d * d + p * p).squareRoot() - p
        case .linear: d
        case .cosh: p * p * (Foundation.cosh(Swift.min(abs(d) / p, 700)) - 1)
        case .power: Foundation.pow(abs(d), p)
        }
        return weight * n
    }
}

/// A MuJoCo task's cost: the sum of its terms over each lane (``BatchCost``). Terms on positions,
/// velocities and controls read the lanes directly; terms on bodies, sites and sensors load each
/// lane into a simulation state and compute as much of the model as they need.
public struct MuJoCoCost: BatchCost {
    public let model: MuJoCoModel
    public let terms: [MuJoCoCostTerm]
    let runningStage: MuJoCoSimulation.Stage, terminalStage: MuJoCoSimulation.Stage

    public init(model: MuJoCoModel, terms: [MuJoCoCostTerm]) {
        self.model = model
        self.terms = terms
        runningStage = terms.map(\.quantity.stage).max() ?? .state
        terminalStage = terms.filter(\.terminal).map(\.quantity.stage).max() ?? .state
    }

    public func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        add(states: states, actions: actions, terminal: false, into: costs)
    }

    public func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {
        guard terms.contains(where: \.terminal) else { return }
        add(states: states, actions: nil, terminal: true, into: costs)
    }

    private func add(states: BatchView, actions: BatchView?, terminal: Bool, into costs: UnsafeMutablePointer<Float>) {
        let stage = terminal ? terminalStage : runningStage
        guard stage > .state else {
            for k in 0..<states.lanes {
                costs[k] += Float(laneCost(terminal: terminal, state: { Double(states[component: $0][k]) }, control: { Double(actions![component: $0][k]) }))
            }
            return
        }
        let computed: Void? = model.withSimulation { simulation in
            for k in 0..<states.lanes {
                simulation.load(states, lane: k)
                costs[k] += simulation.compute(stage)
                    ? Float(laneCost(terminal: terminal, state: { Double(states[component: $0][k]) }, control: { Double(actions![component: $0][k]) },
                                     simulation: simulation))
                    : .nan
            }
        }
        if computed == nil { costs.update(repeating: .nan, count: states.lanes) }
    }

    /// The running cost of the state loaded in `simulation` under lane `k` of `actions`, read from
    /// the simulation itself (full precision); nil after a fatal MuJoCo error. `computed`: the
    /// simulation has computed every stage already (a begun step).
    func runningCost(of simulation: inout MuJoCoSimulation, actions: BatchView, lane k: Int, computed: Bool = false) -> Double? {
        if !computed && runningStage > .state && !simulation.compute(runningStage) { return nil }
        let current = simulation
        return laneCost(terminal: false, state: { current.stateValue($0) }, control: { Double(actions[component: $0][k]) }, simulation: current)
    }

    /// The sum of the terms (the terminal ones when `terminal`) for one lane: `state(i)` is state
    /// component i (qpos, then qvel, then act), `control(u)` control u, `simulation` the lane's
    /// computed model where a term needs one.
    private func laneCost(terminal: Bool, state: (Int) -> Double, control: (Int) -> Double, simulation: MuJoCoSimulation? = nil) -> Double {
        let nq = model.positionCount, nv = model.velocityCount
        func component(_ v: (Double, Double, Double), _ axis: Int) -> Double { axis == 0 ? v.0 : (axis == 1 ? v.1 : v.2) }
        func distance(_ a: (Double, Double, Double), _ b: (Double, Double, Double)) -> Double {
            ((a.0 - b.0) * (a.0 - b.0) + (a.1 - b.1) * (a.1 - b.1) + (a.2 - b.2) * (a.2 - b.2)).squareRoot()
        }
        var total = 0.0
        for term in terms where !terminal || (term.terminal && !term.quantity.isControl) {
            let value: Double = switch term.quantity {
            case let .position(i): state(i)
            case let .velocity(i): state(nq + i)
            case let .activation(i): state(nq + nv + i)
            case let .control(u): control(u)
            case let .sensor(address): simulation!.sensorValue(address)
            case let .place(kind, id, axis): component(simulation!.position(of: kind, id), axis)
            case let .motion(kind, id, axis): component(simulation!.velocity(of: kind, id), axis)
            case let .distance(kind, id, other, otherID): distance(simulation!.position(of: kind, id), simulation!.position(of: other, otherID))
            case let .distanceToPoint(kind, id, point): distance(simulation!.position(of: kind, id), point)
            }
            total += term.cost(value)
        }
        return total
    }
}

/// A MuJoCo task rolled out a lane at a time (``SequenceRollout``): each lane is loaded once, kept
/// in the simulation state (in double precision, with the solver's warm start) for all H steps
/// while its running cost adds up, and stored once, as MuJoCo's own `rollout` does. The
/// step-by-step path would store every lane to floats and load it back at every step.
///
/// Each control step's first physics step is split in two (``MuJoCoSimulation/beginStep()``): the
/// running cost reads the positions, velocities and sensors that the step computes anyway, instead
/// of a forward pass of its own over the same state. The states and costs are the same either way
/// (a test checks it bit for bit).
public struct MuJoCoRollout: SequenceRollout {
    public let dynamics: MuJoCoDynamics
    public let cost: MuJoCoCost
    /// Whether to split each control step's first physics step (false: a forward pass for the
    /// cost, then whole steps; for comparison).
    public var splitSteps = true

    public init(dynamics: MuJoCoDynamics, cost: MuJoCoCost, splitSteps: Bool = true) {
        self.dynamics = dynamics
        self.cost = cost
        self.splitSteps = splitSteps
    }

    public func rollOut(states: BatchView, live: Int, actions: UnsafeMutablePointer<Float>, actionStride: Int, horizon: Int, discount: Float,
                        into costs: UnsafeMutablePointer<Float>) {
        let m = dynamics.actionDimension, lanes = states.lanes, gamma = Double(discount)
        let lower = dynamics.actionLowerBounds, upper = dynamics.actionUpperBounds, frameSkip = dynamics.frameSkip
        let done: Void? = dynamics.model.withSimulation { simulation in
            for k in 0..<Swift.min(live, lanes) {
                simulation.load(states, lane: k)
                var total = 0.0, weight = 1.0, valid = true
                for t in 0..<horizon {
                    let actionView = BatchView(base: actions + t &* m &* actionStride, stride: actionStride, lanes: lanes)
                    if splitSteps && !simulation.beginStep() { valid = false; break }
                    guard let c = cost.runningCost(of: &simulation, actions: actionView, lane: k, computed: splitSteps) else { valid = false; break }
                    total += weight * c
                    simulation.control(actionView, lane: k, lower: lower, upper: upper)
                    guard splitSteps ? simulation.finishStep(frameSkip) : simulation.step(frameSkip) else { valid = false; break }
                    weight *= gamma
                }
                if valid {
                    simulation.store(states, lane: k)
                    costs[k] += Float(total)
                } else {
                    simulation.invalidate(states, lane: k)
                    costs[k] = .nan
                }
            }
        }
        if done == nil {
            for c in 0..<dynamics.stateDimension { states[component: c].update(repeating: .nan, count: lanes) }
            costs.update(repeating: .nan, count: lanes)
        }
    }
}
