// The file formats (TOML, bounded file reading, safe writing) are a module of their own, which
// mpcctl shares without the models; everything that reads configurations sees them through Models.
@_exported import ConfigFiles

/// A configuration value that cannot be used: names the key (a dotted path) and why.
public struct ConfigurationError: Error, Equatable, CustomStringConvertible {
    public let key: String
    public let reason: String

    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }

    public var description: String { "\(key): \(reason)" }
}

/// The allowed range of a number, used both to check it and to say what is allowed.
public enum NumberRange: Sendable {
    case any
    case positive
    case nonNegative
    case closed(Double, Double)
    case atLeast(Double)

    func allows(_ x: Double) -> Bool {
        switch self {
        case .any: true
        case .positive: x > 0
        case .nonNegative: x >= 0
        case let .closed(lo, hi): x >= lo && x <= hi
        case let .atLeast(lo): x >= lo
        }
    }

    var phrase: String {
        switch self {
        case .any: "a finite number"
        case .positive: "a number > 0"
        case .nonNegative: "a number >= 0"
        case let .closed(lo, hi): "a number in [\(format(lo)), \(format(hi))]"
        case let .atLeast(lo): "a number >= \(format(lo))"
        }
    }
}

private func format(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
}

/// Reads one table of a configuration. Every read records its key, so `finish()` can reject the
/// keys nobody asked for (a typo must stop the start, not be ignored).
public final class ConfigTable {
    public let path: String
    public let values: [String: ConfigValue]
    private var known: [String] = []

    public init(_ values: [String: ConfigValue], path: String = "") {
        self.values = values
        self.path = path
    }

    /// Every key a read has asked for so far, in the order asked: after a reader has run on an
    /// empty table, the keys it accepts.
    public var knownKeys: [String] { known }

    public func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private func fetch(_ key: String) -> ConfigValue? {
        if !known.contains(key) { known.append(key) }
        return values[key]
    }

    public func contains(_ key: String) -> Bool { values[key] != nil }

    public func error(_ key: String, _ reason: String) -> ConfigurationError {
        ConfigurationError(key: keyPath(key), reason: reason)
    }

    public func number(_ key: String, default fallback: Double, _ range: NumberRange = .any) throws(ConfigurationError) -> Double {
        guard let value = fetch(key) else { return fallback }
        let x: Double
        switch value {
        case let .integer(i): x = Double(i)
        case let .float(f): x = f
        default: throw error(key, "expected \(range.phrase), got \(value.typeName)")
        }
        guard x.isFinite, range.allows(x) else { throw error(key, "expected \(range.phrase), got \(x)") }
        return x
    }

    /// A number that must be present.
    public func requiredNumber(_ key: String, _ range: NumberRange = .any) throws(ConfigurationError) -> Double {
        guard values[key] != nil else {
            _ = fetch(key)
            throw error(key, "required: \(range.phrase)")
        }
        return try number(key, default: 0, range)
    }

    /// A number, or nil when the key is absent.
    public func optionalNumber(_ key: String, _ range: NumberRange = .any) throws(ConfigurationError) -> Double? {
        guard values[key] != nil else {
            _ = fetch(key)
            return nil
        }
        return try number(key, default: 0, range)
    }

    /// An array of numbers, or nil when the key is absent.
    public func optionalNumbers(_ key: String, count: Int? = nil, _ range: NumberRange = .any) throws(ConfigurationError) -> [Double]? {
        guard values[key] != nil else {
            _ = fetch(key)
            return nil
        }
        return try numbers(key, default: [], count: count, range)
    }

    /// Largest magnitude a 32-bit model parameter may take: far beyond any physical value, and far
    /// enough below Float's limit that arithmetic on it stays finite.
    public static let floatLimit = 1e12

    public func float(_ key: String, default fallback: Float, _ range: NumberRange = .any) throws(ConfigurationError) -> Float {
        let x = try number(key, default: Double(fallback), range)
        // (found by fuzzing: 2.2e130 passed as a finite Double and became an infinite Float)
        guard abs(x) <= Self.floatLimit else { throw error(key, "expected \(range.phrase) no larger than 1e12 in magnitude, got \(x)") }
        return Float(x)
    }

