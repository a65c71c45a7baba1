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
        let nq = model.positionCount, nv = model.velocityCount
        func read(_ q: MuJoCoCostTerm.Quantity, _ k: Int, _ simulation: MuJoCoSimulation?) -> Double {
            switch q {
            case let .position(i): return Double(states[component: i][k])
            case let .velocity(i): return Double(states[component: nq + i][k])
            case let .activation(i): return Double(states[component: nq + nv + i][k])
            case let .control(u): return Double(actions![component: u][k])
            case let .sensor(address): return simulation!.sensorValue(address)
            case let .place(kind, id, axis): return component(simulation!.position(of: kind, id), axis)
            case let .motion(kind, id, axis): return component(simulation!.velocity(of: kind, id), axis)
            case let .distance(kind, id, other, otherID):
                let a = simulation!.position(of: kind, id), b = simulation!.position(of: other, otherID)
                return ((a.0 - b.0) * (a.0 - b.0) + (a.1 - b.1) * (a.1 - b.1) + (a.2 - b.2) * (a.2 - b.2)).squareRoot()
            case let .distanceToPoint(kind, id, point):
                let a = simulation!.position(of: kind, id)
                return ((a.0 - point.0) * (a.0 - point.0) + (a.1 - point.1) * (a.1 - point.1) + (a.2 - point.2) * (a.2 - point.2)).squareRoot()
            }
        }
        func component(_ v: (Double, Double, Double), _ axis: Int) -> Double { axis == 0 ? v.0 : (axis == 1 ? v.1 : v.2) }
        func laneCost(_ k: Int, _ simulation: MuJoCoSimulation?) -> Double {
            var total = 0.0
            for term in terms where (!terminal || term.terminal) && !(terminal && term.quantity.isControl) {
                total += term.cost(read(term.quantity, k, simulation))
            }
            return total
        }
        guard stage > .state else {
            for k in 0..<states.lanes { costs[k] += Float(laneCost(k, nil)) }
            return
        }
        let computed: Void? = model.withSimulation { simulation in
            for k in 0..<states.lanes {
                simulation.load(states, lane: k)
                costs[k] += simulation.compute(stage) ? Float(laneCost(k, simulation)) : .nan
            }
        }
        if computed == nil { costs.update(repeating: .nan, count: states.lanes) }
    }
}
