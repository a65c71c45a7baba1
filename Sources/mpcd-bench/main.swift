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
        subcommands: [PlannerBench.self, NoiseBench.self, EpisodesBench.self, PhysicsBench.self],
        defaultSubcommand: PlannerBench.self
    )

    static func main() {
        MLP.useOneBLASThread()
        main(nil)
    }
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
    @Option(help: "Untimed iterations before them (default: a tenth of --repeats, at least 20).") var warmUp: Int?
    @Flag(help: "Print one JSON object per cell instead of the table.") var json = false
    @Option(help: "A value network (safetensors) at the end of every rollout, planning with its discount.") var value: String?
    @Option(help: "A configuration file: its [task] (a MuJoCo model, a plug-in) and [planner] instead of --task, planning from the task's start state.")
    var config: String?
    @Flag(help: "With --config: roll a MuJoCo task out one step at a time over all lanes, as before lane-at-a-time rollouts (for comparison).")
    var stepByStep = false
    @Flag(help: "With --config (a MuJoCo task): after or before each timed iteration, in turn, time the floor under it: the K x H x frame_skip bare physics steps of the sequences the iteration before it rolled out, from the same start state, on `threads` threads stepping at once; report its p50 and the median of the iteration / floor ratios of these pairs.")
    var floor = false
    @Flag(help: "With --json and one cell: run each call, warm-up ones included, when a line arrives on standard input, and print one JSON line after it (its iteration time and, with --floor, its floor's), so another process can time its own calls between mpcd's; the cell's summary follows when input ends or the calls are done.")
    var paced = false
    @Option(help: "With --paced: after each call, write the action sequences it rolled out to this file (float32, K x H x action dimension, this machine's byte order), for the other process to step the same.")
    var controlsOut: String?
    @Flag(help: "With --config: a MuJoCo task's rollouts compute the cost's kinematics in a forward pass of their own and take whole steps, as before split steps (for comparison).")
    var wholeSteps = false

    func run() throws {
        let ks = try list(samples, "samples"), hs = try list(horizons, "horizons"), ts = try list(threads, "threads")
        guard (1...maxCalls).contains(repeats) else { throw ValidationError("--repeats must be in 1...\(maxCalls), got \(repeats)") }
        if let warmUp, !(0...maxCalls).contains(warmUp) { throw ValidationError("--warm-up must be in 0...\(maxCalls), got \(warmUp)") }
        guard config != nil || !stepByStep else { throw ValidationError("--step-by-step needs --config (a task that rolls out a lane at a time)") }
        let file = try config.map { try ConfiguredTask(path: $0) }
        var controlTask = try file?.task ?? TaskRegistry.make(name: task)
        guard !(stepByStep && wholeSteps) else { throw ValidationError("--step-by-step and --whole-steps are two different comparisons: give one") }
        if stepByStep { controlTask = ControlTask(name: controlTask.name, dynamics: controlTask.dynamics, cost: controlTask.cost) }
        if wholeSteps {
            guard let rollout = controlTask.sequenceRollout as? MuJoCoRollout else { throw ValidationError("--whole-steps needs --config with a MuJoCo task") }
            controlTask.sequenceRollout = MuJoCoRollout(dynamics: rollout.dynamics, cost: rollout.cost, splitSteps: false)
        }
        let valueNetwork = try value.map { try ValueNetwork.load(path: $0, for: controlTask) }
        guard !floor || controlTask.dynamics is MuJoCoDynamics else { throw ValidationError("--floor needs --config with a MuJoCo task") }
        guard !paced || (json && ks.count == 1 && hs.count == 1 && ts.count == 1) else {
            throw ValidationError("--paced needs --json and one cell: one --samples, one --horizons and one --threads value")
        }
        guard controlsOut == nil || paced else { throw ValidationError("--controls-out needs --paced") }
        if let controlsOut {
            // refused before any timing, not after the first call; a FIFO or a device would block
            // the write (or take it somewhere else) rather than fail
            do { try FileWriting.checkReplaceable(controlsOut) } catch {
                throw ValidationError("--controls-out \(controlsOut): cannot write it (\(error.reason))")
            }
            do { try Data().write(to: URL(fileURLWithPath: controlsOut)) } catch {
                throw ValidationError("--controls-out \(controlsOut): cannot write it (\(error.localizedDescription))")
            }
        }
        if !json { printHeader() }
        for k in ks {
            for h in hs {
                for t in ts {
                    var configuration = file?.planner ?? PlannerConfiguration()
                    if file != nil { configuration.parallelThreshold = 0 } else { configuration.likelihood = likelihood }
                    configuration.samples = k
                    configuration.horizon = h
                    configuration.iterations = 1
                    configuration.threads = t
                    configuration.elites = min(64, k)
                    if let valueNetwork { configuration.discount = valueNetwork.discount }
                    // paced, only the calls the other process waits for run (the all-in ones are not paced)
                    let allIn = paced ? nil : try measure(controlTask, configuration, prepared: false, value: valueNetwork, start: file?.start)
                    let bare = try file.flatMap { file in
                        try floor ? BareRollouts(file, count: k, horizon: h, threads: t) : nil
                    }
                    let prepared = try measure(controlTask, configuration, prepared: true, value: valueNetwork, start: file?.start, floor: bare, paced: paced)
                    if json {
                        var cell: [String: Any] = ["samples": k, "horizon": h, "threads": t, "timed_calls": prepared.timed, "warm_up_calls": prepared.warmUp,
                                                   "prepared_us_p50": prepared.p50, "prepared_us_p99": prepared.p99,
                                                   "iteration_us_p50": prepared.iterationP50]
                        if let allIn {
                            cell["all_in_us_p50"] = allIn.p50
                            cell["all_in_us_p99"] = allIn.p99
                        }
                        if let paired = prepared.floor {
                            cell["floor_us_p50"] = paired.p50
                            cell["iteration_over_floor_p50"] = paired.ratioP50
                            cell["floor_failed_steps"] = paired.failed
                        }
                        print(String(decoding: try JSONSerialization.data(withJSONObject: cell, options: [.sortedKeys]), as: UTF8.self))
                    } else if let allIn {
                        let nsPerSampleStep = allIn.p50 * 1000 / Double(k * h)
                        print("| \(k) | \(h) | \(t) | \(fmt(allIn.p50)) | \(fmt(allIn.p99)) | \(fmt(prepared.p50)) | \(fmt(prepared.p99)) | \(String(format: "%.2f", nsPerSampleStep)) |")
                    }
                }
            }
        }
    }

    func printHeader() {
        print("mpcd-bench planner: task \(config ?? task), likelihood \(likelihood), \(repeats) iterations per cell, \(ProcessInfo.processInfo.activeProcessorCount) cores"
              + (value.map { ", value \($0) at the end of every rollout" } ?? ""))
        print("")
        print("Per iteration: \"all-in\" generates the iteration's noise inside plan(); \"prepared\" has it generated")
        print("between ticks by prepareNoise(), as the daemon does after each reply (that time is not counted).")
        print("")
        print("| K | H | threads | all-in p50 (us) | all-in p99 (us) | prepared p50 (us) | prepared p99 (us) | ns per sample-step (all-in p50) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    }

    /// p50 and p99 of one-iteration plan() calls, and p50 of the iteration alone as the planner
    /// times it (rollouts, costs and update, without the plan's evaluation of its mean sequences),
    /// in microseconds.
    /// With `floor`, each timed iteration is paired with one call of it, the two back to back in an
    /// order that alternates, so that the ratio of a pair sees the same machine (this VM's speed
    /// drifts by tens of percent over minutes): the floor's p50 (microseconds), the median of the
    /// pairs' iteration / floor ratios, and the bare steps MuJoCo found diverged.
    func measure(_ task: ControlTask, _ configuration: PlannerConfiguration, prepared: Bool, value: ValueNetwork? = nil,
                 start: [Float]? = nil, floor: BareRollouts? = nil, paced: Bool = false) throws
        -> (p50: Double, p99: Double, iterationP50: Double, timed: Int, warmUp: Int, floor: (p50: Double, ratioP50: Double, failed: Int)?) {
        try checkPlanner(configuration, for: task)
        let planner = try MirrorDescentPlanner(task: task, configuration: configuration)
        try planner.installValue(value)
        // A state away from rest so the rollouts do real work; the warm start keeps shifting.
        let state = start ?? (0..<task.dynamics.stateDimension).map { Float($0 + 1) * 0.3 }
        var times: [Double] = [], iterationTimes: [Double] = []
        times.reserveCapacity(repeats)
        iterationTimes.reserveCapacity(repeats)
        let warmUp = self.warmUp ?? max(20, repeats / 10)
        var floorTimes: [Double] = [], ratios: [Double] = [], failed = 0
        if paced {
            // the other process starts its rollouts from the same state
            print(String(decoding: try JSONSerialization.data(withJSONObject: ["start": state.map(Double.init)]), as: UTF8.self))
            fflush(nil)
        }
        for i in 0..<(repeats + warmUp) {
            if paced && !awaitLine() { break }
            if prepared { planner.prepareNoise() }
            // the floor steps the sequences the iteration before it rolled out; it runs after the
            // iteration on even calls counted from the first timed one, before it on odd ones
            let floorFirst = (i - warmUp) & 1 == 1 && i > 0
            var floorTime = Double.nan
            if let floor, floorFirst { (floorTime, failed) = (floor.time(), failed + floor.failed) }
            let start = monotonicNanoseconds()
            let plan = planner.plan(state: state)
            let elapsed = Double(monotonicNanoseconds() - start) / 1000
            let sampled = floor != nil || controlsOut != nil ? planner.lastSampledActions() : []
            if let floor {
                floor.replay(sampled)
                if !floorFirst { (floorTime, failed) = (floor.time(), failed + floor.failed) }
            }
            if paced {
                guard let iteration = plan.iterations.first else { throw ValidationError("a plan ran no iteration") }
                if let controlsOut {
                    try sampled.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: controlsOut)) }
                }
                var call: [String: Any] = ["call": i, "warm_up": i < warmUp, "iteration_us": iteration.seconds * 1e6]
                if floor != nil { call["floor_us"] = floorTime }
                print(String(decoding: try JSONSerialization.data(withJSONObject: call, options: [.sortedKeys]), as: UTF8.self))
                fflush(nil)  // every stream: the other process is waiting for this line
            }
            if i >= warmUp {
                let iteration = (plan.iterations.first?.seconds ?? .nan) * 1e6
                times.append(elapsed)
                iterationTimes.append(iteration)
                if floor != nil {
                    floorTimes.append(floorTime)
                    ratios.append(iteration / floorTime)
                }
            }
        }
        guard !times.isEmpty else { throw ValidationError("standard input ended before the first timed call (\(warmUp) warm-up calls come first)") }
        times.sort()
        iterationTimes.sort()
        floorTimes.sort()
        ratios.sort()
        let paired = floor.map { _ in (percentile(floorTimes, 0.5), percentile(ratios, 0.5), failed) }
        return (percentile(times, 0.5), percentile(times, 0.99), percentile(iterationTimes, 0.5), times.count, warmUp, paired)
    }

    func list(_ text: String, _ name: String) throws -> [Int] {
        let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("--\(name) must be a comma-separated list of positive integers, got \"\(text)\"")
        }
        return values.map { $0! }
    }
}

