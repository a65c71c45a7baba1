import ControlProtocol
import Foundation

/// `mpcctl status` as one screen of text.
struct StatusReport {
    let status: DaemonStatus

    init(_ status: DaemonStatus) { self.status = status }

    static func duration(_ seconds: Double) -> String {
        let s = Int(min(max(seconds.isFinite ? seconds : 0, 0), 9e15))
        return s >= 3600 ? String(format: "%dh %02dm %02ds", s / 3600, s / 60 % 60, s % 60) : String(format: "%dm %02ds", s / 60, s % 60)
    }

    static func latency(_ summary: LatencySummary) -> String {
        guard summary.count > 0 else { return "no ticks yet" }
        func ms(_ value: UInt64?) -> String { String(format: "%.3f", Double(value ?? 0) / 1000) }
        return "p50 \(ms(summary.p50))  p90 \(ms(summary.p90))  p99 \(ms(summary.p99))  p99.9 \(ms(summary.p999))  max \(ms(summary.max)) ms  (\(summary.count) replies)"
    }

    static func padded(_ text: String, _ width: Int) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }

    static func sessionTable(_ sessions: [SessionStatus]) -> String {
        guard !sessions.isEmpty else { return "  (no sessions)" }
        var lines = ["  " + padded("PEER", 24) + "LAST OBS      TICKS   REFUSED  ITER  GAP"]
        for s in sessions {
            let age = s.lastObservationAgeSeconds.map { String(format: "%.3f s ago", $0) } ?? "none"
            // with adaptive iterations: the last plan's count over the rule's target
            let iterations = "\(s.iterations)" + (s.iterationTarget.map { "/\($0)" } ?? "")
            let gap = s.amortisationGap.map { String(format: "%.3f", $0) } ?? "-"
            lines.append("  \(padded(s.peer, 24))\(padded(age, 14))\(padded("\(s.ticksServed)", 8))\(padded("\(s.refused)", 9))\(padded(iterations, 6))\(gap)")
            // the parameters this session's client set (the others are the configuration's)
            let set = (s.parametersSet ?? []).map { name in
                "\(name)=" + ((s.parameters?[name])?.map { String(format: "%g", $0) }.joined(separator: ",") ?? "?")
            }
            if !set.isEmpty { lines.append("    parameters " + set.joined(separator: " ")) }
        }
        return lines.joined(separator: "\n")
    }

    var text: String {
        let s = status
        let byCode = s.rejectedByCode.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        var lines = [
            "mpcd \(s.version), pid \(s.pid), up \(Self.duration(s.uptimeSeconds))",
            "config     \(s.config)",
            "task       \(s.task); planner \(s.planner.likelihood), K=\(s.planner.samples), H=\(s.planner.horizon), up to \(s.planner.iterations) iterations per tick",
            String(format: "timing     %@; target %.1f Hz, achieved %.1f Hz per session (last 60 s)", s.mode, s.targetRateHz, s.achievedRateHz),
            "latency    since start  \(Self.latency(s.tickLatencyUs.sinceStart))",
            "           last 60 s    \(Self.latency(s.tickLatencyUs.last60s))",
            "health     \(s.missedTicks) missed ticks, \(s.fallbacks) fallbacks, \(s.staleReplies) stale replies, \(s.rejectedMessages) rejected messages"
                + (byCode.isEmpty ? "" : " (\(byCode.joined(separator: ", ")))") + ", \(s.droppedReplies) dropped replies",
            String(format: "planner    %.2f iterations per tick", s.iterationsPerTick),
        ]
        if let prior = s.prior {
            var line = "prior      \(prior.kind) \(prior.file), network version \(prior.networkVersion)"
            if let gap = prior.amortisationGap { line += String(format: ", amortisation gap %.3f", gap) }
            if prior.adaptive { line += ", adaptive" }
            if prior.online { line += ", learning online" }
            lines.append(line)
        } else {
            lines.append("prior      none (the previous plan carried forward)")
        }
        if let value = s.value {
            var line = "value      \(value.file), weight \(value.weight), network version \(value.networkVersion)"
            if let term = value.valueTerm { line += String(format: ", beyond the horizon %.3f (cost)", term) }
            lines.append(line)
        } else {
            lines.append("value      none (the task's terminal cost)")
        }
        if let recording = s.recording {
            lines.append(Self.recordingLine(recording))
        }
        lines.append("endpoints  \(s.endpoints.joined(separator: ", ")); control \(s.control)" + (s.metrics.value.map { "; metrics \($0)" } ?? ""))
        let ended = s.connections.ended.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        lines.append("connected  \(s.connections.count) of at most \(s.connections.max) connections; ended "
            + (ended.isEmpty ? "none" : ended.joined(separator: ", ")) + "; \(s.connections.oversizedMessages) oversized messages")
        let sessions = s.sessions
        lines.append("sessions   \(sessions.count) of at most \(sessions.max) (opened \(sessions.opened), expired \(sessions.expired), "
            + "gave way \(sessions.evicted), peer gone \(sessions.peerGone), ended by reload \(sessions.endedByReload))")
        lines.append(Self.sessionTable(sessions.list))
        return lines.joined(separator: "\n")
    }

    static func recordingLine(_ r: DaemonStatus.Recording) -> String {
        var line = "recording  \(r.enabled ? "on" : "off"), \(r.directory)"
        if let file = r.file.value { line += " (writing \((file as NSString).lastPathComponent))" }
        line += String(format: "; %llu ticks written, %llu dropped, %.1f MiB in %llu files since start", r.written, r.dropped, Double(r.bytes) / 1_048_576, r.files)
        if let problem = r.problem.value { line += "; \(problem)" }
        return line
    }
}
