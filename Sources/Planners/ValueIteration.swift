import Foundation
import Models

/// Fitted value iteration on the model, with the planner as the minimiser (`mpcd train --value`).
///
/// The paper's Q-learning section amortises the backward messages ln p(O_t:T | s_t); for costs
/// that is a value V(s). Each round:
///
/// 1. states: a share drawn from the whole state space (`randomState`), the rest visited by the
///    planner running closed-loop with the current value from the task's start states;
/// 2. targets: from each state the planner (K samples, H steps, the target network V' at the end
///    of every rollout) runs its iterations, and the target is the soft minimum of the last
///    iteration's rollout costs, y = -τ ln((1/K) Σ_k exp(-J_k / τ)) with
///    J_k = Σ_t γ^t c(x_t, a_t) + γ^H V'(x_H) (γ: the planner's discount); τ = 0 takes the hard
///    minimum, over the samples and the refined plan's mean sequence;
/// 3. fit: V to y by least squares (Adam on minibatches);
/// 4. the target network moves a step towards V: V' <- (1 - ρ) V' + ρ V.
///
/// The first round has no value yet (its targets are the H-step costs alone) and sets the
/// network's output scale from them. Each round looks H steps further. Without a discount any
/// constant added to V is as good a fixed point as V itself, and the small biases of a sampled
/// minimum (too high from sampling, too low from exploiting V's errors) accumulate in it round
/// after round; γ < 1 makes the update a contraction by γ^H and pins it.
public final class ValueIteration {
    public struct Settings: Sendable {
        public var rounds = 60
        public var statesPerRound = 2048
        /// Share of each round's states from closed-loop runs (the rest from the state space).
        public var closedLoopShare: Float = 0.25
        public var episodeSteps = 200
        /// Planner iterations per target (from a fresh start).
        public var targetIterations = 3
        /// τ of the soft minimum; 0: the hard minimum.
        public var softMinTemperature: Float = 0
        /// ρ, how far the target network moves towards the fitted one each round.
        public var targetRate: Float = 0.5
        public var epochsPerRound = 20
        public var batchSize = 256
        public var learningRate: Float = 1e-3
        public var seed: UInt64 = 0
        /// Where the state-space share is drawn from: uniform in this box when set (one bound per
        /// state component), else the task's `randomState`.
        public var stateLower: [Float]? = nil
        public var stateUpper: [Float]? = nil
        /// The action prior of every planner that makes targets or runs closed-loop, started and
        /// weighed as the planner configuration's `priorStart` and `priorStrength` say: a value is
        /// the cost-to-go of the planner that made its targets, and a daemon's plans start from
        /// its prior.
        public var actionPrior: AmortisedNetwork? = nil

        public init() {}
    }

    public let task: ControlTask
    public let settings: Settings
    public private(set) var network: ValueNetwork
    public private(set) var target: ValueNetwork
    public private(set) var optimiser: AdamOptimizer
    public private(set) var completedRounds = 0
    /// Mean target and last fit loss of the last round (for the progress bar and reports).
    public private(set) var lastMeanTarget: Float = .nan
    public private(set) var lastLoss: Float = .nan
    let plannerConfiguration: PlannerConfiguration
    private var random: UInt64

    public init(task: ControlTask, planner: PlannerConfiguration, network: ValueNetwork, settings: Settings) {
        self.task = task
        self.plannerConfiguration = planner
        var network = network
        network.discount = planner.discount
        self.network = network
        self.target = network
        self.settings = settings
        optimiser = AdamOptimizer(parameterCount: network.mlp.parameters.count, learningRate: settings.learningRate)
        random = settings.seed ^ 0x2545_F491_4F6C_DD1D
    }

    private func uniform() -> Float { Float(splitMix64(&random) >> 40) / Float(1 << 24) }

    /// Runs the remaining rounds, reporting progress; `checkpoint` runs after every round.
    public func run(progress: (Distiller.Progress) -> Void, checkpoint: (ValueIteration) throws -> Void) throws {
        while completedRounds < settings.rounds {
            try runRound(progress: progress)
            try checkpoint(self)
        }
    }

    /// One round: states, targets, fit, target update.
    public func runRound(progress: (Distiller.Progress) -> Void = { _ in }) throws {
        let round = completedRounds
        var configuration = plannerConfiguration
        configuration.seed = settings.seed &+ UInt64(round) &* 1_000_003
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        if let prior = settings.actionPrior {
            planner.actionPrior = try NetworkPrior(network: prior, task: task, horizon: configuration.horizon)
        }
        let states = try collectStates(planner: planner, round: round, progress: progress)
        // targets: the planner's minimum over H-step costs plus the discounted target value
        try planner.installValue(target, weight: round == 0 ? 0 : 1)
        let width = task.dynamics.featureNames.count
        var inputs: [Float] = [], targets: [Float] = []
        inputs.reserveCapacity(states.count * width)
        targets.reserveCapacity(states.count)
        for (i, state) in states.enumerated() {
            planner.reset()
            let plan = planner.plan(state: state, iterations: settings.targetIterations)
            var y = planner.lastCostSoftMinimum(temperature: settings.softMinTemperature)
            // the hard minimum counts the refined plan too: one more sequence the planner rolled out
            if settings.softMinTemperature == 0 { y = Swift.min(y, plan.planCost) }
            if y.isFinite {
                inputs += task.dynamics.features(of: state)
                targets.append(y)
            }
            if i % 64 == 0 {
                progress(.init(round: round, rounds: settings.rounds, phase: "targets", fraction: Double(i) / Double(states.count), loss: nil, samples: targets.count))
            }
        }
        guard !targets.isEmpty else { throw ConfigurationError(key: "value", reason: "no state got a finite target: every rollout's cost was NaN or infinite") }
        lastMeanTarget = targets.reduce(0, +) / Float(targets.count)
        if network.version == 0 {
            // outputs near 1: the scale of the costs seen first
            let scale = Swift.max(targets.reduce(0) { $0 + abs($1) } / Float(targets.count), 1e-3)
            network.scale = scale
            target.scale = scale
        }
        lastLoss = fit(inputs: inputs, targets: targets, round: round, progress: progress)
        network.version += 1
        let rho = round == 0 ? 1 : settings.targetRate
        for i in target.mlp.parameters.indices {
            target.mlp.parameters[i] = (1 - rho) * target.mlp.parameters[i] + rho * network.mlp.parameters[i]
        }
        target.version = network.version
        completedRounds += 1
    }

