import ArgumentParser
import Daemon
import Foundation
import Models
import Planners

/// `mpcd train`: distils the planner into a policy or an amortised plan.
extension PlannerConfiguration.PriorStart: ExpressibleByArgument {}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Distil the planner into a network (a policy or an amortised plan), or learn a value (--value); write a safetensors file.",
        discussion: """
            The task and the planner come from --config (or the embedded default). Each round runs the \
            network as the planner's prior closed-loop from random starts, labels every state with the \
            planner's refined distribution, and fits the network to all labels so far (KL, Adam). \
            With --value, each round is a step of fitted value iteration: targets are the soft minimum \
            over the planner's rollouts of the H-step cost plus the target network's value at the last \
            state (see docs/configuration.md, [value]). A checkpoint beside the output (OUT.checkpoint) \
            is written after every round; running the same command again resumes from it (--fresh \
            starts over).
            """
    )

    @Option(help: "TOML configuration giving the task and the planner; its [prior] and [value] are not read (the network trained is the prior; --label-value and --target-prior name the others).") var config: String?
    @Option(help: "policy or plan.") var kind: String = "policy"
    @Flag(help: "Learn a value V(s) by fitted value iteration instead of distilling a policy.") var value = false
    @Option(help: "Weights file to write.") var out: String
    @Option(help: "Rounds of collect-then-fit (default 8; with --value 60).") var rounds: Int?
    @Option(help: "Closed-loop episodes per round.") var episodes = 8
    @Option(help: "Steps per episode.") var steps = 200
    @Option(help: "Passes over the data per round.") var epochs = 20
    @Option(help: "Hidden layer widths, comma-separated (default 64,64; with --value 32,32).") var hidden: String?
    @Option(help: "Adam's learning rate (default 3e-3; with --value 1e-3).") var learningRate: Float?
    @Option(help: "--value: states per round.") var states = 2048
    @Option(help: "--value: share of the states from closed-loop runs, the rest from the whole state space.") var closedLoopShare: Float = 0.25
    @Option(help: "--value: planner iterations per target.") var targetIterations = 3
    @Option(help: "--value: temperature of the soft minimum over rollouts (default: the planner's temperature λ, the soft value of the same bound the planner optimises; 0: the hard minimum).") var softMinTemperature: Float?
    @Option(help: "--value: discount per step (default: the configuration's [planner] discount); the daemon must plan with the same.") var discount: Float?
    @Option(help: "--value: how far the target network moves towards the fitted one each round.") var targetRate: Float = 0.5
    @Option(help: "--value: tanh or relu (relu costs least per rollout at tick time).") var activation = "tanh"
    @Option(help: "--value: the least cost-to-go possible, a floor for the value (0 when every cost term is non-negative, as in every built-in task); \"none\" for no floor.") var minValue = "0"
    @Option(help: "Planner iterations when labelling (default: the configuration's, at least 4).") var labelIterations: Int?
    @Option(help: "Samples K when labelling (default: the configuration's).") var labelSamples: Int?
    @Option(help: "Where labelling plans start once a network proposes: prior, cheaper or carried. The default, cheaper, lets the labeller keep its own carried plan, so it can correct the network's mistakes, not only refine them. With --value and --target-prior, how the targets' planners start.") var labelPriorStart: PlannerConfiguration.PriorStart = .cheaper
    @Option(help: "The prior's strength κ when labelling, 0 to 1. The default, 0, labels without the KL to the network being trained (1: the daemon's paper-form default, which anchors the labels to the network's mistakes). With --value and --target-prior, the targets' planners' κ.") var labelPriorStrength: Float = 0
    @Option(help: "Policy or plan: a value network file (mpcd train --value writes one) at the end of every labelling rollout, so that labels weigh what lies past the horizon; it must have been learnt with the --config file's [planner] discount.") var labelValue: String?
    @Option(help: "--value: an action prior (a policy or plan file, or embedded:NAME) for every planner that makes targets or runs closed-loop, started as --label-prior-start says and pulled to it with --label-prior-strength.") var targetPrior: String?
    @Option(help: "Seed of the network, the starts and the planner.") var seed: UInt64 = 0
    @Flag(help: "Ignore an existing checkpoint.") var fresh = false

    /// Most of any count flag (rounds, episodes, steps, epochs, states): far past any useful run.
    static let maxCount = 10_000_000
    /// Most memory the labels of a policy or plan may take over all rounds (they are all kept).
    static let maxLabelBytes = 8 << 30

    func validate() throws {
        guard AmortisedNetwork.Kind(rawValue: kind) != nil else { throw ValidationError("--kind must be policy or plan") }
        let counts = [rounds ?? 1, episodes, steps, epochs, states]
        guard counts.allSatisfy({ (1...Self.maxCount).contains($0) }), (1...PlannerConfiguration.maxIterations).contains(targetIterations) else {
            throw ValidationError("--rounds, --episodes, --steps, --epochs and --states must be integers in [1, \(Self.maxCount)], --target-iterations in [1, \(PlannerConfiguration.maxIterations)]")
        }
        if let labelIterations, !(1...PlannerConfiguration.maxIterations).contains(labelIterations) {
            throw ValidationError("--label-iterations must be an integer in [1, \(PlannerConfiguration.maxIterations)]")
        }
        guard (learningRate ?? 1) > 0, (learningRate ?? 1).isFinite else { throw ValidationError("--learning-rate must be positive") }
        guard (0...1).contains(closedLoopShare), (discount ?? 1) > 0, (discount ?? 1) <= 1, targetRate > 0, targetRate <= 1 else {
            throw ValidationError("--closed-loop-share must lie in [0, 1], --discount and --target-rate in (0, 1]")
        }
        guard MLPArchitecture.Activation(rawValue: activation) != nil else { throw ValidationError("--activation must be tanh or relu") }
        guard minValue == "none" || Float(minValue)?.isFinite == true else { throw ValidationError("--min-value must be a number or none") }
        if let softMinTemperature, !(softMinTemperature >= 0 && softMinTemperature.isFinite) { throw ValidationError("--soft-min-temperature must be a finite number >= 0") }
        if !(labelPriorStrength >= 0 && labelPriorStrength <= 1) { throw ValidationError("--label-prior-strength must be a number in [0, 1]") }
        guard hiddenWidths != nil else { throw ValidationError("--hidden must be positive integers separated by commas, e.g. 64,64") }
        if value, labelValue != nil { throw ValidationError("--label-value is for distilling a policy or plan, not with --value") }
        if !value, targetPrior != nil { throw ValidationError("--target-prior is for --value") }
        if !value, discount != nil { throw ValidationError("--discount is for --value; a policy's or plan's labeller discounts as the --config file's [planner] says") }
    }

    /// The bytes of a network named by a flag: a path relative to the working directory, or embedded:NAME.
    func networkFile(_ file: String, flag: String) throws -> (path: String, data: Data) {
        do throws(AmortisedNetwork.LoadError) {
            let (path, data) = try DaemonConfiguration.networkData(file, source: DaemonConfiguration.embeddedSource)
            return (path, data)
        } catch {
            throw ValidationError("\(flag): \(error.path): \(error.reason)")
        }
    }

    func checkpointInputs(_ networks: [(flag: String, name: String, data: Data)]) -> CheckpointInputs {
        CheckpointInputs(networks: networks, labelPriorStart: labelPriorStart.rawValue, labelPriorStrength: labelPriorStrength)
    }

    var hiddenWidths: [Int]? {
        let parts = (hidden ?? (value ? "32,32" : "64,64")).split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return parts.map { $0! }
    }

    func run() throws {
        // before any work: the output and its checkpoint must be files that may be written
        for path in [out, out + ".checkpoint"] {
            do {
                try FileWriting.checkReplaceable(path)
            } catch {
                throw ValidationError("--out: \(error)")
            }
        }
        let configuration = try loadConfiguration(config, withPrior: false)
        var planner = configuration.planner
        planner.iterations = labelIterations ?? max(configuration.planner.iterations, 4)
        if let labelSamples {
            guard (1...PlannerConfiguration.maxSamples).contains(labelSamples) else { throw ValidationError("--label-samples must be in [1, \(PlannerConfiguration.maxSamples)]") }
            planner.samples = labelSamples
        }
        planner.priorStart = labelPriorStart
        planner.priorStrength = labelPriorStrength
        // labels are the refined distribution: never_worse would label with the network's own proposal
        planner.neverWorse = false
        let d = configuration.task.dynamics
        let outputs = value ? 1 : (kind == "plan" ? planner.horizon : 1) * d.actionDimension
        guard MLPArchitecture.checkedParameterCount(inputs: d.featureNames.count, hidden: hiddenWidths!, outputs: outputs) != nil else {
            throw ValidationError("--hidden \(hidden ?? ""): a network of more than \(MLPArchitecture.maxParameters) parameters")
        }
        if value { return try learnValue(configuration.task, planner) }
        let rounds = self.rounds ?? 8, learningRate = self.learningRate ?? 3e-3
        // every round's labels are kept: refuse a run whose labels could not be held, before any work
        // in Double: each count may be 10^7, and their product overflows Int
        let states = Double(rounds) * Double(episodes) * Double(steps)
        let labelBytes = states * Double((d.featureNames.count + 2 * outputs) * MemoryLayout<Float>.size)
        guard labelBytes <= Double(Self.maxLabelBytes) else {
            throw ValidationError(String(format: "--rounds x --episodes x --steps: %.0f labelled states would take %.0f MiB; at most %d MiB are kept",
                                         states, (labelBytes / 1_048_576).rounded(.down), Self.maxLabelBytes >> 20))
        }
        let networkKind = AmortisedNetwork.Kind(rawValue: kind)!
        let network = AmortisedNetwork(kind: networkKind, task: configuration.task, horizon: planner.horizon,
                                       hidden: hiddenWidths!, seed: seed)
        var settings = Distiller.Settings()
        settings.rounds = rounds
        settings.episodesPerRound = episodes
        settings.stepsPerEpisode = steps
        settings.epochsPerRound = epochs
        settings.learningRate = learningRate
        settings.seed = seed
        var named: [(flag: String, name: String, data: Data)] = []
        if let labelValue {
            let (path, data) = try networkFile(labelValue, flag: "--label-value")
            named.append(("--label-value", labelValue, data))
            let valueNetwork: ValueNetwork
            do { valueNetwork = try ValueNetwork.decode(data, for: configuration.task, path: path) } catch {
                throw ValidationError("--label-value: \(error.path): \(error.reason)")
            }
            guard valueNetwork.discount == planner.discount else {
                throw ValidationError("--label-value: \(path) was learnt with discount \(valueNetwork.discount), the configuration's [planner] discount is \(planner.discount): set discount = \(valueNetwork.discount) in the --config file's [planner]")
            }
            settings.labelValue = valueNetwork
        }
        let distiller = Distiller(task: configuration.task, planner: planner, network: network, settings: settings)
        let checkpoint = out + ".checkpoint", inputs = checkpointInputs(named)
        if !fresh, FileManager.default.fileExists(atPath: checkpoint) {
            try inputs.resume(from: checkpoint) { try distiller.restore($0, path: checkpoint) }
            FileHandle.standardError.write(Data("resuming from \(checkpoint): \(distiller.completedRounds) of \(rounds) rounds done, \(distiller.sampleCount) labelled states\n".utf8))
        }
        FileHandle.standardError.write(Data("distilling a \(kind) for \(configuration.task.name) from \(configuration.planner.likelihood) (K=\(planner.samples), H=\(planner.horizon), \(planner.iterations) iterations per label) into \(out)\n".utf8))
        let bar = ProgressBar(total: Double(rounds))
        try distiller.run(progress: { p in
            // each round: collecting is the first half, fitting the second
            bar.show(done: Double(p.round) + (p.phase == "collect" ? 0 : 0.5) + 0.5 * p.fraction,
                     label: "round \(p.round + 1)/\(p.rounds) \(p.phase)", detail: "\(p.samples) states" + (p.loss.map { String(format: ", loss %.4f", $0) } ?? ""))
        }, checkpoint: { d in
            try writeAtomically(d.checkpointData(metadata: inputs.metadata), to: checkpoint)
        })
        bar.finish()
        try distiller.network.save(to: out)
        print("wrote \(out): \(kind) for \(configuration.task.name), \(distiller.network.mlp.parameters.count) parameters, version \(distiller.network.version), \(distiller.sampleCount) labelled states")
    }

    func learnValue(_ task: ControlTask, _ planner: PlannerConfiguration) throws {
        var planner = planner
        planner.iterations = max(1, planner.iterations)
        if let discount { planner.discount = discount }
        var settings = ValueIteration.Settings()
        settings.rounds = rounds ?? 60
        settings.statesPerRound = states
        settings.closedLoopShare = closedLoopShare
        settings.episodeSteps = steps
        settings.targetIterations = targetIterations
        settings.softMinTemperature = softMinTemperature ?? planner.temperature
        settings.targetRate = targetRate
        settings.epochsPerRound = epochs
        settings.learningRate = learningRate ?? 1e-3
        settings.seed = seed
        var named: [(flag: String, name: String, data: Data)] = []
        if let targetPrior {
            let (path, data) = try networkFile(targetPrior, flag: "--target-prior")
            named.append(("--target-prior", targetPrior, data))
            do {
                let prior = try AmortisedNetwork.decode(data, for: task, path: path)
                _ = try NetworkPrior(network: prior, task: task, horizon: planner.horizon)
                settings.actionPrior = prior
            } catch let error as AmortisedNetwork.LoadError {
                throw ValidationError("--target-prior: \(error.path): \(error.reason)")
            } catch let error as ConfigurationError {
                throw ValidationError("--target-prior: \(path): \(error.reason)")
            }
        }
        var initial = ValueNetwork(task: task, hidden: hiddenWidths!, activation: MLPArchitecture.Activation(rawValue: activation)!, seed: seed)
        initial.minimum = Float(minValue)
        let learner = ValueIteration(task: task, planner: planner, network: initial, settings: settings)
        let checkpoint = out + ".checkpoint", inputs = checkpointInputs(named)
        if !fresh, FileManager.default.fileExists(atPath: checkpoint) {
            try inputs.resume(from: checkpoint) { try learner.restore($0, path: checkpoint) }
            FileHandle.standardError.write(Data("resuming from \(checkpoint): \(learner.completedRounds) of \(settings.rounds) rounds done\n".utf8))
        }
        FileHandle.standardError.write(Data("learning a value for \(task.name) by fitted value iteration (K=\(planner.samples), H=\(planner.horizon), \(targetIterations) iterations per target, \(states) states per round, discount \(planner.discount), soft-min temperature \(settings.softMinTemperature)) into \(out)\n".utf8))
        let bar = ProgressBar(total: Double(settings.rounds))
        let phaseStart = ["states": 0.0, "targets": 0.2, "fit": 0.7], phaseShare = ["states": 0.2, "targets": 0.5, "fit": 0.3]
        try learner.run(progress: { p in
            bar.show(done: Double(p.round) + (phaseStart[p.phase] ?? 0) + (phaseShare[p.phase] ?? 0) * p.fraction,
                     label: "round \(p.round + 1)/\(p.rounds) \(p.phase)",
                     // no target yet before the first round's are made: a dash, not "nan" (a nan later is real)
                     detail: (learner.lastMeanTarget.isNaN && p.round == 0 && p.phase != "fit" ? "mean target -" : String(format: "mean target %.3f", learner.lastMeanTarget))
                        + (p.loss.map { String(format: ", loss %.4f", $0) } ?? ""))
        }, checkpoint: { l in
            try writeAtomically(l.checkpointData(metadata: inputs.metadata), to: checkpoint)
        })
        bar.finish()
        try learner.network.save(to: out)
        print("wrote \(out): value for \(task.name), \(learner.network.mlp.parameters.count) parameters, \(learner.completedRounds) rounds, output scale \(learner.network.scale), last mean target \(learner.lastMeanTarget)")
    }
}

