import Foundation
import Models

/// Distils the planner into an amortised network (`mpcd train`).
///
/// DAgger-style: each round runs the network-as-prior plus the planner closed-loop on the model
/// from random starts, so the states come from the distribution the network itself will meet;
/// every visited state is labelled with the planner's refined distribution (the first step for a
/// policy, all H steps for an amortised plan); then the network is fitted to all labels so far by
/// minimising KL(refined || network) with Adam on minibatches. Unless the configuration sets
/// `std_step`, labels are planned with β = 1, so that the std a label carries is the refined
/// distribution's width (MPPI's fixed noise would hand the network its initial or its own std).
public final class Distiller {
    public struct Settings: Sendable {
        public var rounds = 8
        public var episodesPerRound = 8
        public var stepsPerEpisode = 200
        public var epochsPerRound = 20
        public var batchSize = 256
        public var learningRate: Float = 3e-3
        public var seed: UInt64 = 0
        /// A value at the end of every labelling rollout (the labeller looks past its horizon);
        /// its discount must be the planner's.
        public var labelValue: ValueNetwork? = nil

        public init() {}
    }

    /// What a progress bar shows.
    public struct Progress: Sendable {
        public var round: Int
        public var rounds: Int
        public var phase: String
        public var fraction: Double
        public var loss: Float?
        public var samples: Int
    }

    public let task: ControlTask
    public let settings: Settings
    public private(set) var network: AmortisedNetwork
    public private(set) var optimiser: AdamOptimizer
    public private(set) var completedRounds = 0
    let plannerConfiguration: PlannerConfiguration
    /// Labelled data: network inputs and the refined means and stds, one row per visited state.
    private(set) var inputs: [Float] = []
    private(set) var targetMean: [Float] = []
    private(set) var targetStd: [Float] = []
    private var random: UInt64

    public init(task: ControlTask, planner: PlannerConfiguration, network: AmortisedNetwork, settings: Settings) {
        self.task = task
        var labelling = planner
        labelling.stdStep = planner.stdStep ?? 1
        self.plannerConfiguration = labelling
        self.network = network
        self.settings = settings
        optimiser = AdamOptimizer(parameterCount: network.mlp.parameters.count, learningRate: settings.learningRate)
        random = settings.seed ^ 0x5DEE_CE66_D1CE_4E5B
    }

    public var sampleCount: Int { inputs.count / max(1, network.mlp.architecture.inputs) }

    private func uniform() -> Float {
        Float(splitMix64(&random) >> 40) / Float(1 << 24)
    }

    /// Runs the remaining rounds, reporting progress; `checkpoint` runs after every round.
    public func run(progress: (Progress) -> Void, checkpoint: (Distiller) throws -> Void) throws {
        while completedRounds < settings.rounds {
            let round = completedRounds
            try collect(round: round, progress: progress)
            fit(round: round, progress: progress)
            completedRounds += 1
            try checkpoint(self)
        }
    }

    private func collect(round: Int, progress: (Progress) -> Void) throws {
        var configuration = plannerConfiguration
        configuration.seed = settings.seed &+ UInt64(round) &* 1_000_003
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        try planner.installValue(settings.labelValue)
        // The first round has no trained network to follow; later rounds plan from it.
        if round > 0 { planner.actionPrior = try NetworkPrior(network: network, task: task, horizon: configuration.horizon) }
        let steps = network.kind == .policy ? 1 : network.horizon, m = task.dynamics.actionDimension
        let total = settings.episodesPerRound * settings.stepsPerEpisode
        for episode in 0..<settings.episodesPerRound {
            planner.reset()
            var state = task.dynamics.randomInitialState(uniform)
            for step in 0..<settings.stepsPerEpisode {
                let plan = planner.plan(state: state)
                if !plan.failed {
                    inputs += task.dynamics.features(of: state)
                    targetMean += plan.sequence.mean.prefix(steps * m)
                    targetStd += plan.sequence.std.prefix(steps * m)
                }
                state = task.step(state: state, action: plan.action).next
                if !state.allSatisfy({ $0.isFinite }) { break }
                let done = episode * settings.stepsPerEpisode + step + 1
                if done % 50 == 0 {
                    progress(Progress(round: round, rounds: settings.rounds, phase: "collect", fraction: Double(done) / Double(total), loss: nil, samples: sampleCount))
                }
            }
        }
    }

