import ControlProtocol
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

    func sessionList(now: UInt64) -> [SessionStatus] {
        sessions.values.sorted { $0.index < $1.index }.map { s in
            var entry = SessionStatus(peer: s.name, ticksServed: s.ticksServed, refused: s.refused, fallbacks: s.fallbacks,
                                      ageSeconds: Double(now - s.createdAt) * 1e-9, iterations: s.lastIterations,
                                      iterationsTotal: s.metrics.iterations, truncatedPlans: s.metrics.truncatedPlans, staleReplies: s.staleReplies,
                                      latencyCount: s.metrics.latencyCount, latencySumUs: s.metrics.latencySumMicroseconds)
            if let observation = s.observation { entry.lastObservationAgeSeconds = Double(now - observation.receivedAt) * 1e-9 }
            if s.lastGap.isFinite { entry.amortisationGap = Double(s.lastGap) }
            entry.iterationTarget = s.iterationTarget
            if s.lastRelativeGain.isFinite { entry.relativeGain = s.lastRelativeGain }
            if s.lastValueTerm.isFinite { entry.valueTerm = Double(s.lastValueTerm) }
            let parameters = s.planner.task.parameters
            if !parameters.isEmpty {
                entry.parameters = Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.value.map(Double.init)) })
                // the names the client set; the rest are the configuration's
                entry.parametersSet = s.parameterValues.keys.sorted()
                // a network prior trained under other values only proposes (κ = 0)
                if s.prior != nil { entry.priorFitsParameters = s.planner.priorFitsTask }
            }
            return entry
        }
    }

    func status(now: UInt64) -> DaemonStatus {
        let minute = latency.lastMinute(now: now)
        let uptime = Double(now - startedAt) * 1e-9
        let covered = min(uptime, Double(LatencyStatistics.windowCount) * Double(LatencyStatistics.windowNanoseconds) * 1e-9)
        let p = configuration.planner
        var refused: [String: UInt64] = [:]
        for code in WireProtocol.ErrorCode.allCases { refused[code.name] = counters.refused[code, default: 0] }
        var prior: DaemonStatus.Prior?
        if let configured = configuration.prior {
            let gaps = sessions.values.map { Double($0.lastGap) }.filter { $0.isFinite }
            prior = .init(file: configured.file, kind: configured.network.kind.rawValue, networkVersion: networkVersion, adaptive: configured.adaptive,
                          online: configured.online, amortisationGap: gaps.isEmpty ? nil : gaps.reduce(0, +) / Double(gaps.count))
        }
        var value: DaemonStatus.Value?
        if let configured = configuration.value {
            // the cost the sessions' plans expect beyond their horizon, w V(x_H), averaged
            let terms = sessions.values.map { Double($0.lastValueTerm) }.filter { $0.isFinite }
            value = .init(file: configured.file, weight: Double(configured.weight), networkVersion: configured.network.version,
                          valueTerm: terms.isEmpty ? nil : terms.reduce(0, +) / Double(terms.count))
        }
        var status = DaemonStatus(
            version: mpcdVersion, pid: Int(getpid()), uptimeSeconds: uptime, config: configuration.source, task: configuration.task.name,
            mode: configuration.server.mode.rawValue,
            planner: .init(likelihood: p.likelihood, samples: p.samples, horizon: p.horizon, iterations: p.iterations),
            targetRateHz: configuration.rateHz,
            achievedRateHz: covered > 0 ? Double(minute.totalCount) / covered / Double(max(1, sessions.count)) : 0,
            tickLatencyUs: .init(sinceStart: latency.sinceStart.summary, last60s: minute.summary),
            ticks: counters.ticks, replies: counters.replies, droppedReplies: counters.dropped, missedTicks: counters.overruns,
            fallbacks: counters.fallbacks + sessions.values.reduce(0) { $0 + $1.fallbacks },
            rejectedMessages: refused.values.reduce(0, +), rejectedByCode: refused,
            staleReplies: counters.staleReplies + sessions.values.reduce(0) { $0 + $1.staleReplies },
            sessions: .init(count: sessions.count, opened: counters.sessionsOpened, expired: counters.sessionsExpired, evicted: counters.sessionsEvicted,
                            peerGone: counters.sessionsPeerGone, endedByReload: counters.sessionsEndedByReload, max: configuration.server.maxSessions,
                            bytesEach: configuration.bytesPerSession, list: sessionList(now: now)),
            connections: .init(count: connectionGuard?.count ?? 0, accepted: connectionGuard?.accepted ?? 0,
                               max: connectionGuard?.limits.maxConnections ?? 0,
                               ended: Dictionary(uniqueKeysWithValues: ConnectionGuard.Reason.allCases.map { ($0.rawValue, connectionGuard?.ended[$0] ?? 0) }),
                               oversizedMessages: counters.oversizedMessages),
            reconfiguring: pendingReconfiguration.map { $0.kind == .reload ? "reload" : "policy_load" },
            iterationsPerTick: allPlans.latencyCount > 0 ? Double(allPlans.iterations) / Double(allPlans.latencyCount) : 0,
            endpoints: boundEndpoints, control: controlEndpoint, metrics: metricsServer.map { "http://\($0.address)/metrics" },
            curve: configuration.curve.map { .init(publicKey: $0.publicKey, authorizedKeys: $0.authorizedKeys.count, refusedHandshakes: zap?.refused ?? 0) },
            prior: prior, value: value)
        status.recording = recordingStatus
        return status
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
        out.metric("mpcd_plans_total", "counter", "Plans sent as replies.", Double(allPlans.latencyCount))
        out.metric("mpcd_truncated_plans_total", "counter", "Plans whose iterations the tick's deadline cut short.",
                   Double(counters.truncatedPlans + live.reduce(0) { $0 + $1.metrics.truncatedPlans }))
        out.metric("mpcd_iterations_total", "counter", "Mirror-descent iterations of the plans sent (per plan: a rate of this over a rate of mpcd_plans_total).",
                   Double(allPlans.iterations))
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
        if let recording = recordingStatus {
            out.metric("mpcd_recording", "gauge", "1 while ticks are being recorded.", recording.enabled ? 1 : 0)
            out.metric("mpcd_recorded_ticks_total", "counter", "Ticks written to recordings.", Double(recording.written))
            out.metric("mpcd_recording_dropped_ticks_total", "counter", "Ticks not recorded: the writer's queue was full or the disk refused.",
                       Double(recording.dropped))
            out.metric("mpcd_recording_bytes_total", "counter", "Bytes written to recordings.", Double(recording.bytes))
        }
        if configuration.prior != nil {
            out.metric("mpcd_network_version", "gauge", "Version of the prior network's weights.", Double(networkVersion))
        }
        let bounds = SessionMetrics.latencyBoundsMicroseconds.map { Double($0) / 1e6 }
        out.histogram("mpcd_tick_latency_seconds", "From the tick's grid time (realtime) or the observation's arrival (lockstep) to the reply sent.",
                      bounds: bounds, [.init(labels: [], cumulativeCounts: allPlans.cumulativeLatencyBuckets, count: allPlans.latencyCount,
                                             sum: Double(allPlans.latencySumMicroseconds) / 1e6)])
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
