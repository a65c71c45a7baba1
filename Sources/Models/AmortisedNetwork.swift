import Foundation

/// An amortised model: a network that maps a state to an action distribution in one pass.
///
/// - a **policy** q(a_t | s_t): a diagonal Gaussian over one action;
/// - an **amortised plan** q(a_t .. a_{t+H-1} | s_t): the means and stds of a whole H-step
///   sequence at once.
///
/// The network's mean head is squashed into the action bounds, `mean = centre + half * tanh(raw)`;
/// its log-std head is clamped to [`logStdMin`, `logStdMax`] and scaled by the half range,
/// `std = half * exp(raw)`. Inputs are the task's `features(of:)` (for the pendulum Gymnasium's
/// `[cos th, sin th, thdot]`).
public struct AmortisedNetwork: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case policy, plan
    }

    public let kind: Kind
    public let taskName: String
    public var mlp: MLP
    /// Steps the network outputs: 1 for a policy, H for an amortised plan.
    public let horizon: Int
    public let actionDimension: Int
    public let centre: [Float], halfRange: [Float]
    public static let logStdMin: Float = -5, logStdMax: Float = 2
    /// Counts the updates of these weights (training, online amortisation).
    public var version: Int

    public init(kind: Kind, task: ControlTask, horizon: Int = 1, hidden: [Int] = [64, 64],
                activation: MLPArchitecture.Activation = .tanh, seed: UInt64 = 0) {
        let d = task.dynamics
        let steps = kind == .policy ? 1 : horizon
        let architecture = MLPArchitecture(inputs: d.featureNames.count, hidden: hidden,
                                           outputs: steps * d.actionDimension, activation: activation)
        self.init(kind: kind, task: task, horizon: steps, mlp: MLP(architecture: architecture, seed: seed), version: 0)
    }

    init(kind: Kind, task: ControlTask, horizon: Int, mlp: MLP, version: Int) {
        self.kind = kind
        self.taskName = task.name
        self.mlp = mlp
        self.horizon = horizon
        self.actionDimension = task.dynamics.actionDimension
        centre = zip(task.dynamics.actionLowerBounds, task.dynamics.actionUpperBounds).map { ($0 + $1) / 2 }
        halfRange = zip(task.dynamics.actionLowerBounds, task.dynamics.actionUpperBounds).map { ($1 - $0) / 2 }
        self.version = version
    }

    /// Squashes the raw head outputs of `rows` rows of `workspace` into action-space means and stds.
    public func squash(rows: Int, workspace: MLPWorkspace, mean: UnsafeMutablePointer<Float>, std: UnsafeMutablePointer<Float>) {
        let outputs = mlp.architecture.outputs
        for i in 0..<(rows * outputs) {
            let a = i % actionDimension
            let t = VectorMath.tanh(Lanes(repeating: workspace.rawMean[i]))[0]
            mean[i] = centre[a] + halfRange[a] * t
            let logStd = Swift.min(Swift.max(workspace.rawLogStd[i], Self.logStdMin), Self.logStdMax)
            std[i] = halfRange[a] * Foundation.exp(logStd)
        }
    }

    /// The action-space distribution for one state: `horizon * actionDimension` means and stds,
    /// time-major. Allocates its outputs: for per-tick use, not inner loops.
    public func distribution(features: [Float], workspace: MLPWorkspace) -> (mean: [Float], std: [Float]) {
        precondition(features.count == mlp.architecture.inputs)
        workspace.input.update(from: features, count: features.count)
        mlp.forward(rows: 1, workspace: workspace)
        let n = mlp.architecture.outputs
        var mean = [Float](repeating: 0, count: n), std = [Float](repeating: 0, count: n)
        mean.withUnsafeMutableBufferPointer { m in
            std.withUnsafeMutableBufferPointer { s in squash(rows: 1, workspace: workspace, mean: m.baseAddress!, std: s.baseAddress!) }
        }
        return (mean, std)
    }

    public func makeWorkspace(capacity: Int = 1) -> MLPWorkspace { MLPWorkspace(architecture: mlp.architecture, capacity: capacity) }

    // MARK: - Weights files

    /// A weights file that cannot be used, with the reason.
    public struct LoadError: Error, CustomStringConvertible, Equatable {
        public let path: String
        public let reason: String
        public var description: String { "\(path): \(reason)" }

        public init(path: String, reason: String) {
            self.path = path
            self.reason = reason
        }
    }

    static func tensorNames(hiddenLayers: Int) -> [String] {
        (0..<hiddenLayers).map { "hidden.\($0)" } + ["mean", "log_std"]
    }

    /// The safetensors file of these weights; the architecture goes in `__metadata__`.
    public func encode() -> Data {
        let a = mlp.architecture
        var tensors: [String: SafeTensors.Tensor] = [:]
        for (name, (shape, offsets)) in zip(Self.tensorNames(hiddenLayers: a.hidden.count), zip(a.layerShapes, mlp.layerOffsets)) {
            let weights = Array(mlp.parameters[offsets.weights..<(offsets.weights + shape.rows * shape.columns)])
            tensors["\(name).weight"] = .init(shape: [shape.rows, shape.columns], values: weights)
            tensors["\(name).bias"] = .init(shape: [shape.rows], values: Array(mlp.parameters[offsets.bias..<(offsets.bias + shape.rows)]))
        }
        let metadata = [
            "format": "mpcd-network", "format_version": "1", "kind": kind.rawValue, "task": taskName,
            "inputs": String(a.inputs), "hidden": a.hidden.map(String.init).joined(separator: ","),
            "outputs": String(a.outputs), "activation": a.activation.rawValue, "horizon": String(horizon),
            "actions": String(actionDimension), "log_std_min": String(Self.logStdMin), "log_std_max": String(Self.logStdMax),
            "version": String(version),
        ]
        return SafeTensors.encode(.init(metadata: metadata, tensors: tensors))
    }

    public func save(to path: String) throws { try writeAtomically(encode(), to: path) }

    public static func load(path: String, for task: ControlTask) throws(LoadError) -> AmortisedNetwork {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw LoadError(path: path, reason: "cannot be read (\((error as NSError).localizedDescription))")
        }
        return try decode(data, for: task, path: path)
    }

    /// Checks dtypes, shapes, finite values and that the network fits `task`, with the reason.
    public static func decode(_ data: Data, for task: ControlTask, path: String) throws(LoadError) -> AmortisedNetwork {
        func fail(_ reason: String) -> LoadError { LoadError(path: path, reason: reason) }
        let file: SafeTensors.File
        do {
            file = try SafeTensors.decode(data)
        } catch {
            throw fail(error.reason)
        }
        let m = file.metadata
        guard m["format"] == "mpcd-network" else { throw fail("not an mpcd network (__metadata__ format is \(m["format"].map { "\"\($0)\"" } ?? "missing"))") }
        guard let kindName = m["kind"], let kind = Kind(rawValue: kindName) else { throw fail("__metadata__ kind must be policy or plan") }
        guard m["task"] == task.name else { throw fail("made for task \(m["task"] ?? "?"), but the task is \(task.name)") }
        guard let inputs = m["inputs"].flatMap(Int.init), let outputs = m["outputs"].flatMap(Int.init),
              let horizon = m["horizon"].flatMap(Int.init), let actions = m["actions"].flatMap(Int.init),
              let activation = m["activation"].flatMap(MLPArchitecture.Activation.init(rawValue:)) else {
            throw fail("__metadata__ needs inputs, outputs, horizon, actions and activation (tanh or relu)")
        }
        let hiddenText = m["hidden"] ?? ""
        let hidden = hiddenText.isEmpty ? [] : hiddenText.split(separator: ",").compactMap { Int($0) }
        guard hidden.count == (hiddenText.isEmpty ? 0 : hiddenText.split(separator: ",").count), hidden.allSatisfy({ $0 > 0 }) else {
            throw fail("__metadata__ hidden must list positive layer widths, got \"\(hiddenText)\"")
        }
        let d = task.dynamics
        guard inputs == d.featureNames.count else {
            throw fail("takes \(inputs) inputs, the task has \(d.featureNames.count) (\(d.featureNames.joined(separator: ", ")))")
        }
        guard actions == d.actionDimension else { throw fail("outputs \(actions) actions, the task has \(d.actionDimension)") }
        guard horizon >= 1, kind == .plan || horizon == 1, outputs == horizon * actions else {
            throw fail("outputs \(outputs) values, expected \(kind == .policy ? 1 : horizon) steps x \(actions) actions")
        }
        let architecture = MLPArchitecture(inputs: inputs, hidden: hidden, outputs: outputs, activation: activation)
        var parameters: [Float] = []
        parameters.reserveCapacity(architecture.parameterCount)
        for (name, shape) in zip(tensorNames(hiddenLayers: hidden.count), architecture.layerShapes) {
            for (suffix, expected) in [("weight", [shape.rows, shape.columns]), ("bias", [shape.rows])] {
                guard let tensor = file.tensors["\(name).\(suffix)"] else { throw fail("tensor \(name).\(suffix) is missing") }
                guard tensor.shape == expected else { throw fail("tensor \(name).\(suffix) has shape \(tensor.shape), expected \(expected)") }
                if let bad = tensor.values.firstIndex(where: { !$0.isFinite }) {
                    throw fail("tensor \(name).\(suffix) value \(bad) is not finite")
                }
                parameters += tensor.values
            }
        }
        let expected = Set(tensorNames(hiddenLayers: hidden.count).flatMap { ["\($0).weight", "\($0).bias"] })
        if let extra = Set(file.tensors.keys).subtracting(expected).sorted().first { throw fail("unexpected tensor \(extra)") }
        return AmortisedNetwork(kind: kind, task: task, horizon: horizon, mlp: MLP(architecture: architecture, parameters: parameters),
                                version: m["version"].flatMap(Int.init) ?? 0)
    }
}