/// A one-line progress bar with an ETA, redrawn in place on standard error when it is a terminal;
/// elsewhere (a log file, the journal, a pipe) a plain line every `plainInterval` seconds.
final class ProgressBar {
    let total: Double
    let start = Date()
    var lastDraw = Date.distantPast
    let isTerminal: Bool
    static let plainInterval = 10.0

    init(total: Double, isTerminal: Bool = isatty(STDERR_FILENO) == 1) {
        self.total = total
        self.isTerminal = isTerminal
    }

    func show(done: Double, label: String, detail: String) {
        let now = Date()
        guard now.timeIntervalSince(lastDraw) > (isTerminal ? 0.1 : Self.plainInterval) else { return }
        lastDraw = now
        let fraction = min(1, max(0, done / total)), width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = now.timeIntervalSince(start)
        let eta = fraction > 0.01 ? elapsed * (1 - fraction) / fraction : .nan
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(format: "%3.0f%%  %@  %@  elapsed %@  ETA %@", fraction * 100, label, detail, Self.clock(elapsed), eta.isFinite ? Self.clock(eta) : "--:--")
        FileHandle.standardError.write(Data((isTerminal ? "\r[\(bar)] \(line)   " : "progress \(line)\n").utf8))
    }

    func finish() {
        let line = "done in \(Self.clock(Date().timeIntervalSince(start)))"
        FileHandle.standardError.write(Data((isTerminal ? "\r\(line)\(String(repeating: " ", count: 80))\n" : "\(line)\n").utf8))
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return String(format: "%d:%02d", s / 60, s % 60)
    }
}
