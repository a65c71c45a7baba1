#if canImport(Models)
import Models
import Planners
#endif
#if canImport(Daemon)
import Daemon
#endif

/// Why the configuration the bytes describe is refused, or nil when it is accepted (for the
/// regression inputs' tests).
public func fuzzConfigurationError(_ bytes: [UInt8]) -> ConfigurationError? {
    var reader = FuzzValueReader(bytes)
    do {
        _ = try DaemonConfiguration.read(ConfigTable(reader.root()), source: "/tmp/fuzz.toml", withPrior: bytes.first.map { $0 & 1 == 0 } ?? true)
        return nil
    } catch { return error }
}

/// The configuration target: a whole configuration (every table the daemon reads) from the bytes,
/// read or refused, and when accepted and small, a short plan from a state the bytes give. Never
/// a crash, and never a configuration accepted that the daemon could not run.
public func fuzzConfigure(_ bytes: [UInt8]) {
    var reader = FuzzValueReader(bytes)
    let root = reader.root()
    guard let configuration = try? DaemonConfiguration.read(ConfigTable(root), source: "/tmp/fuzz.toml", withPrior: bytes.first.map { $0 & 1 == 0 } ?? true) else { return }
    // what the daemon derives at start must be sane for every accepted configuration
    precondition(configuration.rateHz >= 0.1 && configuration.rateHz <= 10_000, "an accepted rate of \(configuration.rateHz) Hz")
    precondition(configuration.bytesPerSession * Double(configuration.server.maxSessions) <= Double(configuration.server.memoryLimitMB) * 1_048_576 * 1.01)
    _ = nanoseconds(seconds: configuration.server.sessionTimeout)
    _ = try? configuration.actionSafety(period: 1 / configuration.rateHz)
    let planner = configuration.planner
    guard planner.samples * planner.horizon <= 1 << 16, planner.iterations <= 8,
          let mirror = try? MirrorDescentPlanner(task: configuration.task, configuration: planner) else { return }
    let state = (0..<configuration.task.dynamics.stateDimension).map { _ in Float(Int8(bitPattern: reader.byte())) / 16 }
    let plan = mirror.plan(state: state)
    precondition(plan.action.allSatisfy { $0.isFinite }, "a plan with a non-finite action")
}
