/// A value of a task's cost that a session may set at run time (a goal, a target, a weight):
/// its name, length, the bounds every component must lie within, and its value.
public struct TaskParameter: Sendable, Equatable {
    public let name: String
    public let length: Int
    public let lower: Float
    public let upper: Float
    public let value: [Float]
    /// One line for the hello reply and the docs: what it is, in which units.
    public let summary: String

    public init(name: String, value: [Float], lower: Float, upper: Float, summary: String) {
        self.name = name
        self.length = value.count
        self.lower = lower
        self.upper = upper
        self.value = value
        self.summary = summary
    }
}

/// A cost parameter bound to the fields that hold it: declared once, then read (for the hello
/// reply and status) and written (for a session) through the same declaration.
public struct ParameterField<Cost>: Sendable {
    let name: String
    let summary: String
    let lower: Float, upper: Float
    let read: @Sendable (Cost) -> [Float]
    let write: @Sendable (inout Cost, [Float]) -> Void

    init(_ name: String, _ summary: String, lower: Float, upper: Float,
         read: @escaping @Sendable (Cost) -> [Float], write: @escaping @Sendable (inout Cost, [Float]) -> Void) {
        self.name = name
        self.summary = summary
        self.lower = lower
        self.upper = upper
        self.read = read
        self.write = write
    }

    /// One Float field: a weight (non-negative, at most 1e6) unless bounds are given.
    static func scalar(_ name: String, _ field: WritableKeyPath<Cost, Float> & Sendable, _ summary: String,
                       lower: Float = 0, upper: Float = 1e6) -> ParameterField {
        ParameterField(name, summary, lower: lower, upper: upper, read: { [$0[keyPath: field]] }, write: { $0[keyPath: field] = $1[0] })
    }
}

/// A cost whose parameters are a list of fields.
protocol FieldParameterised: BatchCost {
    static var parameterFields: [ParameterField<Self>] { get }
}

extension FieldParameterised {
    public var parameters: [TaskParameter] {
        Self.parameterFields.map { TaskParameter(name: $0.name, value: $0.read(self), lower: $0.lower, upper: $0.upper, summary: $0.summary) }
    }

    public func setting(_ name: String, to values: [Float]) -> any BatchCost {
        var cost = self
        guard let field = Self.parameterFields.first(where: { $0.name == name }) else { preconditionFailure("no parameter \(name)") }
        field.write(&cost, values)
        return cost
    }
}

extension BatchCost {
    /// None, unless the cost declares some.
    public var parameters: [TaskParameter] { [] }

    public func setting(_ name: String, to values: [Float]) -> any BatchCost { self }
}

/// Why a parameter message was refused; names the parameter.
public struct ParameterError: Error, Equatable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The task has none, or the message named none.
        case none
        case unknown, wrongLength, nonFinite, outOfRange
    }

    public let kind: Kind
    public let parameter: String
    public let reason: String

    public init(kind: Kind, parameter: String, reason: String) {
        self.kind = kind
        self.parameter = parameter
        self.reason = reason
    }

    public var description: String { parameter.isEmpty ? reason : "parameter \(parameter): \(reason)" }
}

extension ControlTask {
    /// The parameters a session may set, with the values of this task (empty: none).
    public var parameters: [TaskParameter] { cost.parameters }

    /// This task with `values` set, all or nothing: every name is checked (known, the declared
    /// length, finite, within its bounds) before any is applied.
    public func settingParameters(_ values: [String: [Double]]) throws(ParameterError) -> ControlTask {
        guard !cost.parameters.isEmpty else {
            throw ParameterError(kind: .none, parameter: "", reason: "task \(name) has no parameters")
        }
        guard !values.isEmpty else { throw ParameterError(kind: .none, parameter: "", reason: "no parameters given") }
        // a lane-at-a-time rollout carries its own copy of the running cost
        guard sequenceRollout == nil else { throw ParameterError(kind: .none, parameter: "", reason: "task \(name)'s rollout cannot take parameters") }
        let declared = Dictionary(uniqueKeysWithValues: cost.parameters.map { ($0.name, $0) })
        var checked: [(String, [Float])] = []
        for name in values.keys.sorted() {
            let given = values[name]!
            guard let parameter = declared[name] else {
                throw ParameterError(kind: .unknown, parameter: name, reason: "task \(self.name) has no such parameter (it has \(declared.keys.sorted().joined(separator: ", ")))")
            }
            guard given.count == parameter.length else {
                throw ParameterError(kind: .wrongLength, parameter: name, reason: "has \(parameter.length) value\(parameter.length == 1 ? "" : "s"), got \(given.count)")
            }
            var converted: [Float] = []
            for (i, v) in given.enumerated() {
                let f = Float(v)
                guard v.isFinite, f.isFinite else { throw ParameterError(kind: .nonFinite, parameter: name, reason: "value \(i) is not finite (\(v))") }
                guard f >= parameter.lower, f <= parameter.upper else {
                    throw ParameterError(kind: .outOfRange, parameter: name, reason: "value \(i) (\(v)) is outside [\(parameter.lower), \(parameter.upper)]")
                }
                converted.append(f)
            }
            checked.append((name, converted))
        }
        let updated = checked.reduce(cost) { $0.setting($1.0, to: $1.1) }
        return ControlTask(name: name, dynamics: dynamics, cost: updated, sequenceRollout: sequenceRollout)
    }
}