/// Most timed calls (or rollouts) a flag may ask for: far beyond any useful run, and far from overflow.
let maxCalls = 10_000_000

/// The daemon's checks of a planner's settings for a task (ranges, names), and its buffers within
/// half this machine's memory, as a usage error: not an allocation failure after the first cell.
func checkPlanner(_ configuration: PlannerConfiguration, for task: ControlTask) throws {
    do {
        try configuration.validate(for: task)
    } catch {
        throw ValidationError("\(error.key): \(error.reason)")
    }
    let bytes = MirrorDescentPlanner.memoryFootprint(task: task, configuration: configuration)
    let limit = Double(ProcessInfo.processInfo.physicalMemory) / 2
    guard bytes <= limit else {
        throw ValidationError(String(format: "K=%d x H=%d needs %.0f MiB of planner buffers, more than half this machine's memory (%.0f MiB)",
                                     configuration.samples, configuration.horizon, bytes / 1_048_576, limit / 1_048_576))
    }
}

/// Waits for the next line of standard input and keeps none of it, so input that never sends a
/// newline costs no memory. A last line without one still counts, as readLine would count it.
/// False at the end of input.
func awaitLine() -> Bool {
    var partial = false
    while true {
        let c = getchar()
        if c == EOF { return partial }
        if c == Int32(UInt8(ascii: "\n")) { return true }
        partial = true
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
        guard (1...maxCalls).contains(repeats), (1...(1 << 26)).contains(count) else {
            throw ValidationError("--repeats must be in 1...\(maxCalls) and --count in 1...\(1 << 26), got \(repeats) and \(count)")
        }
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

/// Closed-loop episodes with the planner in this process, on the task's own model (for the pendulum,
/// Gymnasium's Pendulum-v1 step for step): the per-command time and the return, for the peer benchmark.
struct EpisodesBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "episodes",
        abstract: "Run closed-loop episodes in process from given start states; print JSON with returns and per-command times."
    )

    @Option(help: "Task.") var task = "pendulum"
    @Option(help: "File of start states, one per line, comma-separated (the task's state layout).") var starts: String
    @Option(help: "Steps per episode.") var steps = 200
    @Option(help: "Samples K.") var samples = 1000
    @Option(help: "Horizon H.") var horizon = 30
    @Option(help: "Temperature lambda.") var temperature: Float = 1
    @Option(help: "Exploration std as a fraction of the half action range.") var initialStd: Float = 0.5
    @Option(help: "Iterations per command.") var iterations = 1
    @Option(help: "Planner threads.") var threads = 1
    @Option(help: "Seed of the first episode's planner (episode i uses seed + i).") var seed: UInt64 = 0
    @Option(help: "A value network (safetensors) at the end of every rollout, planning with its discount.") var value: String?

    func validate() throws {
        guard (1...maxCalls).contains(steps) else { throw ValidationError("--steps must be an integer in [1, \(maxCalls)], got \(steps)") }
        guard (1...PlannerConfiguration.maxIterations).contains(iterations) else {
            throw ValidationError("--iterations must be an integer in [1, \(PlannerConfiguration.maxIterations)], got \(iterations)")
        }
    }

    func run() throws {
        let controlTask = try TaskRegistry.make(name: task)
        let text: String
        do {
            text = try FileReading.text(starts, limit: 16 << 20)
        } catch {
            throw ValidationError("--starts: \(error)")
        }
        let startStates = text.split(whereSeparator: \.isNewline).map { $0.split(separator: ",").compactMap { Float($0.trimmingCharacters(in: .whitespaces)) } }
            .filter { !$0.isEmpty }
        guard !startStates.isEmpty else { throw ValidationError("--starts \(starts): no start states in it") }
        guard startStates.allSatisfy({ $0.count == controlTask.dynamics.stateDimension && $0.allSatisfy(\.isFinite) }) else {
            throw ValidationError("every start needs \(controlTask.dynamics.stateDimension) finite values")
        }
        var returns: [Double] = [], times: [Double] = [], totals: [Double] = []
        let valueNetwork = try value.map { try ValueNetwork.load(path: $0, for: controlTask) }
        for (i, start) in startStates.enumerated() {
            var configuration = PlannerConfiguration()
            configuration.samples = samples
            configuration.horizon = horizon
            configuration.temperature = temperature
            configuration.initialStd = initialStd
            configuration.iterations = iterations
            configuration.threads = threads
            configuration.seed = seed &+ UInt64(i)
            if let valueNetwork { configuration.discount = valueNetwork.discount }
            try checkPlanner(configuration, for: controlTask)
            let planner = try MirrorDescentPlanner(task: controlTask, configuration: configuration)
            try planner.installValue(valueNetwork)
            var state = start, total = 0.0
            var prepared = Double(0)
            let first = monotonicNanoseconds()
            planner.prepareNoise()
            prepared = Double(monotonicNanoseconds() - first) * 1e-3
            for _ in 0..<steps {
                let begin = monotonicNanoseconds()
                let plan = planner.plan(state: state)
                let planned = Double(monotonicNanoseconds() - begin) * 1e-3
                times.append(planned)
                totals.append(planned + prepared)
                let (next, cost) = controlTask.step(state: state, action: plan.action)
                total -= Double(cost)
                state = next
                // the next command's noise, between commands as the daemon does; counted in the total
                let noiseStart = monotonicNanoseconds()
                planner.prepareNoise()
                prepared = Double(monotonicNanoseconds() - noiseStart) * 1e-3
            }
            returns.append(total)
        }
        times.sort()
        totals.sort()
        // command: the whole work of one command (its noise included); critical path: plan() alone
        let object: [String: Any] = ["returns": returns, "command_us_p50": percentile(totals, 0.5), "command_us_p99": percentile(totals, 0.99),
                                     "critical_path_us_p50": percentile(times, 0.5), "critical_path_us_p99": percentile(times, 0.99),
                                     "commands": times.count]
        print(String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
    }
}

/// The task and planner settings of a configuration file, and a start state of the task (its
/// training start distribution, drawn with a fixed seed).
struct ConfiguredTask {
    let task: ControlTask
    let planner: PlannerConfiguration
    let start: [Float]

    init(path: String) throws {
        let root = ConfigTable(try TOMLParser.parse(try String(contentsOfFile: path, encoding: .utf8)), path: "")
        let taskTable = try root.table("task") ?? ConfigTable([:], path: "task")
        let name = try taskTable.choice("name", default: "pendulum", from: TaskRegistry.names)
        task = try TaskRegistry.make(name: name, parameters: taskTable, baseDirectory: (path as NSString).deletingLastPathComponent)
        planner = try PlannerConfiguration(table: try root.table("planner") ?? ConfigTable([:], path: "planner"))
        var generator = SplitMix(seed: 1)
        start = task.dynamics.randomInitialState { generator.uniform() }
    }
}

/// A seeded generator for start states and controls (not the planner's noise).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    /// In [0, 1).
    mutating func uniform() -> Float { Float(splitMix64(&state) >> 40) / Float(1 << 24) }
    /// Standard normal (Box-Muller).
    mutating func normal() -> Float {
        let u = Swift.max(uniform(), 1e-7), v = uniform()
        return (-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * .pi * v)
    }
}

