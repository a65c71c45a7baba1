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
                // running totals: a reader's differences give rates and means over its interval
                "iterations_total": s.metrics.iterations, "truncated_plans": s.metrics.truncatedPlans,
                "stale_replies": s.staleReplies, "latency_count": s.metrics.latencyCount,
                "latency_sum_us": s.metrics.latencySumMicroseconds,
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
            "metrics": metricsServer.map { "http://\($0.address)/metrics" } as Any? ?? NSNull(),
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

    /// Prometheus text exposition format, version 0.0.4 (`mpcctl metrics` and the HTTP endpoint).
    /// Counters for everything a rate is wanted of; per-session series carry a `session` label.
    func metrics(now: UInt64) -> String {
        var out = PrometheusText()
        let live = sessions.values.sorted { $0.index < $1.index }
        let fallbacks = counters.fallbacks + live.reduce(0) { $0 + $1.fallbacks }
        let staleReplies = counters.staleReplies + live.reduce(0) { $0 + $1.staleReplies }
        out.metric("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.", processStartTime)
        out.metric("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", Self.processCPUSeconds())
        out.metric("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.", Self.residentMemoryBytes())
        out.metric("mpcd_build_info", "gauge", "Always 1; the labels say which mpcd this is.", [([("version", mpcdVersion)], 1)])
        out.metric("mpcd_uptime_seconds", "gauge", "Seconds since the daemon started.", Double(now - startedAt) * 1e-9)
        if configuration.server.mode == .realtime {
            // lockstep has no rate of its own: its clients set the pace
            out.metric("mpcd_target_rate_hertz", "gauge", "Configured ticks per second per session.", configuration.rateHz)
        }
        out.metric("mpcd_ticks_total", "counter", "Realtime ticks run (none in lockstep).", Double(counters.ticks))
        out.metric("mpcd_replies_total", "counter", "Replies sent (actions, hello replies and errors).", Double(counters.replies))
        out.metric("mpcd_dropped_replies_total", "counter", "Replies dropped because the peer was gone or not reading.", Double(counters.dropped))
        out.metric("mpcd_missed_ticks_total", "counter", "Ticks skipped because one overran its period.", Double(counters.overruns))
        out.metric("mpcd_fallbacks_total", "counter", "Replies carrying the prior's action because the planner failed.", Double(fallbacks))
        out.metric("mpcd_stale_replies_total", "counter", "Safe actions sent because a session's observations stopped.", Double(staleReplies))
        out.metric("mpcd_plans_total", "counter", "Plans sent as replies.", Double(planCount))
        out.metric("mpcd_truncated_plans_total", "counter", "Plans whose iterations the tick's deadline cut short.",
                   Double(counters.truncatedPlans + live.reduce(0) { $0 + $1.metrics.truncatedPlans }))
        out.metric("mpcd_iterations_total", "counter", "Mirror-descent iterations of the plans sent (per plan: a rate of this over a rate of mpcd_plans_total).",
                   Double(iterationCount))
        out.metric("mpcd_rejected_messages_total", "counter", "Messages refused with an error reply, by error code.",
                   WireProtocol.ErrorCode.allCases.map { ([("code", $0.name)], Double(counters.refused[$0, default: 0])) })
        out.metric("mpcd_sessions", "gauge", "Sessions being served.", Double(sessions.count))
        out.metric("mpcd_sessions_opened_total", "counter", "Sessions opened since start.", Double(counters.sessionsOpened))
        out.metric("mpcd_sessions_ended_total", "counter", "Sessions ended other than by their client, by reason.", [
            ([("reason", "expired")], Double(counters.sessionsExpired)), ([("reason", "evicted")], Double(counters.sessionsEvicted)),
            ([("reason", "peer_gone")], Double(counters.sessionsPeerGone)), ([("reason", "reload")], Double(counters.sessionsEndedByReload)),
        ])
        out.metric("mpcd_connections", "gauge", "TCP and ipc connections to the data endpoints.", Double(connectionGuard?.count ?? 0))
        out.metric("mpcd_connections_ended_total", "counter", "Connections the daemon ended, by reason.",
                   ConnectionGuard.Reason.allCases.map { ([("reason", $0.rawValue)], Double(connectionGuard?.ended[$0] ?? 0)) })
        out.metric("mpcd_oversized_messages_total", "counter", "Messages over max_message_bytes, all frames together.", Double(counters.oversizedMessages))
        if configuration.prior != nil {
            out.metric("mpcd_network_version", "gauge", "Version of the prior network's weights.", Double(networkVersion))
        }
        let bounds = SessionMetrics.latencyBoundsMicroseconds.map { Double($0) / 1e6 }
        out.histogram("mpcd_tick_latency_seconds", "From the tick's grid time (realtime) or the observation's arrival (lockstep) to the reply sent.",
                      bounds: bounds, [.init(labels: [], cumulativeCounts: exportedLatency.cumulativeLatencyBuckets, count: exportedLatency.latencyCount,
                                             sum: Double(exportedLatency.latencySumMicroseconds) / 1e6)])
        // per session: the client's identity as mpcctl shows it, and the session's number since
        // start (two identities can print alike: a printable one and another's hex)
        func labels(_ s: Session) -> [(String, String)] { [("session", s.name), ("index", String(s.index))] }
        func perSession(_ name: String, _ help: String, _ value: (Session) -> UInt64) {
            out.metric(name, "counter", help, live.map { (labels($0), Double(value($0))) })
        }
        perSession("mpcd_session_ticks_total", "Planned actions sent to the session (its tick rate).") { $0.ticksServed }
        perSession("mpcd_session_iterations_total", "Mirror-descent iterations of the session's plans.") { $0.metrics.iterations }
        perSession("mpcd_session_truncated_plans_total", "Plans whose iterations the tick's deadline cut short.") { $0.metrics.truncatedPlans }
        perSession("mpcd_session_fallbacks_total", "Replies carrying the prior's action because the planner failed.") { $0.fallbacks }
        perSession("mpcd_session_stale_replies_total", "Safe actions sent because the session's observations stopped.") { $0.staleReplies }
        perSession("mpcd_session_rejected_messages_total", "The session's messages refused with an error reply.") { $0.refused }
        out.histogram("mpcd_session_tick_latency_seconds", "The session's tick latency, as mpcd_tick_latency_seconds.", bounds: bounds, live.map {
            .init(labels: labels($0), cumulativeCounts: $0.metrics.cumulativeLatencyBuckets, count: $0.metrics.latencyCount,
                  sum: Double($0.metrics.latencySumMicroseconds) / 1e6)
        })
        return out.text
    }

    /// User and system CPU time of the whole process, s.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// Resident set size from /proc/self/statm (its second field, in pages).
    static func residentMemoryBytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Double(fields[1]) else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE)))
    }
}
