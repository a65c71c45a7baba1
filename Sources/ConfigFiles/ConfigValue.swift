/// A value from a configuration file (TOML in the daemon), independent of the parser.
public indirect enum ConfigValue: Sendable, Equatable {
    case integer(Int)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([ConfigValue])
    case table([String: ConfigValue])

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