/// A control drawn as the planner's first iteration draws it: N(centre, spread x half range),
/// clipped to the range; uniform over the range without a spread.
func randomControl(_ generator: inout SplitMix, lower: Float, upper: Float, spread: Float?) -> Float {
    guard let spread else { return lower + generator.uniform() * (upper - lower) }
    let centre = (lower + upper) / 2, half = (upper - lower) / 2
    return Swift.min(Swift.max(centre + spread * half * generator.normal(), lower), upper)
}

/// The floor under one planner iteration on a MuJoCo task: `count` rollouts of `horizon` control
/// steps (H x frame_skip bare physics steps each) from the task's start state, under the action
/// sequences a planner iteration rolled out (`replay`), split over `threads` threads that step at
/// once, each its own simulation state. Nothing but MuJoCo's steps and the loads of state and
/// controls they need: the planner's own physics, without its sampling, costs and update.
final class BareRollouts: @unchecked Sendable {
    let dynamics: MuJoCoDynamics
    let count: Int, horizon: Int, threads: Int
    /// The start state in lane 0 of a one-lane-group batch; the controls of rollout r, step t in
    /// lane 0 of their own group, at (r * horizon + t) * n * laneWidth.
    private let start: UnsafeMutablePointer<Float>, controls: UnsafeMutablePointer<Float>
    /// Bare steps MuJoCo found diverged in the last `time()` call.
    private(set) var failed = 0
    private let failures: ThreadResults