    /// Fits the network to every label so far; returns the last epoch's mean loss.
    @discardableResult
    func fit(round: Int, progress: (Progress) -> Void) -> Float {
        let n = sampleCount, width = network.mlp.architecture.inputs, outputs = network.mlp.architecture.outputs
        guard n > 0 else { return .nan }
        let batch = min(settings.batchSize, n)
        let workspace = network.makeWorkspace(capacity: batch)
        let gradient = UnsafeMutablePointer<Float>.allocate(capacity: network.mlp.parameters.count)
        let batchMean = UnsafeMutablePointer<Float>.allocate(capacity: batch * outputs)
        let batchStd = UnsafeMutablePointer<Float>.allocate(capacity: batch * outputs)
        defer { gradient.deallocate(); batchMean.deallocate(); batchStd.deallocate() }
        var order = Array(0..<n)
        var epochLoss: Float = .nan
        for epoch in 0..<settings.epochsPerRound {
            for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, Int(uniform() * Float(i + 1)) % (i + 1)) }
            var total: Double = 0, batches = 0
            for start in stride(from: 0, to: n - batch + 1, by: batch) {
                for (row, index) in order[start..<(start + batch)].enumerated() {
                    for j in 0..<width { workspace.input[row * width + j] = inputs[index * width + j] }
                    for j in 0..<outputs {
                        batchMean[row * outputs + j] = targetMean[index * outputs + j]
                        batchStd[row * outputs + j] = targetStd[index * outputs + j]
                    }
                }
                total += Double(network.klLossAndGradient(rows: batch, workspace: workspace, targetMean: batchMean, targetStd: batchStd, gradient: gradient))
                batches += 1
                optimiser.update(&network.mlp.parameters, gradient: gradient)
            }
            epochLoss = Float(total / Double(max(1, batches)))
            progress(Progress(round: round, rounds: settings.rounds, phase: "fit", fraction: Double(epoch + 1) / Double(settings.epochsPerRound), loss: epochLoss, samples: n))
        }
        network.version += 1
        return epochLoss
    }

    // MARK: - Checkpoints

    /// Everything needed to resume: the network, the optimiser, the labels and the round count.
    public func checkpointData(metadata extra: [String: String] = [:]) -> Data {
        TrainingCheckpoint(network: network.encode(), optimiser: optimiser, rounds: completedRounds, random: random, tensors: [
            "checkpoint.inputs": .init(shape: [inputs.count], values: inputs),
            "checkpoint.target_mean": .init(shape: [targetMean.count], values: targetMean),
            "checkpoint.target_std": .init(shape: [targetStd.count], values: targetStd),
        ]).encoded(metadata: extra)
    }

    /// Restores a checkpoint written by `checkpointData()` for the same task and architecture.
    public func restore(_ data: Data, path: String) throws {
        let names = ["checkpoint.inputs", "checkpoint.target_mean", "checkpoint.target_std"]
        let checkpoint = try TrainingCheckpoint(decoding: data, tensors: names,
                                                learningRate: settings.learningRate, path: path, kind: "a training checkpoint")
        let restored = try AmortisedNetwork.decode(checkpoint.network, for: task, path: path)
        guard restored.kind == network.kind, restored.mlp.architecture == network.mlp.architecture else {
            throw AmortisedNetwork.LoadError(path: path, reason: "the checkpoint's network differs from the one asked for (kind, layers or horizon)")
        }
        try checkpoint.checkState(parameterCount: restored.mlp.parameters.count, path: path)
        let (savedInputs, savedMean, savedStd) = (checkpoint.tensors[names[0]]!.values, checkpoint.tensors[names[1]]!.values,
                                                  checkpoint.tensors[names[2]]!.values)
        // labels of one row per state, as collect() writes them: otherwise fit() would index past them
        let width = restored.mlp.architecture.inputs, outputs = restored.mlp.architecture.outputs
        let rows = savedInputs.count / width
        guard savedInputs.count == rows * width, savedMean.count == rows * outputs, savedStd.count == rows * outputs,
              savedInputs.allSatisfy(\.isFinite), savedMean.allSatisfy(\.isFinite), savedStd.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw AmortisedNetwork.LoadError(path: path, reason: "a damaged checkpoint: its labels are not one finite row per state (\(width) inputs, \(outputs) means and stds > 0)")
        }
        network = restored
        optimiser = checkpoint.optimiser
        inputs = savedInputs
        targetMean = savedMean
        targetStd = savedStd
        random = checkpoint.random
        completedRounds = checkpoint.rounds
    }
}
