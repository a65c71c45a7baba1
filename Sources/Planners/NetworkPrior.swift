import Models

/// An amortised network as the planner's action prior (the paper's appendix: set the action prior
/// p(a | s) to the amortised q_phi(a | s) and refine it iteratively).
///
/// - a **policy** gives one step: its mean is rolled through the model for H steps, each step's
///   action the policy's mean in the predicted state, each step's std the policy's std there;
/// - an **amortised plan** gives the whole H-step sequence in one forward pass.
///
/// Holds a one-row workspace: one instance per planner, not shared across threads.
public final class NetworkPrior: ActionPrior, @unchecked Sendable {
    public private(set) var network: AmortisedNetwork
    let task: ControlTask
    let horizon: Int
    private var workspace: MLPWorkspace
    // One state stepped through the batched model in lane 0 of an 8-lane batch: no allocation per step.
    private let stepStates: UnsafeMutablePointer<Float>
    private let stepActions: UnsafeMutablePointer<Float>

    /// Checks that `network` fits `horizon` (an amortised plan must output exactly H steps).
    public init(network: AmortisedNetwork, task: ControlTask, horizon: Int) throws(ConfigurationError) {
        guard network.kind == .policy || network.horizon == horizon else {
            throw ConfigurationError(key: "prior.file", reason: "the amortised plan outputs \(network.horizon) steps, but planner.horizon is \(horizon)")
        }
        self.network = network
        self.task = task
        self.horizon = horizon
        workspace = network.makeWorkspace()
        stepStates = .allocate(capacity: task.dynamics.stateDimension * laneWidth)
        stepStates.initialize(repeating: 0, count: task.dynamics.stateDimension * laneWidth)
        stepActions = .allocate(capacity: task.dynamics.actionDimension * laneWidth)
        stepActions.initialize(repeating: 0, count: task.dynamics.actionDimension * laneWidth)
    }

    deinit {
        stepStates.deallocate()
        stepActions.deallocate()
    }

    /// Swaps in new weights of the same architecture (online amortisation, `mpcctl policy load`).
    public func replace(_ newNetwork: AmortisedNetwork) {
        if newNetwork.mlp.architecture != network.mlp.architecture { workspace = newNetwork.makeWorkspace() }
        network = newNetwork
    }

    public func prior(for state: [Float], warmStart: GaussianSequence?) -> GaussianSequence? {
        let dynamics = task.dynamics, m = dynamics.actionDimension
        switch network.kind {
        case .plan:
            let (mean, std) = network.distribution(features: dynamics.features(of: state), workspace: workspace)
            return GaussianSequence(horizon: horizon, actionDimension: m, mean: mean, std: std)
        case .policy:
            let n = dynamics.stateDimension, outputs = horizon * m
            var mean = [Float](repeating: 0, count: outputs), std = [Float](repeating: 0, count: outputs)
            for i in 0..<n { stepStates[i * laneWidth] = state[i] }
            let states = BatchView(base: stepStates, stride: laneWidth, lanes: laneWidth)
            let actions = BatchView(base: stepActions, stride: laneWidth, lanes: laneWidth)
            var s = state
            mean.withUnsafeMutableBufferPointer { meanBuffer in
                std.withUnsafeMutableBufferPointer { stdBuffer in
                    for t in 0..<horizon {
                        let features = dynamics.features(of: s)
                        workspace.input.update(from: features, count: features.count)
                        network.mlp.forward(rows: 1, workspace: workspace)
                        network.squash(rows: 1, workspace: workspace, mean: meanBuffer.baseAddress! + t * m, std: stdBuffer.baseAddress! + t * m)
                        guard t + 1 < horizon else { break }
                        for a in 0..<m { stepActions[a * laneWidth] = meanBuffer[t * m + a] }
                        dynamics.step(states: states, actions: actions)
                        for i in 0..<n { s[i] = stepStates[i * laneWidth] }
                    }
                }
            }
            guard s.allSatisfy({ $0.isFinite }) else { return nil }
            return GaussianSequence(horizon: horizon, actionDimension: m, mean: mean, std: std)
        }
    }
}