    init(_ file: ConfiguredTask, count: Int, horizon: Int, threads: Int) throws {
        guard let dynamics = file.task.dynamics as? MuJoCoDynamics else { throw ValidationError("not a MuJoCo task") }
        self.dynamics = dynamics
        (self.count, self.horizon, self.threads) = (count, horizon, threads)
        let m = dynamics.stateDimension, n = dynamics.actionDimension
        start = .allocate(capacity: m * laneWidth)
        start.initialize(repeating: 0, count: m * laneWidth)
        for c in 0..<m { start[c * laneWidth] = file.start[c] }
        controls = .allocate(capacity: count * horizon * n * laneWidth)
        controls.initialize(repeating: 0, count: count * horizon * n * laneWidth)
        failures = ThreadResults(count: threads)
    }

    /// Takes the sequences to step next: `sampled` as ``MirrorDescentPlanner/lastSampledActions()``
    /// gives them, `count` x `horizon` x the action dimension.
    func replay(_ sampled: [Float]) {
        precondition(sampled.count == count * horizon * dynamics.actionDimension)
        for (i, value) in sampled.enumerated() { controls[i * laneWidth] = value }
    }

    deinit {
        start.deallocate()
        controls.deallocate()
    }

    /// One call: every rollout, the threads each taking an equal share; wall time in microseconds.
    func time() -> Double {
        let begin = monotonicNanoseconds()
        DispatchQueue.concurrentPerform(iterations: threads) { i in
            failures.set(i, ([], roll(from: count * i / threads, to: count * (i + 1) / threads)))
        }
        let elapsed = Double(monotonicNanoseconds() - begin) / 1000
        failed = failures.all.map(\.failed).reduce(0, +)
        return elapsed
    }

