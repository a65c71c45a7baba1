import Models

/// A learned value at the end of every rollout: J(a) = Σ_t c(x_t, a_t) + w V(x_H), in place of the
/// task's own terminal cost. V amortises the backward message -ln p(O_{t:T} | s_t) (the paper's
/// Q-learning section; TD-MPC's learned terminal Q), so an H-step planner prices what happens
/// after its horizon.
///
/// Evaluates all K final states in one pass (``MLP/forwardLanes(lanes:input:output:scratch:)``);
/// holds its buffers, so one instance per planner, used from the planner's calling thread only.
public final class TerminalValue: @unchecked Sendable {
    public private(set) var network: ValueNetwork
    /// w, the value's weight in the rollout cost (1: the value's own cost units).
    public let weight: Float
    let dynamics: any BatchDynamics
    /// Feature columns of every lane, then the network's scratch.
    private let columns: UnsafeMutablePointer<Float>
    private var scratch: UnsafeMutablePointer<Float>
    private let values: UnsafeMutablePointer<Float>
    let capacity: Int

    public init(network: ValueNetwork, weight: Float, task: ControlTask, capacity: Int) throws(ConfigurationError) {
        guard network.taskName == task.name else {
            throw ConfigurationError(key: "value.file", reason: "the value network was made for task \(network.taskName), the task is \(task.name)")
        }
        guard weight.isFinite, weight >= 0 else { throw ConfigurationError(key: "value.weight", reason: "must be a finite number >= 0, got \(weight)") }
        self.network = network
        self.weight = weight
        dynamics = task.dynamics
        self.capacity = paddedLaneCount(capacity)
        columns = .allocate(capacity: task.dynamics.featureNames.count * self.capacity)
        scratch = .allocate(capacity: network.mlp.laneScratchCount)
        values = .allocate(capacity: self.capacity)
        values.initialize(repeating: 0, count: self.capacity)
    }

    deinit {
        values.deallocate()
        columns.deallocate()
        scratch.deallocate()
    }

    /// Swaps in new weights (a reload, or the target network during value iteration).
    public func replace(_ newNetwork: ValueNetwork) {
        if newNetwork.mlp.laneScratchCount > network.mlp.laneScratchCount {
            scratch.deallocate()
            scratch = .allocate(capacity: newNetwork.mlp.laneScratchCount)
        }
        network = newNetwork
    }

    /// costs[k] += factor w V(x_k) for every lane of `states` (factor: the discount γ^H); returns
    /// the term of lane `report`.
    @discardableResult
    func add(states: BatchView, into costs: UnsafeMutablePointer<Float>, factor: Float = 1, report: Int = 0) -> Float {
        precondition(states.lanes <= capacity)
        dynamics.writeFeatures(states: states, into: columns)
        network.evaluate(lanes: states.lanes, columns: columns, into: values, scratch: scratch)
        let w = factor * weight
        for k in 0..<states.lanes { costs[k] += w * values[k] }
        return w * values[report]
    }
}
