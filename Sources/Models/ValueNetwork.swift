import Foundation

/// An amortised value V(s): the cost still to come from state s under good control, that is the
/// backward message -ln p(O_t:T | s_t) of the paper's Q-learning section, learned by a network.
/// Put at the end of every rollout, it lets an H-step planner see past its horizon.
///
/// The same perceptron and file layout as the policies: its mean head has one output, and
/// V = `scale` x that output (`scale` keeps the raw output near 1 whatever the task's cost units).
/// The log-std head is carried but unused.
public struct ValueNetwork: Sendable, Equatable {
    public let taskName: String
    public var mlp: MLP
    public var scale: Float
    /// γ per step the value was learned with: a planner must discount its costs the same way.
    public var discount: Float = 1
    /// The least cost-to-go there can be (0 when every cost term is non-negative, as in every
    /// built-in task), or nil. Values are clamped to it where they are used, so a planner cannot
    /// exploit the network's errors below it, nor can value iteration feed them back.
    public var minimum: Float? = 0
    /// Counts the updates of these weights (value-iteration rounds).
    public var version: Int

    public init(task: ControlTask, hidden: [Int] = [32, 32], activation: MLPArchitecture.Activation = .tanh,
                scale: Float = 1, seed: UInt64 = 0) {
        let architecture = MLPArchitecture(inputs: task.dynamics.featureNames.count, hidden: hidden, outputs: 1, activation: activation)
        self.init(taskName: task.name, mlp: MLP(architecture: architecture, seed: seed), scale: scale, version: 0)
    }

    init(taskName: String, mlp: MLP, scale: Float, version: Int) {
        self.taskName = taskName
        self.mlp = mlp
        self.scale = scale
        self.version = version
    }

    public func makeWorkspace(capacity: Int) -> MLPWorkspace { MLPWorkspace(architecture: mlp.architecture, capacity: capacity) }

    /// V of `lanes` feature columns (feature-major, as `BatchDynamics.writeFeatures` writes them),
    /// written to `values`; `scratch` holds `mlp.laneScratchCount` floats.
    public func evaluate(lanes: Int, columns: UnsafeMutablePointer<Float>, into values: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        mlp.forwardLanes(lanes: lanes, input: columns, output: values, scratch: scratch)
        let floor = minimum ?? -.infinity
        for k in 0..<lanes { values[k] = Swift.max(scale * values[k], floor) }
    }

    /// V of one state's features. Allocates nothing but is not for inner loops (one forward pass).
    public func value(features: [Float], workspace: MLPWorkspace) -> Float {
        precondition(features.count == mlp.architecture.inputs)
        workspace.input.update(from: features, count: features.count)
        mlp.forward(rows: 1, workspace: workspace)
        return Swift.max(scale * workspace.rawMean[0], minimum ?? -.infinity)
    }

    /// The mean over `rows` rows of (V - target)^2 / scale^2 for the inputs already in
    /// `workspace.input`, and its gradient with respect to every parameter (into `gradient`).
    public func squaredErrorLossAndGradient(rows: Int, workspace: MLPWorkspace, targets: UnsafePointer<Float>,
                                            gradient: UnsafeMutablePointer<Float>) -> Float {
        mlp.forward(rows: rows, workspace: workspace)
        let factor = 2 / Float(rows), inverseScale = 1 / scale
        var loss: Double = 0
        for r in 0..<rows {
            let error = workspace.rawMean[r] - targets[r] * inverseScale
            loss += Double(error * error)
            workspace.headDeltaMean[r] = factor * error
            workspace.headDeltaLogStd[r] = 0
        }
        mlp.backward(rows: rows, workspace: workspace, gradient: gradient)
        return Float(loss / Double(rows))
    }

    // MARK: - Weights files

    public func encode() -> Data {
        NetworkFile.encode(mlp, kind: "value", task: taskName, metadata: ["value_scale": String(scale), "discount": String(discount),
                                                                           "min_value": minimum.map { String($0) } ?? "none", "version": String(version)])
    }

    public func save(to path: String) throws { try writeAtomically(encode(), to: path) }

    public static func load(path: String, for task: ControlTask) throws(AmortisedNetwork.LoadError) -> ValueNetwork {
        try decode(NetworkFile.read(path: path), for: task, path: path)
    }

    /// Checks the file as a value network for `task` (kind "value", one output, a positive finite
    /// scale), with the reason when it cannot be used.
    public static func decode(_ data: Data, for task: ControlTask, path: String) throws(AmortisedNetwork.LoadError) -> ValueNetwork {
        var scale: Float = 1, discount: Float = 1, minimum: Float? = nil
        let (mlp, m) = try NetworkFile.decode(data, for: task, path: path, kinds: ["value"]) { m, a throws(AmortisedNetwork.LoadError) in
            guard a.outputs == 1 else { throw AmortisedNetwork.LoadError(path: path, reason: "a value network has 1 output, this one \(a.outputs)") }
            guard let s = m["value_scale"].flatMap(Float.init), s.isFinite, s > 0 else {
                throw AmortisedNetwork.LoadError(path: path, reason: "__metadata__ value_scale must be a positive number, got \(m["value_scale"].map { "\"\($0)\"" } ?? "nothing")")
            }
            scale = s
            if let text = m["discount"] {
                guard let g = Float(text), g > 0, g <= 1 else {
                    throw AmortisedNetwork.LoadError(path: path, reason: "__metadata__ discount must lie in (0, 1], got \"\(text)\"")
                }
                discount = g
            }
            if let text = m["min_value"], text != "none" {
                guard let floor = Float(text), floor.isFinite else {
                    throw AmortisedNetwork.LoadError(path: path, reason: "__metadata__ min_value must be a number or \"none\", got \"\(text)\"")
                }
                minimum = floor
            }
        }
        var network = ValueNetwork(taskName: task.name, mlp: mlp, scale: scale, version: m["version"].flatMap(Int.init) ?? 0)
        network.discount = discount
        network.minimum = minimum
        return network
    }
}