    private func roll(from first: Int, to end: Int) -> Int {
        let n = dynamics.actionDimension
        var failed = 0
        _ = dynamics.model.withSimulation { simulation in
            for r in first..<end {
                simulation.load(BatchView(base: start, stride: laneWidth, lanes: laneWidth), lane: 0)
                for t in 0..<horizon {
                    simulation.control(BatchView(base: controls + (r * horizon + t) * n * laneWidth, stride: laneWidth, lanes: laneWidth), lane: 0,
                                       lower: dynamics.actionLowerBounds, upper: dynamics.actionUpperBounds)
                    if !simulation.step(dynamics.frameSkip) { failed += 1 }
                }
            }
        }
        return failed
    }
}

/// One physics step of a MuJoCo model on its own: the floor under the planner's rollouts.
struct PhysicsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "physics",
        abstract: "Time a MuJoCo task's physics alone: rollouts of H control steps (H x frame_skip mj_step calls) on one simulation state, from the task's start state under random controls; print JSON."
    )

    @Option(help: "A configuration file with [task] name = \"mujoco\".") var config: String
    @Option(help: "Control steps per rollout.") var horizon = 20
    @Option(help: "Timed rollouts per thread (after 10% warm-up).") var rollouts = 2000
    @Option(help: "Threads stepping at once, each its own simulation state: the step's time when that many cores are busy.") var threads = 1
    @Option(help: "Draw each control from N(centre, std x half range), clipped, as the planner's first iteration samples them (the configuration's initial_std when given as 'planner'); without it, uniform over the range.")
    var std: String?

    func run() throws {
        guard (1...10_000).contains(horizon), (1...maxCalls).contains(rollouts), (1...64).contains(threads) else {
            throw ValidationError("--horizon must be in 1...10000, --rollouts in 1...\(maxCalls) and --threads in 1...64, got \(horizon), \(rollouts) and \(threads)")
        }
        let file = try ConfiguredTask(path: config)
        guard let dynamics = file.task.dynamics as? MuJoCoDynamics else { throw ValidationError("\(config) is not a MuJoCo task") }
        let m = file.task.dynamics.stateDimension, n = file.task.dynamics.actionDimension
        let (horizon, rollouts) = (horizon, rollouts)
        let spread: Float?
        switch std {
        case nil: spread = nil
        case "planner": spread = file.planner.initialStd
        case let text?:
            guard let value = Float(text), value.isFinite, value > 0 else { throw ValidationError("--std must be a number > 0 or 'planner', got \(text)") }
            spread = value
        }
        // one thread's timed rollouts (microseconds) and failed steps
        let timeOneThread: @Sendable (UInt64) -> (times: [Double], failed: Int) = { seed in
            let states = UnsafeMutablePointer<Float>.allocate(capacity: m * laneWidth), actions = UnsafeMutablePointer<Float>.allocate(capacity: n * laneWidth * horizon)
            defer { states.deallocate(); actions.deallocate() }
            var generator = SplitMix(seed: seed)
            var times: [Double] = []
            let warmUp = max(1, rollouts / 10)
            var failed = 0
            _ = dynamics.model.withSimulation { simulation in
                for r in 0..<(rollouts + warmUp) {
                    for c in 0..<m { states[c * laneWidth] = file.start[c] }
                    for i in 0..<(n * horizon) {
                        actions[i * laneWidth] = randomControl(&generator, lower: dynamics.actionLowerBounds[i % n], upper: dynamics.actionUpperBounds[i % n], spread: spread)
                    }
                    let stateView = BatchView(base: states, stride: laneWidth, lanes: laneWidth)
                    let begin = monotonicNanoseconds()
                    simulation.load(stateView, lane: 0)
                    for t in 0..<horizon {
                        simulation.control(BatchView(base: actions + t * n * laneWidth, stride: laneWidth, lanes: laneWidth), lane: 0,
                                           lower: dynamics.actionLowerBounds, upper: dynamics.actionUpperBounds)
                        if !simulation.step(dynamics.frameSkip) { failed += 1 }
                    }
                    if r >= warmUp { times.append(Double(monotonicNanoseconds() - begin) / 1000) }
                }
            }
            return (times, failed)
        }
        let results = ThreadResults(count: threads)
        DispatchQueue.concurrentPerform(iterations: threads) { i in results.set(i, timeOneThread(UInt64(2 + i))) }
        var times = results.all.flatMap(\.times)
        let failed = results.all.map(\.failed).reduce(0, +)
        times.sort()
        let physicsSteps = Double(horizon * dynamics.frameSkip)
        let mean = times.reduce(0, +) / Double(times.count)
        let object: [String: Any] = ["horizon": horizon, "frame_skip": dynamics.frameSkip, "threads": threads, "std": spread.map { Double($0) } ?? "uniform", "rollouts": times.count, "failed_steps": failed,
                                     "rollout_us_p50": percentile(times, 0.5), "step_us_mean": mean / physicsSteps,
                                     "step_us_p50": percentile(times, 0.5) / physicsSteps]
        print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
    }
}

/// Each thread's result, written once by that thread.
final class ThreadResults: @unchecked Sendable {
    private var slots: [(times: [Double], failed: Int)]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: ([], 0), count: count) }
    func set(_ i: Int, _ value: (times: [Double], failed: Int)) { lock.withLock { slots[i] = value } }
    var all: [(times: [Double], failed: Int)] { lock.withLock { slots } }
}
