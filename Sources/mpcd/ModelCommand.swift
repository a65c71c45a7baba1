import ArgumentParser
import Daemon
import Foundation
import Models

/// `mpcd model`: what a configuration's task is, and (with --step) its transitions for given
/// states and actions, one per line: how a user checks a model against a simulator of their own.
struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Describe the configuration's task; with --step, step states read from standard input.",
        discussion: """
            Prints the task's state and action names, bounds and step. With --step it reads lines of \
            numbers from standard input, the state then the action, and writes for each a line with \
            the next state and the running cost of the state and action (the cost the planner adds \
            for that step), space-separated; a line that cannot be read gets "error: ..." instead.
            """
    )

    @Option(help: "TOML configuration giving the task (default: the embedded default).") var config: String?
    @Flag(help: "Step states from standard input.") var step = false

    func run() throws {
        let task = try loadConfiguration(config, withPrior: false).task
        let d = task.dynamics
        guard step else {
            print("task \(task.name), step \(d.dt) s")
            print("state (\(d.stateDimension)): \(d.stateNames.joined(separator: " "))")
            print("action (\(d.actionDimension)): \(d.actionNames.joined(separator: " "))")
            print("action bounds: " + zip(d.actionLowerBounds, d.actionUpperBounds).map { "[\($0), \($1)]" }.joined(separator: " "))
            try flushStandardOutput()
            return
        }
        let n = d.stateDimension, m = d.actionDimension
        while let next = Self.readLine(maxBytes: Self.maxLineBytes) {
            guard let line = next else {
                print("error: a line longer than \(Self.maxLineBytes) bytes, skipped")
                continue
            }
            let numbers = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," }).map { Float($0) }
            guard numbers.count == n + m, numbers.allSatisfy({ $0?.isFinite == true }) else {
                print("error: expected \(n) state values and \(m) action values, finite numbers")
                continue
            }
            let values = numbers.map { $0! }
            let (next, cost) = task.step(state: Array(values[0..<n]), action: Array(values[n...]))
            print((next + [cost]).map { "\($0)" }.joined(separator: " "))
        }
        try flushStandardOutput()
    }

    /// The longest line --step reads: far past any state and action, short of what could exhaust memory.
    static let maxLineBytes = 1 << 20

    /// The next line of standard input without its newline; `.some(nil)` for a line over
    /// `maxBytes`, read to its end but not kept (input that never sends a newline must not fill
    /// memory); nil at the end of input. A last line without a newline still counts.
    static func readLine(maxBytes: Int) -> String?? {
        var bytes: [UInt8] = []
        var overlong = false, any = false
        while true {
            let c = getchar()
            if c == EOF { break }
            any = true
            if c == Int32(UInt8(ascii: "\n")) { break }
            // one byte over the limit is kept: it may be the CR of a CRLF line of maxBytes
            if bytes.count <= maxBytes { bytes.append(UInt8(c)) } else { overlong = true }
        }
        guard any else { return nil }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }  // a CRLF line, as readLine took it
        return overlong || bytes.count > maxBytes ? .some(nil) : String(decoding: bytes, as: UTF8.self)
    }
}
