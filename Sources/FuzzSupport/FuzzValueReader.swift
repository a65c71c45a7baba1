#if canImport(Models)
import Models
#endif

/// Decodes bytes into configuration values, favouring the keys the readers know.
public struct FuzzValueReader {
    let bytes: [UInt8]
    var position = 0
    /// Every key of every table, and a few that no table knows. A key is picked by a byte modulo
    /// the count, so adding one re-maps every kept input (the corpus's regression inputs would no
    /// longer reach their checks): planner keys added since (`action_change_cost`, `never_worse`)
    /// wait for the corpus to be regenerated with them.
    static let keys = [
        // [planner]
        "samples", "horizon", "iterations", "temperature", "elites", "likelihood", "initial_std", "min_std",
        "mean_step", "std_step", "prior_strength", "prior_samples", "prior_start", "seed", "threads",
        "parallel_threshold", "action_min", "action_max", "include_mean_sample", "discount",
        // [task]
        "name", "gravity", "mass", "length", "max_torque", "max_speed", "dt", "obstacles", "goal", "x", "y", "radius", "min_speed",
        "min_position", "max_position", "goal_position", "terminal_pp", "terminal_pv", "terminal_vv", "max_force",
        // [server]
        "endpoints", "mode", "rate_hz", "budget_fraction", "plan_steps", "session_timeout_s", "max_sessions", "evict_idle_after_s",
        "max_message_bytes", "max_connections", "memory_limit_mb", "trust_client_timestamps", "workers", "busy_poll_us",
        "cpu_affinity", "realtime_priority",
        // [safety], [security], [control]
        "stale_after_s", "safe_action", "max_rate", "curve_secret_key_file", "authorized_keys_file", "endpoint",
        // [prior], [value]
        "file", "online", "kind", "hidden", "state_directory", "adaptive", "min_iterations", "gap_low", "gap_high", "probe_every",
        "patience", "online_learning_rate", "online_batch", "online_buffer", "online_publish_every", "weight",
        "unknown",
    ]
    static let tables = ["task", "planner", "server", "safety", "prior", "value", "security", "control", "unknown"]
    static let strings = [
        "mppi", "cem", "prior", "cheaper", "carried", "", "nan", "pendulum", "cartpole", "unicycle", "point_mass", "mountain_car",
        "realtime", "lockstep", "zero", "hold", "policy", "plan", "tcp://127.0.0.1:5555", "ipc:///tmp/x", "inproc://x", "http://x",
        "embedded:pendulum_policy", "embedded:pendulum_plan", "embedded:mountain_car_value", "embedded:none", "/dev/zero",
        "/nonexistent", "/etc/passwd", ".", "64,64", "4294967296,4294967296", "100000,100000", "0", "-1,2", "1,,2",
    ]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func byte() -> UInt8 {
        defer { position += 1 }
        return position < bytes.count ? bytes[position] : 0
    }

    mutating func value(depth: Int) -> ConfigValue {
        switch byte() % 8 {
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
        case 7:
            // powers of ten and the integer limits: where sizes and times overflow
            let choices: [Int] = [0, 1, -1, 1 << 20, 1 << 31, 1 << 32, 1 << 62, Int.max, Int.min, 10_000, 100_000, 1_048_576]
            return byte() & 1 == 0 ? .integer(choices[Int(byte()) % choices.count]) : .float(pow10(Int(byte() % 80) - 20))
        default: return .integer(Int(byte()))
        }
    }

    func pow10(_ e: Int) -> Double {
        var x = 1.0
        for _ in 0..<abs(e) { x = e > 0 ? x * 10 : x / 10 }
        return x
    }

    mutating func table(depth: Int) -> [String: ConfigValue] {
        var out: [String: ConfigValue] = [:]
        for _ in 0..<(Int(byte()) % 6) { out[Self.keys[Int(byte()) % Self.keys.count]] = value(depth: depth) }
        return out
    }

    /// A whole configuration: a few of the tables, each with a few keys.
    mutating func root() -> [String: ConfigValue] {
        var out: [String: ConfigValue] = [:]
        for _ in 0..<(1 + Int(byte()) % 5) { out[Self.tables[Int(byte()) % Self.tables.count]] = .table(table(depth: 1)) }
        return out
    }
}
