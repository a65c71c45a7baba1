#if canImport(Models)
import Models
import Planners
#endif

/// Decodes bytes into configuration values, favouring the keys the readers know.
public struct FuzzValueReader {
    let bytes: [UInt8]
    var position = 0
    static let keys = ["samples", "horizon", "iterations", "temperature", "elites", "likelihood", "initial_std", "min_std",
                       "mean_step", "std_step", "prior_strength", "prior_samples", "prior_start", "seed", "threads",
                       "parallel_threshold", "action_min", "action_max", "include_mean_sample", "gravity", "mass", "length",
                       "max_torque", "max_speed", "dt", "obstacles", "goal", "x", "y", "radius", "min_speed", "min_position",
                       "max_position", "goal_position", "terminal_pp", "terminal_pv", "terminal_vv", "max_force", "unknown"]
    static let strings = ["mppi", "cem", "prior", "cheaper", "carried", "", "nan", "pendulum"]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func byte() -> UInt8 {
        defer { position += 1 }
        return position < bytes.count ? bytes[position] : 0
    }

    mutating func value(depth: Int) -> ConfigValue {
        switch byte() % 7 {
        case 0: return .integer(Int(Int16(bitPattern: UInt16(byte()) << 8 | UInt16(byte()))))
        case 1:
            var bits: UInt64 = 0
            for _ in 0..<8 { bits = bits << 8 | UInt64(byte()) }
            return .float(Double(bitPattern: bits))
        case 2: return .float(Double(Int8(bitPattern: byte())) / 8)
        case 3: return .bool(byte() & 1 == 1)
        case 4: return .string(Self.strings[Int(byte()) % Self.strings.count])
        case 5 where depth < 3: return .array((0..<(Int(byte()) % 4)).map { _ in value(depth: depth + 1) })
        case 6 where depth < 3: return .table(table(depth: depth + 1))
        default: return .integer(Int(byte()))
        }
    }

    mutating func table(depth: Int) -> [String: ConfigValue] {
        var out: [String: ConfigValue] = [:]
        for _ in 0..<(Int(byte()) % 6) { out[Self.keys[Int(byte()) % Self.keys.count]] = value(depth: depth) }
        return out
    }
}

/// The configuration target: a task and a planner table from the bytes, read or refused, and when
/// both are accepted a short plan from a state the bytes give. Never a crash.
public func fuzzConfigure(_ bytes: [UInt8]) {
    var reader = FuzzValueReader(bytes)
    let name = TaskRegistry.names[Int(reader.byte()) % TaskRegistry.names.count]
    let taskTable = reader.table(depth: 0)
    let plannerTable = reader.table(depth: 0)
    guard let task = try? TaskRegistry.make(name: name, parameters: ConfigTable(taskTable, path: "task")) else { return }
    guard let configuration = try? PlannerConfiguration(table: ConfigTable(plannerTable, path: "planner")),
          configuration.samples * configuration.horizon <= 1 << 16, configuration.iterations <= 8,
          let planner = try? MirrorDescentPlanner(task: task, configuration: configuration) else { return }
    let state = (0..<task.dynamics.stateDimension).map { _ in Float(Int8(bitPattern: reader.byte())) / 16 }
    let plan = planner.plan(state: state)
    precondition(plan.action.allSatisfy { $0.isFinite }, "a plan with a non-finite action")
}
