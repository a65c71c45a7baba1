/// The model of a system to control: how a batch of states moves under a batch of actions.
///
/// Implementations advance all lanes of a ``BatchView`` in one call; the planner calls `step`
/// once per horizon step for all K samples, never per sample.
public protocol BatchDynamics: Sendable {
    /// Names of the state components, in order (the layout the planner and the wire use).
    var stateNames: [String] { get }
    var actionNames: [String] { get }
    var actionLowerBounds: [Float] { get }
    var actionUpperBounds: [Float] { get }
    /// Seconds of real time one `step` covers.
    var dt: Float { get }
    /// Observation layouts `state(fromObservation:)` accepts, told apart by their length.
    var observationForms: [ObservationForm] { get }

    /// x <- f(x, u) for every lane, in place. Actions outside the bounds are clipped first.
    func step(states: BatchView, actions: BatchView)

    /// The internal state for an observation in one of `observationForms`.
    func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float]

    /// Names of the inputs a network sees for a state (default: the state itself).
    var featureNames: [String] { get }

    /// A network's input for a state: continuous, bounded features (default: the state itself).
    func features(of state: [Float]) -> [Float]

    /// `features(of:)` for every lane of a batch, feature-major into `columns` (feature i of lane k
    /// at `columns[i * lanes + k]`), for a network evaluated on all K rollouts at once.
    func writeFeatures(states: BatchView, into columns: UnsafeMutablePointer<Float>)

    /// A random start state, for training: `uniform()` returns numbers in [0, 1).
    func randomInitialState(_ uniform: () -> Float) -> [Float]

    /// A random state from the whole region a controller may visit (default: a start state), for
    /// learning a value everywhere it will be asked.
    func randomState(_ uniform: () -> Float) -> [Float]
}

/// Dynamics that wrap others and change only `step` (fault injection, tests): everything else is
/// the inner model's.
public protocol ForwardingDynamics: BatchDynamics {
    var inner: any BatchDynamics { get }
}

extension ForwardingDynamics {
    public var stateNames: [String] { inner.stateNames }
    public var actionNames: [String] { inner.actionNames }
    public var actionLowerBounds: [Float] { inner.actionLowerBounds }
    public var actionUpperBounds: [Float] { inner.actionUpperBounds }
    public var dt: Float { inner.dt }
    public var observationForms: [ObservationForm] { inner.observationForms }
    public var featureNames: [String] { inner.featureNames }
    public func features(of state: [Float]) -> [Float] { inner.features(of: state) }
    public func writeFeatures(states: BatchView, into columns: UnsafeMutablePointer<Float>) { inner.writeFeatures(states: states, into: columns) }
    public func randomInitialState(_ uniform: () -> Float) -> [Float] { inner.randomInitialState(uniform) }
    public func randomState(_ uniform: () -> Float) -> [Float] { inner.randomState(uniform) }
    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] { try inner.state(fromObservation: observation) }
}

/// What the planner minimises: a running cost c(x_t, u_t) on the pre-step state and a terminal
/// cost on the last state. Costs are added into a per-lane accumulator.
public protocol BatchCost: Sendable {
    func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>)
    func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>)
    /// The parameters a session may set at run time, with this cost's values (none by default;
    /// `Sources/Models/TaskParameters.swift`).
    var parameters: [TaskParameter] { get }
    /// This cost with `name` set to `values`, which ``ControlTask/settingParameters(_:)`` has
    /// checked against the declaration (known name, right length, finite, within bounds). The
    /// planner reads its task's cost at every rollout, so the copy takes effect from the next plan.
    func setting(_ name: String, to values: [Float]) -> any BatchCost
}

/// A named observation layout, e.g. Gymnasium's `[cos th, sin th, thdot]` for the pendulum.
public struct ObservationForm: Sendable, Equatable {
    public let name: String
    public let components: [String]

    public init(name: String, components: [String]) {
        self.name = name
        self.components = components
    }
}

