import ArgumentParser
import Daemon
import Foundation

/// `mpcctl top`: the sessions live, one screen refreshed in place.
struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live view of the sessions: rate, latency, iterations and flags, refreshed in place (Ctrl-C quits).",
        discussion: "On a terminal the screen is redrawn in place; otherwise each refresh is printed as a plain block. Rates and means are over the last interval.")
    @OptionGroup var connection: Connection
    @Option(help: "Seconds between refreshes (0.1 to 3600).") var interval: Double = 1
    @Option(help: "Stop after this many refreshes (default: until Ctrl-C).") var count: Int?

    func validate() throws {
        guard interval >= 0.1 && interval <= 3600 else { throw ValidationError("--interval must be between 0.1 and 3600 seconds, got \(interval)") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
    }

    func run() throws {
        let terminal = isatty(STDOUT_FILENO) == 1
        var previous: TopSnapshot?
        var shown = 0
        while count.map({ shown < $0 }) ?? true {
            let screen: String
            switch connection.tryRequest(ControlRequest(command: .status)) {
            case let .success(reply):
                if let status = reply["status"] as? [String: Any] {
                    let snapshot = TopSnapshot(status: status, at: Date())
                    screen = snapshot.render(since: previous)
                    previous = snapshot
                } else {
                    screen = "mpcd answered without a status: \(reply["error"] ?? "?")"
                }
            case let .failure(reason):
                // keep watching: a restarting daemon comes back
                screen = "mpcd is not answering (\(Self.clock())): \(reason)\nretrying every \(interval) s"
                previous = nil
            }
            // home and clear on a terminal; plain blocks, a blank line apart, elsewhere
            print(terminal ? "\u{1B}[H\u{1B}[2J" + screen : screen + "\n", terminator: terminal ? "" : "\n")
            fflush(nil)
            shown += 1
            if count.map({ shown >= $0 }) ?? false { break }
            Thread.sleep(forTimeInterval: interval)
        }
        if terminal { print("") }
    }

    static func clock() -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "HH:mm:ss"
        return formatter.string(from: Date())
    }
}

/// One status reply, and the screen that compares it with the one before.
struct TopSnapshot {
    struct SessionFigures {
        var ticks = 0, iterations = 0, truncated = 0, fallbacks = 0, stale = 0, refused = 0, latencyCount = 0, latencySum = 0
    }

    let status: [String: Any]
    let at: Date
    let sessions: [(peer: String, figures: SessionFigures, entry: [String: Any])]

    init(status: [String: Any], at: Date) {
        self.status = status
        self.at = at
        let list = (status["sessions"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        sessions = list.map { entry in
            let c = { (key: String) in StatusReport.count(entry[key]) }
            return (entry["peer"] as? String ?? "?", SessionFigures(
                ticks: c("ticks_served"), iterations: c("iterations_total"), truncated: c("truncated_plans"), fallbacks: c("fallbacks"),
                stale: c("stale_replies"), refused: c("refused"), latencyCount: c("latency_count"), latencySum: c("latency_sum_us")), entry)
        }
    }

    func render(since previous: TopSnapshot?) -> String {
        let seconds = previous.map { at.timeIntervalSince($0.at) } ?? 0
        let before = Dictionary(previous?.sessions.map { ($0.peer, $0.figures) } ?? [], uniquingKeysWith: { a, _ in a })
        let report = StatusReport(status)
        let missedNow = report.count("missed_ticks")
        let missed = previous.map { missedNow - StatusReport(($0.status)).count("missed_ticks") }
        var lines = [
            "mpcd \(status["version"] ?? "?") pid \(status["pid"] ?? "?"), up \(StatusReport.duration(report.number("uptime_seconds"))); "
                + "\(status["task"] ?? "?"), \(status["mode"] ?? "?") at \(String(format: "%.1f", report.number("target_rate_hz"))) Hz; "
                + "\(sessions.count) session\(sessions.count == 1 ? "" : "s"); missed ticks \(missedNow)" + (missed.map { " (+\($0))" } ?? ""),
            "latency    last 60 s    \(StatusReport.latency((status["tick_latency_us"] as? [String: Any])?["last_60s"] as? [String: Any]))",
            "",
            Self.row(["PEER", "RATE Hz", "LAT ms", "ITER", "TRUNC", "FALLBK", "STALE", "REFUSED", "LAST OBS", "FLAGS"]),
        ]
        for (peer, now, entry) in sessions {
            let was = before[peer]
            let dt = was == nil ? 0 : seconds
            func delta(_ path: KeyPath<SessionFigures, Int>) -> Int? { was.map { now[keyPath: path] - $0[keyPath: path] } }
            let ticks = delta(\.ticks)
            let rate = ticks.map { dt > 0 ? String(format: "%.1f", Double($0) / dt) : "-" } ?? "-"
            let latency: String = {
                guard let count = delta(\.latencyCount), count > 0, let sum = delta(\.latencySum) else { return "-" }
                return String(format: "%.3f", Double(sum) / Double(count) / 1000)
            }()
            let iterations: String = {
                guard let t = ticks, t > 0, let i = delta(\.iterations) else { return "\(StatusReport.count(entry["iterations"]))" }
                return String(format: "%.2f", Double(i) / Double(t))
            }()
            let age = (entry["last_observation_age_seconds"] as? NSNumber).map { String(format: "%.3f s", $0.doubleValue) } ?? "none"
            // what happened in the interval: T plans cut short, F fallbacks, S stale replies, R
            // refused messages; P: the client set parameters
            var flags = ""
            if (delta(\.truncated) ?? 0) > 0 { flags += "T" }
            if (delta(\.fallbacks) ?? 0) > 0 { flags += "F" }
            if (delta(\.stale) ?? 0) > 0 { flags += "S" }
            if (delta(\.refused) ?? 0) > 0 { flags += "R" }
            if !((entry["parameters_set"] as? [String]) ?? []).isEmpty { flags += "P" }
            lines.append(Self.row([peer, rate, latency, iterations, "\(now.truncated)", "\(now.fallbacks)", "\(now.stale)", "\(now.refused)", age,
                                   flags.isEmpty ? "-" : flags]))
        }
        if sessions.isEmpty { lines.append("  (no sessions)") }
        lines.append("")
        lines.append("RATE, LAT (mean) and ITER (per tick): " + (previous == nil ? "from the next refresh on" : String(format: "the last %.1f s", seconds))
            + "; counts since the session opened")
        lines.append("FLAGS this interval: T plans truncated, F fallbacks, S stale replies, R refused messages; P parameters set")
        return lines.joined(separator: "\n")
    }

    static let widths = [24, 9, 9, 6, 7, 8, 7, 9, 11, 6]

    static func row(_ cells: [String]) -> String {
        zip(cells, widths).map { cell, width in
            let text = cell.count > width - 1 ? String(cell.prefix(width - 2)) + "~" : cell
            return text.padding(toLength: width, withPad: " ", startingAt: 0)
        }.joined().trimmingCharacters(in: .whitespaces)
    }
}
