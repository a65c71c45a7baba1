import ControlProtocol
import Foundation
import Models

/// TOML text to ``ConfigValue``, so the rest of the daemon never sees the parser's types.
enum TOMLReader {
    typealias SyntaxError = TOMLParser.SyntaxError

    static func parse(_ text: String) throws(SyntaxError) -> [String: ConfigValue] {
        try TOMLParser.parse(text)
    }
}

/// Configuration files: TOML text to a checked configuration.
extension DaemonConfiguration {
    /// Largest configuration file read (a hand-written one is a few KiB).
    public static let maxFileBytes = ControlEndpoint.maxFileBytes

    /// `withPrior: false` skips loading the `[prior]` network (`mpcd train` writes it).
    public static func load(path: String, withPrior: Bool = true) throws(LoadError) -> DaemonConfiguration {
        let text: String
        do {
            text = try FileReading.text(path, limit: maxFileBytes)
        } catch {
            throw LoadError(source: path, location: "file", reason: error.reason)
        }
        return try parse(text, source: path, withPrior: withPrior)
    }

    /// `planningOnly` reads the task, planner, networks and guard alone: the tables of a daemon's
    /// sockets and files (`[security]`, `[metrics]`, `[control]`, `[recording]`) are left out, so a
    /// recording replays on a machine without the daemon's keys or folders.
    public static func parse(_ text: String, source: String, withPrior: Bool = true, planningOnly: Bool = false) throws(LoadError) -> DaemonConfiguration {
        var values: [String: ConfigValue]
        do {
            values = try TOMLReader.parse(text)
            if planningOnly { for table in ["security", "metrics", "control", "recording"] { values.removeValue(forKey: table) } }
        } catch {
            throw LoadError(source: source, location: "line \(error.line), column \(error.column)", reason: error.reason)
        }
        do {
            var configuration = try read(ConfigTable(values), source: source, withPrior: withPrior)
            configuration.text = text
            return configuration
        } catch {
            throw LoadError(source: source, location: error.key, reason: error.reason)
        }
    }
}
