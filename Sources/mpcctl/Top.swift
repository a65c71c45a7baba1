import ArgumentParser
import ControlProtocol
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
            case let .success(answer):
                if let status = answer.reply.status {
                    let snapshot = TopSnapshot(status: status, at: Date())
                    screen = snapshot.render(since: previous)
                    previous = snapshot
                } else {
                    screen = "mpcd answered without a status: \(answer.reply.error ?? "?")"
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
    let status: DaemonStatus
    let at: Date

    func render(since previous: TopSnapshot?) -> String {
        let seconds = previous.map { at.timeIntervalSince($0.at) } ?? 0
        let before = Dictionary(previous?.status.sessions.list.map { ($0.peer, $0) } ?? [], uniquingKeysWith: { a, _ in a })
        // counts from the daemon are UInt64: differences are taken only when they grew
        let missed = previous.map { status.missedTicks >= $0.status.missedTicks ? "+\(status.missedTicks - $0.status.missedTicks)" : "reset" }
        var lines = [
            "mpcd \(status.version) pid \(status.pid), up \(StatusReport.duration(status.uptimeSeconds)); "
                + "\(status.task), \(status.mode) at \(String(format: "%.1f", status.targetRateHz)) Hz; "
                + "\(status.sessions.count) session\(status.sessions.count == 1 ? "" : "s"); missed ticks \(status.missedTicks)" + (missed.map { " (\($0))" } ?? ""),
            "latency    last 60 s    \(StatusReport.latency(status.tickLatencyUs.last60s))",
            "",
            Self.row(["PEER", "RATE Hz", "LAT ms", "ITER", "TRUNC", "FALLBK", "STALE", "REFUSED", "LAST OBS", "FLAGS"]),
        ]
        for now in status.sessions.list {
            let was = before[now.peer]
            // counts only grow within a session: a smaller one is another session of that name
            func delta(_ path: KeyPath<SessionStatus, UInt64>) -> UInt64? {
                guard let was, now[keyPath: path] >= was[keyPath: path] else { return nil }
                return now[keyPath: path] - was[keyPath: path]
            }
            let ticks = delta(\.ticksServed)
            let rate = ticks.map { seconds > 0 ? String(format: "%.1f", Double($0) / seconds) : "-" } ?? "-"
            let latency: String = {
                guard let count = delta(\.latencyCount), count > 0, let sum = delta(\.latencySumUs) else { return "-" }
                return String(format: "%.3f", Double(sum) / Double(count) / 1000)
            }()
            let iterations: String = {
                guard let t = ticks, t > 0, let i = delta(\.iterationsTotal) else { return "\(now.iterations)" }
                return String(format: "%.2f", Double(i) / Double(t))
            }()
            let age = now.lastObservationAgeSeconds.map { String(format: "%.3f s", $0) } ?? "none"
            // what happened in the interval: T plans cut short, F fallbacks, S stale replies, R
            // refused messages; P: the client set parameters
            var flags = ""
            if (delta(\.truncatedPlans) ?? 0) > 0 { flags += "T" }
            if (delta(\.fallbacks) ?? 0) > 0 { flags += "F" }
            if (delta(\.staleReplies) ?? 0) > 0 { flags += "S" }
            if (delta(\.refused) ?? 0) > 0 { flags += "R" }
            if !(now.parametersSet ?? []).isEmpty { flags += "P" }
            lines.append(Self.row([now.peer, rate, latency, iterations, "\(now.truncatedPlans)", "\(now.fallbacks)", "\(now.staleReplies)",
                                   "\(now.refused)", age, flags.isEmpty ? "-" : flags]))
        }
        if status.sessions.list.isEmpty { lines.append("  (no sessions)") }
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
