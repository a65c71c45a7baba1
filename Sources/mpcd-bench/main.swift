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
        subcommands: [PlannerBench.self],
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
        print("| K | H | threads | p50 (us) | p99 (us) | ns per sample-step (p50) |")
        print("|---:|---:|---:|---:|---:|---:|")
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
                    let planner = try MirrorDescentPlanner(task: controlTask, configuration: configuration)
                    // A swinging pendulum-like state so the rollouts do real work; the warm start keeps shifting.
                    let state = (0..<controlTask.dynamics.stateDimension).map { Float($0 + 1) * 0.3 }
                    for _ in 0..<max(20, repeats / 10) { _ = planner.plan(state: state) }
                    var times: [Double] = []
                    times.reserveCapacity(repeats)
                    for _ in 0..<repeats {
                        let start = monotonicNanoseconds()
                        _ = planner.plan(state: state)
                        times.append(Double(monotonicNanoseconds() - start) / 1000)
                    }
                    times.sort()
                    let p50 = percentile(times, 0.5), p99 = percentile(times, 0.99)
                    let nsPerSampleStep = p50 * 1000 / Double(k * h)
                    print("| \(k) | \(h) | \(t) | \(fmt(p50)) | \(fmt(p99)) | \(String(format: "%.2f", nsPerSampleStep)) |")
                }
            }
        }
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
