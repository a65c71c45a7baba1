import Foundation
import Models
import TOMLKit

/// TOML text to ``ConfigValue``, so the rest of the daemon never sees the parser's types.
enum TOMLReader {
    struct SyntaxError: Error {
        let line: Int
        let column: Int
        let reason: String
    }

    static func parse(_ text: String) throws(SyntaxError) -> [String: ConfigValue] {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw SyntaxError(line: error.source.begin.line, column: error.source.begin.column, reason: error.description)
        } catch {
            throw SyntaxError(line: 0, column: 0, reason: "\(error)")
        }
        return convert(table)
    }

    private static func convert(_ table: TOMLTable) -> [String: ConfigValue] {
        var out: [String: ConfigValue] = [:]
        for key in table.keys {
            if let value = table[key] { out[key] = convert(value) }
        }
        return out
    }

    private static func convert(_ value: TOMLValueConvertible) -> ConfigValue {
        switch value.type {
        case .table: return .table(convert(value.table!))
        case .array: return .array(value.array!.map { convert($0) })
        case .string: return .string(value.string!)
        case .int: return .integer(value.int!)
        case .double: return .float(value.double!)
        case .bool: return .bool(value.bool!)
        case .date, .time, .dateTime: return .string(value.tomlValue.debugDescription)
        }
    }
}

/// Configuration files: TOML text to a checked configuration.
extension DaemonConfiguration {
    /// `withPrior: false` skips loading the `[prior]` network (`mpcd train` writes it).
    public static func load(path: String, withPrior: Bool = true) throws(LoadError) -> DaemonConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LoadError(source: path, location: "file", reason: "cannot be read (\((error as NSError).localizedDescription))")
        }
        return try parse(text, source: path, withPrior: withPrior)
    }

    public static func parse(_ text: String, source: String, withPrior: Bool = true) throws(LoadError) -> DaemonConfiguration {
        let values: [String: ConfigValue]
        do {
            values = try TOMLReader.parse(text)
        } catch {
            throw LoadError(source: source, location: "line \(error.line), column \(error.column)", reason: error.reason)
        }
        do {
            return try read(ConfigTable(values), source: source, withPrior: withPrior)
        } catch {
            throw LoadError(source: source, location: error.key, reason: error.reason)
        }
    }
}