public enum ObservationError: Error, Equatable, CustomStringConvertible {
    case wrongLength(got: Int, accepted: [Int])
    case nonFinite(index: Int)

    public var description: String {
        switch self {
        case let .wrongLength(got, accepted):
            let forms = accepted.map(String.init).joined(separator: " or ")
            return "observation has \(got) values; this task accepts \(forms)"
        case let .nonFinite(index):
            return "observation value \(index) is not finite (or beyond float32's range)"
        }
    }
}

extension BatchDynamics {
    public var featureNames: [String] { stateNames }
    public func randomInitialState(_ uniform: () -> Float) -> [Float] { Array(repeating: 0, count: stateDimension) }
    public func features(of state: [Float]) -> [Float] { state }
    public func randomState(_ uniform: () -> Float) -> [Float] { randomInitialState(uniform) }

    /// Copies the state when the features are the state; otherwise goes through `features(of:)`
    /// lane by lane (tasks with other features override this to stay allocation-free).
    public func writeFeatures(states: BatchView, into columns: UnsafeMutablePointer<Float>) {
        let n = stateDimension, lanes = states.lanes
        if featureNames == stateNames {
            for c in 0..<n { (columns + c &* lanes).update(from: states[component: c], count: lanes) }
            return
        }
        let width = featureNames.count
        for k in 0..<lanes {
            let f = features(of: (0..<n).map { states[component: $0][k] })
            for c in 0..<width { columns[c &* lanes &+ k] = f[c] }
        }
    }

    public var stateDimension: Int { stateNames.count }
    public var actionDimension: Int { actionNames.count }

    /// The default reading: the observation is the state itself.
    public func stateFromObservationIdentity(_ observation: [Double]) throws(ObservationError) -> [Float] {
        try checkFinite(observation)
        guard observation.count == stateDimension else {
            throw .wrongLength(got: observation.count, accepted: observationForms.map(\.components.count))
        }
        return observation.map { Float($0) }
    }

    /// Refuses a value that is not finite, or finite as a Double but not as the planner's Float
    /// (1e39, 1e308): it would reach the model as an infinity.
    public func checkFinite(_ observation: [Double]) throws(ObservationError) {
        if let bad = observation.firstIndex(where: { !(abs($0) <= Double(Float.greatestFiniteMagnitude)) }) { throw .nonFinite(index: bad) }
    }
}

/// A model that rolls each lane through a whole action sequence at once, with its running cost:
/// a simulator keeps its own full-precision state (and its solver's warm start) from step to step,
/// where the step-by-step ``BatchDynamics`` would store every lane to floats and load it back.
public protocol SequenceRollout: Sendable {
    /// For lanes 0 ..< `live` of `states`: x_{t+1} = f(x_t, a_t) for t < `horizon` under the action
    /// rows at `actions` (row t * A + a, `actionStride` apart), adding Σ_t γ^t c(x_t, a_t) to `costs`
    /// and leaving x_H in `states`, as the step-by-step loop would. Lanes from `live` on are padding:
    /// left as they are.
    func rollOut(states: BatchView, live: Int, actions: UnsafeMutablePointer<Float>, actionStride: Int, horizon: Int, discount: Float,
                 into costs: UnsafeMutablePointer<Float>)
}

/// A model and the cost to plan against it: what the planner is given.
public struct ControlTask: Sendable {
    public let name: String
    public let dynamics: any BatchDynamics
    public let cost: any BatchCost
    /// The model and its running cost rolled out a lane at a time, where that is faster; the
    /// planner then uses it instead of `dynamics` and `cost`'s running part.
    public var sequenceRollout: (any SequenceRollout)?

    public init(name: String, dynamics: any BatchDynamics, cost: any BatchCost, sequenceRollout: (any SequenceRollout)? = nil) {
        self.name = name
        self.dynamics = dynamics
        self.cost = cost
        self.sequenceRollout = sequenceRollout
    }
}
