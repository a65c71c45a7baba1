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

    /// The safetensors file of these weights; the architecture goes in `__metadata__`.
    public func encode() -> Data {
        NetworkFile.encode(mlp, kind: kind.rawValue, task: taskName, metadata: [
            "horizon": String(horizon), "actions": String(actionDimension), "log_std_min": String(Self.logStdMin),
            "log_std_max": String(Self.logStdMax), "version": String(version),
        ])
    }

    public func save(to path: String) throws { try writeAtomically(encode(), to: path) }

    public static func load(path: String, for task: ControlTask) throws(LoadError) -> AmortisedNetwork {
        try decode(NetworkFile.read(path: path), for: task, path: path)
    }

    /// Checks dtypes, shapes, finite values and that the network fits `task`, with the reason.
    public static func decode(_ data: Data, for task: ControlTask, path: String) throws(LoadError) -> AmortisedNetwork {
        var horizon = 1, kind = Kind.policy
        let (mlp, m) = try NetworkFile.decode(data, for: task, path: path, kinds: Kind.allCases.map(\.rawValue)) { m, a throws(LoadError) in
            kind = Kind(rawValue: m["kind"]!)!
            guard let steps = m["horizon"].flatMap(Int.init), let actions = m["actions"].flatMap(Int.init) else {
                throw LoadError(path: path, reason: "__metadata__ needs horizon and actions")
            }
            guard actions == task.dynamics.actionDimension else {
                throw LoadError(path: path, reason: "outputs \(actions) actions, the task has \(task.dynamics.actionDimension)")
            }
            guard steps >= 1, kind == .plan || steps == 1, a.outputs == steps.multipliedReportingOverflow(by: actions).partialValue,
                  !steps.multipliedReportingOverflow(by: actions).overflow else {
                throw LoadError(path: path, reason: "outputs \(a.outputs) values, expected \(kind == .policy ? 1 : steps) steps x \(actions) actions")
            }
            horizon = steps
        }
        return AmortisedNetwork(kind: kind, task: task, horizon: horizon, mlp: mlp, version: m["version"].flatMap(Int.init) ?? 0)
    }
}
