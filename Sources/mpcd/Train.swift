import ArgumentParser
import Daemon
import Foundation
import Models
import Planners

/// `mpcd train`: distils the planner into a policy or an amortised plan.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Distil the planner into a network (a policy or an amortised plan) and write a safetensors file.",
        discussion: """
            The task and the planner come from --config (or the embedded default). Each round runs the \
            network as the planner's prior closed-loop from random starts, labels every state with the \
            planner's refined distribution, and fits the network to all labels so far (KL, Adam). A \
            checkpoint beside the output (OUT.checkpoint) is written after every round; running the same \
            command again resumes from it (--fresh starts over).
            """
    )

    @Option(help: "TOML configuration giving the task and the planner.") var config: String?
    @Option(help: "policy or plan.") var kind: String = "policy"
    @Option(help: "Weights file to write.") var out: String
    @Option(help: "Rounds of collect-then-fit.") var rounds = 8
    @Option(help: "Closed-loop episodes per round.") var episodes = 8
    @Option(help: "Steps per episode.") var steps = 200
    @Option(help: "Passes over the data per round.") var epochs = 20
    @Option(help: "Hidden layer widths, comma-separated.") var hidden = "64,64"
    @Option(help: "Adam's learning rate.") var learningRate: Float = 3e-3
    @Option(help: "Planner iterations when labelling (default: the configuration's, at least 4).") var labelIterations: Int?
    @Option(help: "Samples K when labelling (default: the configuration's).") var labelSamples: Int?
    @Option(help: "Seed of the network, the starts and the planner.") var seed: UInt64 = 0
    @Flag(help: "Ignore an existing checkpoint.") var fresh = false

    func validate() throws {
        guard AmortisedNetwork.Kind(rawValue: kind) != nil else { throw ValidationError("--kind must be policy or plan") }
        guard rounds >= 1, episodes >= 1, steps >= 1, epochs >= 1 else { throw ValidationError("--rounds, --episodes, --steps and --epochs must be at least 1") }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive") }
        guard hiddenWidths != nil else { throw ValidationError("--hidden must be positive integers separated by commas, e.g. 64,64") }
    }

    var hiddenWidths: [Int]? {
        let parts = hidden.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return parts.map { $0! }
    }

    func run() throws {
        let configuration = try loadConfiguration(config, withPrior: false)
        var planner = configuration.planner
        planner.iterations = labelIterations ?? max(configuration.planner.iterations, 4)
        if let labelSamples {
            guard (1...PlannerConfiguration.maxSamples).contains(labelSamples) else { throw ValidationError("--label-samples must be in [1, \(PlannerConfiguration.maxSamples)]") }
            planner.samples = labelSamples
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
        let distiller = Distiller(task: configuration.task, planner: planner, network: network, settings: settings)
        let checkpoint = out + ".checkpoint"
        if !fresh, FileManager.default.fileExists(atPath: checkpoint) {
            try distiller.restore(Data(contentsOf: URL(fileURLWithPath: checkpoint)), path: checkpoint)
            FileHandle.standardError.write(Data("resuming from \(checkpoint): \(distiller.completedRounds) of \(rounds) rounds done, \(distiller.sampleCount) labelled states\n".utf8))
        }
        FileHandle.standardError.write(Data("distilling a \(kind) for \(configuration.task.name) from \(configuration.planner.likelihood) (K=\(planner.samples), H=\(planner.horizon), \(planner.iterations) iterations per label) into \(out)\n".utf8))
        let bar = ProgressBar(total: Double(rounds))
        try distiller.run(progress: { p in
            // each round: collecting is the first half, fitting the second
            bar.show(done: Double(p.round) + (p.phase == "collect" ? 0 : 0.5) + 0.5 * p.fraction,
                     label: "round \(p.round + 1)/\(p.rounds) \(p.phase)", detail: "\(p.samples) states" + (p.loss.map { String(format: ", loss %.4f", $0) } ?? ""))
        }, checkpoint: { d in
            try writeAtomically(d.checkpointData(), to: checkpoint)
        })
        bar.finish()
        try distiller.network.save(to: out)
        print("wrote \(out): \(kind) for \(configuration.task.name), \(distiller.network.mlp.parameters.count) parameters, version \(distiller.network.version), \(distiller.sampleCount) labelled states")
    }
}

/// A one-line progress bar with an ETA, redrawn in place on standard error.
final class ProgressBar {
    let total: Double
    let start = Date()
    var lastDraw = Date.distantPast

    init(total: Double) { self.total = total }

    func show(done: Double, label: String, detail: String) {
        let now = Date()
        guard now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        let fraction = min(1, max(0, done / total)), width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = now.timeIntervalSince(start)
        let eta = fraction > 0.01 ? elapsed * (1 - fraction) / fraction : .nan
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(format: "\r[%@] %3.0f%%  %@  %@  elapsed %@  ETA %@   ", bar, fraction * 100, label, detail, Self.clock(elapsed), eta.isFinite ? Self.clock(eta) : "--:--")
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        FileHandle.standardError.write(Data(String(format: "\rdone in %@%@\n", Self.clock(Date().timeIntervalSince(start)), String(repeating: " ", count: 80)).utf8))
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return String(format: "%d:%02d", s / 60, s % 60)
    }
}
