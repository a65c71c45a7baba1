import ControlProtocol
import Foundation
import Models

/// The hello reply's JSON (docs/protocol.md): everything a client needs to talk to this daemon.
public struct HelloReply: Codable, Equatable, Sendable {
    public struct Form: Codable, Equatable, Sendable {
        public var name: String
        public var components: [String]
    }

    public struct Planner: Codable, Equatable, Sendable {
        public var likelihood: String
        public var samples: Int
        public var iterations: Int
    }

    public struct Prior: Codable, Equatable, Sendable {
        public var file: String
        public var kind: String
        public var version: Int
        public var adaptive: Bool
        public var online: Bool
    }

    /// A parameter a session may set with a `parameters` message, and its configured value.
    public struct Parameter: Codable, Equatable, Sendable {
        public var name: String
        public var length: Int
        public var lower: Double
        public var upper: Double
        public var `default`: [Double]
        public var summary: String

        init(_ parameter: TaskParameter) {
            name = parameter.name
            length = parameter.length
            lower = Double(parameter.lower)
            upper = Double(parameter.upper)
            self.default = parameter.value.map(Double.init)
            summary = parameter.summary
        }
    }

    public var `protocol`: Int
    public var daemon: String
    public var task: String
    public var mode: String
    public var rateHz: Double
    public var dt: Double
    public var stateDim: Int
    public var stateNames: [String]
    public var actionDim: Int
    public var actionNames: [String]
    public var actionLow: [Double]
    public var actionHigh: [Double]
    public var observationForms: [Form]
    public var planSteps: Int
    public var horizon: Int
    public var diagnostics: [String]
    public var errorCodes: [String: Int]
    public var planner: Planner
    public var prior: Prior?
    /// Empty when the task has none; absent from daemons older than the parameters message.
    public var parameters: [Parameter]
    /// What the client learns of the task here, hashed (never 0): a client that sends it back in
    /// its observations and parameters (header word c) is refused with `task_changed` once a
    /// reload or a restart has made it another, rather than served on a stale description.
    public var taskFingerprint: UInt32

    enum CodingKeys: String, CodingKey {
        case `protocol`, daemon, task, mode, dt, horizon, diagnostics, planner, prior, parameters
        case rateHz = "rate_hz", stateDim = "state_dim", stateNames = "state_names", actionDim = "action_dim"
        case actionNames = "action_names", actionLow = "action_low", actionHigh = "action_high"
        case observationForms = "observation_forms", planSteps = "plan_steps", errorCodes = "error_codes"
        case taskFingerprint = "task_fingerprint"
    }

    public init(_ configuration: DaemonConfiguration) {
        let d = configuration.task.dynamics, p = configuration.planner
        let bounds = try? p.bounds(for: configuration.task)
        self.protocol = Int(WireProtocol.version)
        daemon = "mpcd \(mpcdVersion)"
        task = configuration.task.name
        mode = configuration.server.mode.rawValue
        rateHz = configuration.rateHz
        dt = Double(d.dt)
        stateDim = d.stateDimension
        stateNames = d.stateNames
        actionDim = d.actionDimension
        actionNames = d.actionNames
        actionLow = bounds?.lower.map(Double.init) ?? []
        actionHigh = bounds?.upper.map(Double.init) ?? []
        observationForms = d.observationForms.map { Form(name: $0.name, components: $0.components) }
        planSteps = configuration.server.planSteps
        horizon = p.horizon
        diagnostics = WireProtocol.diagnosticNames
        errorCodes = Dictionary(uniqueKeysWithValues: WireProtocol.ErrorCode.allCases.map { ($0.name, Int($0.rawValue)) })
        planner = Planner(likelihood: p.likelihood, samples: p.samples, iterations: p.iterations)
        prior = configuration.prior.map {
            Prior(file: $0.file, kind: $0.network.kind.rawValue, version: $0.network.version, adaptive: $0.adaptive, online: $0.online)
        }
        parameters = configuration.task.parameters.map(Parameter.init)
        taskFingerprint = 0
        taskFingerprint = Self.fingerprint(of: self)
    }

    /// The hash of the task's description in `reply`: its name, step, state and action names,
    /// action bounds, observation forms and which parameters it takes within which bounds; not
    /// the planner's settings nor the parameters' configured values (a reload that changes only
    /// those asks nothing of a client). FNV-1a folded to 32 bits, 0 made 1.
    static func fingerprint(of reply: HelloReply) -> UInt32 {
        struct Described: Encodable {
            let task: String, dt: Double, stateNames: [String], actionNames: [String]
            let actionLow: [Double], actionHigh: [Double], observationForms: [Form], parameters: [[String]]
        }
        let described = Described(task: reply.task, dt: reply.dt, stateNames: reply.stateNames, actionNames: reply.actionNames,
                                  actionLow: reply.actionLow, actionHigh: reply.actionHigh, observationForms: reply.observationForms,
                                  parameters: reply.parameters.map { [$0.name, "\($0.length)", "\($0.lower)", "\($0.upper)"] })
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let hash = fnv1a((try? encoder.encode(described)) ?? Data())
        let folded = UInt32(truncatingIfNeeded: hash) ^ UInt32(truncatingIfNeeded: hash >> 32)
        return folded == 0 ? 1 : folded
    }

    /// The JSON frame, keys sorted.
    public var bytes: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return Array((try? encoder.encode(self)) ?? Data("{}".utf8))
    }
}
