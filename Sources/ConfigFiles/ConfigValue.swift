/// A value from a configuration file (TOML in the daemon), independent of the parser.
public indirect enum ConfigValue: Sendable, Equatable {
    case integer(Int)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([ConfigValue])
    case table([String: ConfigValue])

    /// The value written out with every table's keys in order: alike for any two files that read
    /// alike, whatever their order, spacing or comments (a fingerprint of what a table says).
    public var canonicalText: String {
        switch self {
        case let .integer(value): "\(Double(value))"  // 3 and 3.0 read alike
        case let .float(value): "\(value)"
        case let .bool(value): "\(value)"
        case let .string(value): "\"\(value.unicodeScalars.map { $0 == "\"" || $0 == "\\" ? "\\\($0)" : "\($0)" }.joined())\""
        case let .array(values): "[" + values.map(\.canonicalText).joined(separator: ",") + "]"
        case let .table(values): "{" + values.keys.sorted().map { "\($0)=\(values[$0]!.canonicalText)" }.joined(separator: ",") + "}"
        }
    }

    public var typeName: String {
        switch self {
        case .integer: "an integer"
        case .float: "a number"
        case .bool: "a boolean"
        case .string: "a string"
        case .array: "an array"
        case .table: "a table"
        }
    }
}