    public func integer(_ key: String, default fallback: Int, min: Int, max: Int = Int.max) throws(ConfigurationError) -> Int {
        guard let value = fetch(key) else { return fallback }
        let allowed = max == Int.max ? "an integer >= \(min)" : "an integer in [\(min), \(max)]"
        guard case let .integer(i) = value else { throw error(key, "expected \(allowed), got \(value.typeName)") }
        guard i >= min, i <= max else { throw error(key, "expected \(allowed), got \(i)") }
        return i
    }

    public func bool(_ key: String, default fallback: Bool) throws(ConfigurationError) -> Bool {
        guard let value = fetch(key) else { return fallback }
        guard case let .bool(b) = value else { throw error(key, "expected true or false, got \(value.typeName)") }
        return b
    }

    public func string(_ key: String, default fallback: String) throws(ConfigurationError) -> String {
        guard let value = fetch(key) else { return fallback }
        guard case let .string(s) = value else { throw error(key, "expected a string, got \(value.typeName)") }
        return s
    }

    /// A list of strings; a single string is a list of one.
    public func strings(_ key: String, default fallback: [String]) throws(ConfigurationError) -> [String] {
        guard let value = fetch(key) else { return fallback }
        switch value {
        case let .string(s): return [s]
        case let .array(items):
            var out: [String] = []
            for (i, item) in items.enumerated() {
                guard case let .string(s) = item else { throw error(key, "element \(i): expected a string, got \(item.typeName)") }
                out.append(s)
            }
            return out
        default:
            throw error(key, "expected a string or an array of strings, got \(value.typeName)")
        }
    }

    /// A string that must be one of `choices`.
    public func choice(_ key: String, default fallback: String, from choices: [String]) throws(ConfigurationError) -> String {
        let s = try string(key, default: fallback)
        guard choices.contains(s) else {
            throw error(key, "unknown value \"\(s)\"; expected one of \(choices.joined(separator: ", "))")
        }
        return s
    }

    /// An array of numbers; `count`, when given, is the required length.
    public func numbers(_ key: String, default fallback: [Double], count: Int? = nil, _ range: NumberRange = .any) throws(ConfigurationError) -> [Double] {
        guard let value = fetch(key) else { return fallback }
        guard case let .array(items) = value else { throw error(key, "expected an array of numbers, got \(value.typeName)") }
        if let count, items.count != count { throw error(key, "expected \(count) numbers, got \(items.count)") }
        var out: [Double] = []
        for (i, item) in items.enumerated() {
            let x: Double
            switch item {
            case let .integer(n): x = Double(n)
            case let .float(f): x = f
            default: throw error(key, "element \(i): expected \(range.phrase), got \(item.typeName)")
            }
            guard x.isFinite, range.allows(x) else { throw error(key, "element \(i): expected \(range.phrase), got \(x)") }
            out.append(x)
        }
        return out
    }

    /// A sub-table, or nil when absent.
    public func table(_ key: String) throws(ConfigurationError) -> ConfigTable? {
        guard let value = fetch(key) else { return nil }
        guard case let .table(t) = value else { throw error(key, "expected a table, got \(value.typeName)") }
        return ConfigTable(t, path: keyPath(key))
    }

    /// An array of tables (TOML's `[[key]]`), empty when absent.
    public func tables(_ key: String) throws(ConfigurationError) -> [ConfigTable] {
        guard let value = fetch(key) else { return [] }
        guard case let .array(items) = value else { throw error(key, "expected an array of tables, got \(value.typeName)") }
        var out: [ConfigTable] = []
        for (i, item) in items.enumerated() {
            guard case let .table(t) = item else { throw error(key, "element \(i): expected a table, got \(item.typeName)") }
            out.append(ConfigTable(t, path: "\(keyPath(key))[\(i)]"))
        }
        return out
    }

    /// Rejects every key that no read asked for.
    public func finish() throws(ConfigurationError) {
        let unknown = values.keys.filter { !known.contains($0) }.sorted()
        guard let first = unknown.first else { return }
        let expected = known.isEmpty ? "this table takes no keys" : "known keys: \(known.joined(separator: ", "))"
        throw error(first, "unknown key; \(expected)")
    }
}
