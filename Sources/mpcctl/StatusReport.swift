import Foundation

/// `mpcctl status` as one screen of text.
struct StatusReport {
    let status: [String: Any]

    init(_ status: [String: Any]) { self.status = status }

    func number(_ key: String) -> Double { (status[key] as? NSNumber)?.doubleValue ?? 0 }

    /// A count from the daemon's JSON as an integer, whatever number it holds (never a trap: the
    /// answer may come from anything listening on the socket).
    static func count(_ value: Any?) -> Int {
        guard let x = (value as? NSNumber)?.doubleValue, x.isFinite else { return 0 }
        return Int(min(max(x, -9e15), 9e15))
    }

    func count(_ key: String) -> Int { Self.count(status[key]) }

    static func duration(_ seconds: Double) -> String {
        let s = Int(min(max(seconds.isFinite ? seconds : 0, 0), 9e15))
        return s >= 3600 ? String(format: "%dh %02dm %02ds", s / 3600, s / 60 % 60, s % 60) : String(format: "%dm %02ds", s / 60, s % 60)
    }

    static func latency(_ summary: [String: Any]?) -> String {
        guard let summary, case let count = Self.count(summary["count"]), count > 0 else { return "no ticks yet" }
        func ms(_ key: String) -> String { String(format: "%.3f", ((summary[key] as? NSNumber)?.doubleValue ?? 0) / 1000) }
        return "p50 \(ms("p50"))  p90 \(ms("p90"))  p99 \(ms("p99"))  p99.9 \(ms("p99.9"))  max \(ms("max")) ms  (\(count) replies)"
    }

    static func sessionTable(_ sessions: [[String: Any]]) -> String {
        guard !sessions.isEmpty else { return "  (no sessions)" }
        var lines = ["  " + "PEER".padding(toLength: 24, withPad: " ", startingAt: 0) + "LAST OBS      TICKS   REFUSED  ITER  GAP"]
        for s in sessions {
            let peer = (s["peer"] as? String ?? "?").padding(toLength: 24, withPad: " ", startingAt: 0)
            let age = (s["last_observation_age_seconds"] as? NSNumber).map { String(format: "%.3f s ago", $0.doubleValue) } ?? "none"
            let ticks = "\(Self.count(s["ticks_served"]))"
            let refused = "\(Self.count(s["refused"]))"
            // with adaptive iterations: the last plan's count over the rule's target
            let iterations = "\(Self.count(s["iterations"]))" + ((s["iteration_target"] as? NSNumber).map { "/\($0.intValue)" } ?? "")
            let gap = (s["amortisation_gap"] as? NSNumber).map { String(format: "%.3f", $0.doubleValue) } ?? "-"
            lines.append("  \(peer)\(age.padding(toLength: 14, withPad: " ", startingAt: 0))\(ticks.padding(toLength: 8, withPad: " ", startingAt: 0))\(refused.padding(toLength: 9, withPad: " ", startingAt: 0))\(iterations.padding(toLength: 6, withPad: " ", startingAt: 0))\(gap)")
            // the parameters this session's client set (the others are the configuration's)
            let values = s["parameters"] as? [String: Any] ?? [:]
            let set = (s["parameters_set"] as? [String] ?? []).map { name in
                "\(name)=" + ((values[name] as? [NSNumber])?.map { String(format: "%g", $0.doubleValue) }.joined(separator: ",") ?? "?")
            }
            if !set.isEmpty { lines.append("    parameters " + set.joined(separator: " ")) }
        }
        return lines.joined(separator: "\n")
    }

    var text: String {
        let planner = status["planner"] as? [String: Any] ?? [:]
        let latency = status["tick_latency_us"] as? [String: Any] ?? [:]
        let sessions = status["sessions"] as? [String: Any] ?? [:]
        let byCode = (status["rejected_by_code"] as? [String: Any] ?? [:]).filter { Self.count($0.value) > 0 }
            .sorted { $0.key < $1.key }.map { "\($0.key) \(Self.count($0.value))" }
        var lines = [
            "mpcd \(status["version"] ?? "?"), pid \(status["pid"] ?? "?"), up \(Self.duration(number("uptime_seconds")))",
            "config     \(status["config"] ?? "?")",
            "task       \(status["task"] ?? "?"); planner \(planner["likelihood"] ?? "?"), K=\(planner["samples"] ?? "?"), H=\(planner["horizon"] ?? "?"), up to \(planner["iterations"] ?? "?") iterations per tick",
            String(format: "timing     %@; target %.1f Hz, achieved %.1f Hz per session (last 60 s)", (status["mode"] as? String ?? "?"), number("target_rate_hz"), number("achieved_rate_hz")),
            "latency    since start  \(Self.latency(latency["since_start"] as? [String: Any]))",
            "           last 60 s    \(Self.latency(latency["last_60s"] as? [String: Any]))",
            "health     \(count("missed_ticks")) missed ticks, \(count("fallbacks")) fallbacks, \(count("stale_replies")) stale replies, \(count("rejected_messages")) rejected messages"
                + (byCode.isEmpty ? "" : " (\(byCode.joined(separator: ", ")))") + ", \(count("dropped_replies")) dropped replies",
            String(format: "planner    %.2f iterations per tick", number("iterations_per_tick")),
        ]
        if let prior = status["prior"] as? [String: Any] {
            var line = "prior      \(prior["kind"] ?? "?") \(prior["file"] ?? "?"), network version \(prior["network_version"] ?? "?")"
            if let gap = prior["amortisation_gap"] as? NSNumber { line += String(format: ", amortisation gap %.3f", gap.doubleValue) }
            if prior["adaptive"] as? Bool == true { line += ", adaptive" }
            if prior["online"] as? Bool == true { line += ", learning online" }
            lines.append(line)
        } else {
            lines.append("prior      none (the previous plan carried forward)")
        }
        if let value = status["value"] as? [String: Any] {
            var line = "value      \(value["file"] ?? "?"), weight \(value["weight"] ?? "?"), network version \(value["network_version"] ?? "?")"
            if let term = value["value_term"] as? NSNumber { line += String(format: ", beyond the horizon %.3f (cost)", term.doubleValue) }
            lines.append(line)
        } else {
            lines.append("value      none (the task's terminal cost)")
        }
        lines.append("endpoints  \((status["endpoints"] as? [String] ?? []).joined(separator: ", ")); control \(status["control"] ?? "?")"
            + ((status["metrics"] as? String).map { "; metrics \($0)" } ?? ""))
        let connections = status["connections"] as? [String: Any] ?? [:]
        let ended = (connections["ended"] as? [String: Any] ?? [:]).filter { Self.count($0.value) > 0 }.sorted { $0.key < $1.key }
            .map { "\($0.key) \(Self.count($0.value))" }
        lines.append("connected  \(Self.count(connections["count"])) of at most \(Self.count(connections["max"])) connections; ended "
            + (ended.isEmpty ? "none" : ended.joined(separator: ", ")) + "; \(Self.count(connections["oversized_messages"])) oversized messages")
        lines.append("sessions   \(Self.count(sessions["count"])) of at most \(Self.count(sessions["max"])) (opened \(Self.count(sessions["opened"])), expired \(Self.count(sessions["expired"])), "
            + "gave way \(Self.count(sessions["evicted"])), peer gone \(Self.count(sessions["peer_gone"])), ended by reload \(Self.count(sessions["ended_by_reload"])))")
        lines.append(Self.sessionTable(sessions["list"] as? [[String: Any]] ?? []))
        return lines.joined(separator: "\n")
    }
}
