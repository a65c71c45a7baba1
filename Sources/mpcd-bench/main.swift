import ArgumentParser
import Foundation
import Models
import Planners

/// Benchmarks that print figures; docs/benchmarks.md quotes them with this command.
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpcd-bench",
        abstract: "Measure mpcd's planner.",
        subcommands: [PlannerBench.self, NoiseBench.self],
        defaultSubcommand: PlannerBench.self
    )
}

struct PlannerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "planner",
        abstract: "Time one mirror-descent iteration on a task over a grid of K, H and thread counts."
    )

    @Option(help: "Task to plan on.") var task = "pendulum"
    @Option(help: "Comma-separated sample counts K.") var samples = "256,1024,4096"
    @Option(help: "Comma-separated horizons H.") var horizons = "16,32,64"
    @Option(help: "Comma-separated thread counts.") var threads = "1,2"
    @Option(help: "Likelihood: mppi or cem.") var likelihood = "mppi"
    @Option(help: "Timed iterations per cell (after warm-up).") var repeats = 400

    func run() throws {
        let ks = try list(samples, "samples"), hs = try list(horizons, "horizons"), ts = try list(threads, "threads")
        let controlTask = try TaskRegistry.make(name: task)
        print("mpcd-bench planner: task \(task), likelihood \(likelihood), \(repeats) iterations per cell, \(ProcessInfo.processInfo.activeProcessorCount) cores")
        print("")
        print("Per iteration: \"all-in\" generates the iteration's noise inside plan(); \"prepared\" has it generated")
        print("between ticks by prepareNoise(), as the daemon does after each reply (that time is not counted).")
        print("")
        print("| K | H | threads | all-in p50 (us) | all-in p99 (us) | prepared p50 (us) | prepared p99 (us) | ns per sample-step (all-in p50) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k in ks {
            for h in hs {
                for t in ts {
                    var configuration = PlannerConfiguration()
                    configuration.likelihood = likelihood
                    configuration.samples = k
                    configuration.horizon = h
                    configuration.iterations = 1
                    configuration.threads = t
                    configuration.elites = min(64, k)
                    let allIn = try measure(controlTask, configuration, prepared: false)
                    let prepared = try measure(controlTask, configuration, prepared: true)
                    let nsPerSampleStep = allIn.p50 * 1000 / Double(k * h)
                    print("| \(k) | \(h) | \(t) | \(fmt(allIn.p50)) | \(fmt(allIn.p99)) | \(fmt(prepared.p50)) | \(fmt(prepared.p99)) | \(String(format: "%.2f", nsPerSampleStep)) |")
                }
            }
        }
    }

    /// p50 and p99 of one-iteration plan() calls, in microseconds.
    func measure(_ task: ControlTask, _ configuration: PlannerConfiguration, prepared: Bool) throws -> (p50: Double, p99: Double) {
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        // A state away from rest so the rollouts do real work; the warm start keeps shifting.
        let state = (0..<task.dynamics.stateDimension).map { Float($0 + 1) * 0.3 }
        var times: [Double] = []
        times.reserveCapacity(repeats)
        for i in 0..<(repeats + max(20, repeats / 10)) {
            if prepared { planner.prepareNoise() }
            let start = monotonicNanoseconds()
            _ = planner.plan(state: state)
            let elapsed = Double(monotonicNanoseconds() - start) / 1000
            if i >= max(20, repeats / 10) { times.append(elapsed) }
        }
        times.sort()
        return (percentile(times, 0.5), percentile(times, 0.99))
    }

    func list(_ text: String, _ name: String) throws -> [Int] {
        let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("--\(name) must be a comma-separated list of positive integers, got \"\(text)\"")
        }
        return values.map { $0! }
    }
}

/// The q-quantile of sorted values (nearest rank).
func percentile(_ sorted: [Double], _ q: Double) -> Double {
    sorted[min(sorted.count - 1, max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))]
}

func fmt(_ x: Double) -> String { String(format: x < 10 ? "%.2f" : "%.1f", x) }

struct NoiseBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "noise",
        abstract: "Time the Gaussian noise generator alone (one iteration's worth of normals per call)."
    )

    @Option(help: "Normals per call.") var count = 32768
    @Option(help: "Timed calls.") var repeats = 2000

    func run() throws {
        let n = (count + 15) / 16 * 16
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { buffer.deallocate() }
        var times: [Double] = []
        for i in 0..<(repeats + repeats / 10) {
            let start = monotonicNanoseconds()
            GaussianNoise.fill(buffer, rows: 1, rowLength: n, start: 0, count: n, key: NoiseKey(seed: 1, plan: UInt64(i), iteration: 0))
            if i >= repeats / 10 { times.append(Double(monotonicNanoseconds() - start) / 1000) }
        }
        times.sort()
        let p50 = percentile(times, 0.5)
        print("noise: \(n) normals per call, p50 \(fmt(p50)) us, p99 \(fmt(percentile(times, 0.99))) us, \(String(format: "%.2f", p50 * 1000 / Double(n))) ns per normal")
    }
}
