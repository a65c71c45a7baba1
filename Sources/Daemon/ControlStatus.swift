import Foundation
import Histogram
import Models
import Planners

/// What the daemon reports about itself: `mpcctl status` and `sessions`, Prometheus metrics, and
/// the status line systemd shows.
extension Server {
    // MARK: - Status

    /// One line for systemd's STATUS= and the journal.
    func statusLine() -> String {
        "\(configuration.task.name) \(configuration.planner.likelihood) K=\(configuration.planner.samples) H=\(configuration.planner.horizon), "
            + "\(configuration.server.mode.rawValue), \(sessions.count) session\(sessions.count == 1 ? "" : "s"), "
            + "\(counters.replies) replies, \(counters.overruns) missed ticks"
    }

    func sessionList(now: UInt64) -> [[String: Any]] {
        sessions.values.sorted { $0.index < $1.index }.map { s in
            var entry: [String: Any] = [
                "peer": s.name, "ticks_served": s.ticksServed, "refused": s.refused, "fallbacks": s.fallbacks,
                "age_seconds": Double(now - s.createdAt) * 1e-9, "iterations": s.lastIterations,
            ]
            if let observation = s.observation { entry["last_observation_age_seconds"] = Double(now - observation.receivedAt) * 1e-9 }
            if s.lastGap.isFinite { entry["amortisation_gap"] = Double(s.lastGap) }
            if let target = s.iterationTarget { entry["iteration_target"] = target }
            if s.lastRelativeGain.isFinite { entry["relative_gain"] = s.lastRelativeGain }
            if s.lastValueTerm.isFinite { entry["value_term"] = Double(s.lastValueTerm) }
            let parameters = s.planner.task.parameters
            if !parameters.isEmpty {
                entry["parameters"] = Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.value.map(Double.init)) })
                // the names the client set; the rest are the configuration's
                entry["parameters_set"] = s.parameterValues.keys.sorted()
                // a network prior trained under other values only proposes (κ = 0)
                if s.prior != nil { entry["prior_fits_parameters"] = s.planner.priorFitsTask }
            }
            return entry
        }
    }

    func status(now: UInt64) -> [String: Any] {
        let minute = latency.lastMinute(now: now)
        let uptime = Double(now - startedAt) * 1e-9
        let covered = min(uptime, Double(LatencyStatistics.windowCount) * Double(LatencyStatistics.windowNanoseconds) * 1e-9)
        let p = configuration.planner
        var refused: [String: UInt64] = [:]
        for code in WireProtocol.ErrorCode.allCases { refused[code.name] = counters.refused[code, default: 0] }
        var object: [String: Any] = [
            "version": mpcdVersion, "pid": Int(getpid()), "uptime_seconds": uptime, "config": configuration.source,
            "task": configuration.task.name, "mode": configuration.server.mode.rawValue,
            "planner": ["likelihood": p.likelihood, "samples": p.samples, "horizon": p.horizon, "iterations": p.iterations] as [String: Any],
            "target_rate_hz": configuration.rateHz,
            "achieved_rate_hz": covered > 0 ? Double(minute.totalCount) / covered / Double(max(1, sessions.count)) : 0,
            "tick_latency_us": ["since_start": latency.sinceStart.summary, "last_60s": minute.summary],
            "ticks": counters.ticks, "replies": counters.replies, "dropped_replies": counters.dropped,
            "missed_ticks": counters.overruns, "fallbacks": counters.fallbacks + sessions.values.reduce(0) { $0 + $1.fallbacks },
            "rejected_messages": refused.values.reduce(0, +), "rejected_by_code": refused,
            "stale_replies": counters.staleReplies + sessions.values.reduce(0) { $0 + $1.staleReplies },
            "sessions": ["count": sessions.count, "opened": counters.sessionsOpened, "expired": counters.sessionsExpired,
                         "evicted": counters.sessionsEvicted, "peer_gone": counters.sessionsPeerGone,
                         "ended_by_reload": counters.sessionsEndedByReload, "max": configuration.server.maxSessions,
                         "bytes_each": configuration.bytesPerSession, "list": sessionList(now: now)] as [String: Any],
            "connections": ["count": connectionGuard?.count ?? 0, "accepted": connectionGuard?.accepted ?? 0,
                            "max": connectionGuard?.limits.maxConnections ?? 0,
                            "ended": Dictionary(uniqueKeysWithValues: ConnectionGuard.Reason.allCases.map { ($0.rawValue, connectionGuard?.ended[$0] ?? 0) }),
                            "oversized_messages": counters.oversizedMessages] as [String: Any],
            "reconfiguring": pendingReconfiguration.map { $0.kind == .reload ? "reload" : "policy_load" } as Any? ?? NSNull(),
            "iterations_per_tick": planCount > 0 ? Double(iterationCount) / Double(planCount) : 0,
            "endpoints": boundEndpoints, "control": controlEndpoint,
            "curve": configuration.curve.map { ["public_key": $0.publicKey, "authorized_keys": $0.authorizedKeys.count, "refused_handshakes": zap?.refused ?? 0] as [String: Any] } as Any? ?? NSNull(),
        ]
        if let prior = configuration.prior {
            let gaps = sessions.values.map { Double($0.lastGap) }.filter { $0.isFinite }
            var entry: [String: Any] = ["file": prior.file, "kind": prior.network.kind.rawValue, "network_version": networkVersion,
                                        "adaptive": prior.adaptive, "online": prior.online]
            if !gaps.isEmpty { entry["amortisation_gap"] = gaps.reduce(0, +) / Double(gaps.count) }
            object["prior"] = entry
        }
        if let value = configuration.value {
            let terms = sessions.values.map { Double($0.lastValueTerm) }.filter { $0.isFinite }
            var entry: [String: Any] = ["file": value.file, "weight": Double(value.weight), "network_version": value.network.version]
            // the cost the sessions' plans expect beyond their horizon, w V(x_H), averaged
            if !terms.isEmpty { entry["value_term"] = terms.reduce(0, +) / Double(terms.count) }
            object["value"] = entry
        }
        return object
    }

    // MARK: - Prometheus metrics

    static let latencyBucketsMicroseconds: [UInt64] = [50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 1_000_000]

    /// Prometheus text exposition format, version 0.0.4.
    func metrics(now: UInt64) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: Double)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples { out += "\(name)\(labels) \(Self.number(value))\n" }
        }
        metric("mpcd_uptime_seconds", "gauge", "Seconds since the daemon started.", [("", Double(now - startedAt) * 1e-9)])
        metric("mpcd_ticks_total", "counter", "Realtime ticks run.", [("", Double(counters.ticks))])
        metric("mpcd_replies_total", "counter", "Replies sent (actions, hello replies and errors).", [("", Double(counters.replies))])
        metric("mpcd_dropped_replies_total", "counter", "Replies dropped because the peer was gone or not reading.", [("", Double(counters.dropped))])
        metric("mpcd_missed_ticks_total", "counter", "Ticks skipped because one overran its period.", [("", Double(counters.overruns))])
        metric("mpcd_fallbacks_total", "counter", "Replies carrying the prior's action because the planner failed.",
               [("", Double(counters.fallbacks + sessions.values.reduce(0) { $0 + $1.fallbacks }))])
        metric("mpcd_stale_replies_total", "counter", "Safe actions sent because a session's observations stopped.",
               [("", Double(counters.staleReplies + sessions.values.reduce(0) { $0 + $1.staleReplies }))])
        metric("mpcd_rejected_messages_total", "counter", "Messages refused with an error reply, by error code.",
               WireProtocol.ErrorCode.allCases.map { ("{code=\"\($0.name)\"}", Double(counters.refused[$0, default: 0])) })
        metric("mpcd_sessions", "gauge", "Sessions being served.", [("", Double(sessions.count))])
        metric("mpcd_sessions_opened_total", "counter", "Sessions opened since start.", [("", Double(counters.sessionsOpened))])
        metric("mpcd_sessions_ended_total", "counter", "Sessions ended other than by their client, by reason.", [
            ("{reason=\"expired\"}", Double(counters.sessionsExpired)), ("{reason=\"evicted\"}", Double(counters.sessionsEvicted)),
            ("{reason=\"peer_gone\"}", Double(counters.sessionsPeerGone)), ("{reason=\"reload\"}", Double(counters.sessionsEndedByReload)),
        ])
        metric("mpcd_connections", "gauge", "TCP and ipc connections to the data endpoints.", [("", Double(connectionGuard?.count ?? 0))])
        metric("mpcd_connections_ended_total", "counter", "Connections the daemon ended, by reason.",
               ConnectionGuard.Reason.allCases.map { ("{reason=\"\($0.rawValue)\"}", Double(connectionGuard?.ended[$0] ?? 0)) })
        metric("mpcd_oversized_messages_total", "counter", "Messages over max_message_bytes, all frames together.", [("", Double(counters.oversizedMessages))])
        metric("mpcd_iterations_per_tick", "gauge", "Mean mirror-descent iterations per plan since start.",
               [("", planCount > 0 ? Double(iterationCount) / Double(planCount) : 0)])
        if configuration.prior != nil {
            metric("mpcd_network_version", "gauge", "Version of the prior network's weights.", [("", Double(networkVersion))])
        }
        out += "# HELP mpcd_tick_latency_seconds From the tick's grid time (realtime) or the observation's arrival (lockstep) to the reply sent.\n"
        out += "# TYPE mpcd_tick_latency_seconds histogram\n"
        let histogram = latency.sinceStart
        for bound in Self.latencyBucketsMicroseconds {
            let count = histogram.totalCount == 0 ? 0 : histogram.count(within: 0...bound)
            out += "mpcd_tick_latency_seconds_bucket{le=\"\(Self.number(Double(bound) * 1e-6))\"} \(count)\n"
        }
        out += "mpcd_tick_latency_seconds_bucket{le=\"+Inf\"} \(histogram.totalCount)\n"
        out += "mpcd_tick_latency_seconds_sum \(Self.number(Double(latency.sumMicroseconds) * 1e-6))\n"
        out += "mpcd_tick_latency_seconds_count \(histogram.totalCount)\n"
        return out
    }

    static func number(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x)
    }

}