    private func collectStates(planner: MirrorDescentPlanner, round: Int, progress: (Distiller.Progress) -> Void) throws -> [[Float]] {
        let total = settings.statesPerRound
        let fromRuns = round == 0 ? 0 : Int(Float(total) * settings.closedLoopShare)
        var states: [[Float]] = []
        states.reserveCapacity(total)
        if fromRuns > 0 {
            try planner.installValue(network)
            while states.count < fromRuns {
                planner.reset()
                var state = task.dynamics.randomInitialState(uniform)
                for _ in 0..<settings.episodeSteps where states.count < fromRuns {
                    states.append(state)
                    state = task.step(state: state, action: planner.plan(state: state).action).next
                    if !state.allSatisfy({ $0.isFinite }) { break }
                }
                progress(.init(round: round, rounds: settings.rounds, phase: "states", fraction: Double(states.count) / Double(fromRuns), loss: nil, samples: states.count))
            }
        }
        while states.count < total {
            if let lower = settings.stateLower, let upper = settings.stateUpper {
                states.append(zip(lower, upper).map { $0 + ($1 - $0) * uniform() })
            } else {
                states.append(task.dynamics.randomState(uniform))
            }
        }
        return states
    }

    /// Least squares of V against `targets` over `epochsPerRound` passes; returns the last pass's
    /// mean loss (in units of the output scale squared).
    private func fit(inputs: [Float], targets: [Float], round: Int, progress: (Distiller.Progress) -> Void) -> Float {
        let n = targets.count, width = network.mlp.architecture.inputs, batch = Swift.min(settings.batchSize, n)
        let workspace = network.makeWorkspace(capacity: batch)
        let gradient = UnsafeMutablePointer<Float>.allocate(capacity: network.mlp.parameters.count)
        let batchTargets = UnsafeMutablePointer<Float>.allocate(capacity: batch)
        defer { gradient.deallocate(); batchTargets.deallocate() }
        var order = Array(0..<n)
        var epochLoss: Float = .nan
        for epoch in 0..<settings.epochsPerRound {
            for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, Int(uniform() * Float(i + 1)) % (i + 1)) }
            var sum: Double = 0, batches = 0
            for start in stride(from: 0, to: n - batch + 1, by: batch) {
                for (row, index) in order[start..<(start + batch)].enumerated() {
                    for j in 0..<width { workspace.input[row * width + j] = inputs[index * width + j] }
                    batchTargets[row] = targets[index]
                }
                sum += Double(network.squaredErrorLossAndGradient(rows: batch, workspace: workspace, targets: batchTargets, gradient: gradient))
                batches += 1
                optimiser.update(&network.mlp.parameters, gradient: gradient)
            }
            epochLoss = Float(sum / Double(Swift.max(1, batches)))
            progress(.init(round: round, rounds: settings.rounds, phase: "fit", fraction: Double(epoch + 1) / Double(settings.epochsPerRound), loss: epochLoss, samples: n))
        }
        return epochLoss
    }

    // MARK: - Checkpoints

    /// Everything needed to resume: both networks, the optimiser, the random stream, the round count.
    public func checkpointData(metadata extra: [String: String] = [:]) -> Data {
        TrainingCheckpoint(network: network.encode(), optimiser: optimiser, rounds: completedRounds, random: random, tensors: [
            "checkpoint.target": .init(shape: [target.mlp.parameters.count], values: target.mlp.parameters),
        ]).encoded(metadata: extra)
    }

    /// Restores a checkpoint written by `checkpointData()` for the same task and architecture.
    public func restore(_ data: Data, path: String) throws {
        let checkpoint = try TrainingCheckpoint(decoding: data, tensors: ["checkpoint.target"],
                                                learningRate: settings.learningRate, path: path, kind: "a value-iteration checkpoint")
        let targetParameters = checkpoint.tensors["checkpoint.target"]!.values
        let restored = try ValueNetwork.decode(checkpoint.network, for: task, path: path)
        guard restored.mlp.architecture == network.mlp.architecture else {
            throw AmortisedNetwork.LoadError(path: path, reason: "the checkpoint's network differs from the one asked for (layers)")
        }
        try checkpoint.checkState(parameterCount: restored.mlp.parameters.count, path: path)
        guard targetParameters.count == restored.mlp.parameters.count, targetParameters.allSatisfy(\.isFinite) else {
            throw AmortisedNetwork.LoadError(path: path, reason: "a damaged checkpoint: its target network is not \(restored.mlp.parameters.count) finite parameters")
        }
        network = restored
        target = restored
        target.mlp.parameters = targetParameters
        optimiser = checkpoint.optimiser
        random = checkpoint.random
        completedRounds = checkpoint.rounds
    }
}
