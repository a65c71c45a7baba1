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
        return try parse(text, source: path, withPrior: withPrior, requireTask: true)
    }

    /// `planningOnly` reads the task, planner, networks and guard alone: the tables of a daemon's
    /// sockets and files (`[security]`, `[metrics]`, `[control]`, `[recording]`) are left out, so a
    /// recording replays on a machine without the daemon's keys or folders.
    /// `requireTask` refuses a text without a `[task]` table, as every configuration file must
    /// have: an empty or half-written file (an editor's, `cat > file` caught mid-way) would otherwise
    /// read as the defaults, and a reload would turn a robot's daemon into a pendulum's.
    public static func parse(_ text: String, source: String, withPrior: Bool = true, planningOnly: Bool = false,
                             requireTask: Bool = false) throws(LoadError) -> DaemonConfiguration {
        var values: [String: ConfigValue]
        do {
            values = try TOMLReader.parse(text)
            if planningOnly { for table in ["security", "metrics", "control", "recording"] { values.removeValue(forKey: table) } }
        } catch {
            throw LoadError(source: source, location: "line \(error.line), column \(error.column)", reason: error.reason)
        }
        var configuration: DaemonConfiguration
        do {
            configuration = try read(ConfigTable(values), source: source, withPrior: withPrior)
        } catch {
            throw LoadError(source: source, location: error.key, reason: error.reason)
        }
        if requireTask && values["task"] == nil {
            throw LoadError(source: source, location: "task", reason: values.isEmpty
                ? "the file is empty (or only comments): a configuration names its task; `mpcd --print-default` prints a whole one"
                : "no [task] table: a configuration names its task ([task] name = \"pendulum\", or another); `mpcd --print-default` prints a whole one")
        }
        configuration.text = text
        return configuration
    }
}
