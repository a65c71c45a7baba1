import CZeroMQ
import Foundation
import Histogram
import Models
import Planners

/// The operator's side of the daemon: the local control socket mpcctl talks to (JSON requests
/// and replies), status and Prometheus metrics, reload and policy load, and systemd's notices.
extension Server {
    // MARK: - The control socket

    /// Binds the control socket. For an ipc socket: refuses to start when another daemon answers
    /// on it (libzmq would silently take the path over), removes a stale file, and makes the
    /// socket file mode 0660.
    func bindControl() throws {
        let endpoint = configuration.controlEndpoint
        if endpoint.hasPrefix("ipc://") {
            let path = String(endpoint.dropFirst(6))
            let folder = (path as NSString).deletingLastPathComponent
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            if FileManager.default.fileExists(atPath: path) {
                if Self.somebodyAnswers(on: endpoint, context: context) { throw ServerError.alreadyRunning(endpoint: endpoint) }
                try? FileManager.default.removeItem(atPath: path)
            }
            controlSocketPath = path
        } else {
            logger.warning("the control socket is on TCP, as configured: anyone who reaches it can reconfigure the daemon", metadata: ["endpoint": "\(endpoint)"])
        }
        let socket = try ZMQSocket(context, type: ZMQ_ROUTER)
        do {
            try socket.bind(endpoint)
        } catch {
            throw ServerError.bind(endpoint: endpoint, reason: String(cString: zmq_strerror(error.code)))
        }
        if let controlSocketPath { chmod(controlSocketPath, 0o660) }
        control = socket
        controlEndpoint = endpoint
    }

    func closeControl() {
        control = nil
        if let controlSocketPath { try? FileManager.default.removeItem(atPath: controlSocketPath) }
    }

    static func somebodyAnswers(on endpoint: String, context: ZMQContext) -> Bool {
        guard let probe = try? ZMQSocket(context, type: ZMQ_REQ), (try? probe.connect(endpoint)) != nil,
              (try? probe.send([Array(#"{"command":"ping"}"#.utf8)])) == true else { return false }
        return (try? probe.waitReadable(milliseconds: 300)) == true
    }

    /// Between ticks: answers control requests, reloads on SIGHUP, and tells systemd how it is.
    func serviceControlPlane(now: UInt64) {
        zap?.serve()
        while let control, let frames = try? control.receive() {
            guard frames.count >= 2 else { continue }
            let isRequest = frames[1].isEmpty
            let envelope = isRequest ? [frames[0], []] : [frames[0]]
            let reply = answer(frames.last!)
            let data = (try? JSONSerialization.data(withJSONObject: reply, options: [.sortedKeys])) ?? Data(#"{"ok":false}"#.utf8)
            _ = try? control.send(envelope + [Array(data)])
        }
        if reloadRequested.exchange(false, ordering: .relaxed) {
            let outcome = reload()
            if let error = outcome["error"] { logger.error("reload refused; serving the previous configuration", metadata: ["error": "\(error)"]) }
        }
        if let interval = notifier.watchdogInterval, now - lastWatchdog >= interval / 2,
           configuration.server.mode == .lockstep || lastTickOnTime {
            // only while ticks are on time: a hung or overrunning loop lets systemd restart it
            lastWatchdog = now
            notifier.send("WATCHDOG=1")
        }
        if notifier.isActive, now - lastStatusNotice >= 5_000_000_000 {
            lastStatusNotice = now
            notifier.send("STATUS=\(statusLine())")
        }
    }

    func answer(_ request: [UInt8]) -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(request)) as? [String: Any],
              let command = object["command"] as? String else {
            return ["ok": false, "error": "a request is a JSON object with a \"command\""]
        }
        switch command {
        case "ping": return ["ok": true, "pid": Int(getpid())]
        case "status": return ["ok": true, "status": status(now: monotonicNanoseconds())]
        case "sessions": return ["ok": true, "sessions": sessionList(now: monotonicNanoseconds())]
        case "metrics": return ["ok": true, "text": metrics(now: monotonicNanoseconds())]
        case "reload": return reload()
        case "policy_load":
            guard let path = object["path"] as? String else { return ["ok": false, "error": "policy_load needs a \"path\""] }
            return loadPolicy(path)
        default:
            return ["ok": false, "error": "unknown command \"\(command)\"; known: ping, status, sessions, metrics, reload, policy_load"]
        }
    }

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
            if s.lastValueTerm.isFinite { entry["value_term"] = Double(s.lastValueTerm) }
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
                         "list": sessionList(now: now)] as [String: Any],
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

    // MARK: - Reload and policy load

    /// Reads the configuration file again; applies it only when it is valid. Endpoint changes
    /// need a restart (sockets stay as they are) and are reported as warnings.
    func reload() -> [String: Any] {
        let fresh: DaemonConfiguration
        do {
            fresh = configuration.source == DaemonConfiguration.embeddedSource
                ? try DaemonConfiguration.parse(DaemonConfiguration.embeddedDefault, source: DaemonConfiguration.embeddedSource)
                : try DaemonConfiguration.load(path: configuration.source)
        } catch {
            return ["ok": false, "error": "\(error)"]
        }
        var warnings: [String] = []
        var next = fresh
        if fresh.server.endpoints != configuration.server.endpoints {
            warnings.append("server.endpoints changed: restart mpcd to bind the new endpoints")
            next.server.endpoints = configuration.server.endpoints
        }
        if fresh.controlEndpoint != configuration.controlEndpoint {
            warnings.append("control.endpoint changed: restart mpcd to move the control socket")
            next.controlEndpoint = configuration.controlEndpoint
        }
        if fresh.server.cpuAffinity != configuration.server.cpuAffinity { warnings.append("server.cpu_affinity changed: restart mpcd to apply it") }
        if fresh.curve?.secretKey != configuration.curve?.secretKey || (fresh.curve == nil) != (configuration.curve == nil) {
            warnings.append("security keys changed: restart mpcd to apply them (the allow-list is reloaded)")
            next.curve = configuration.curve.map { var c = $0; c.authorizedKeys = fresh.curve?.authorizedKeys ?? $0.authorizedKeys; return c }
        }
        if let keys = next.curve?.authorizedKeys { zap?.update(authorizedKeys: keys) }
        apply(next)
        amortiser?.start()
        for session in sessions.values { rebuildPlanner(of: session) }
        logger.info("configuration reloaded", metadata: ["config": "\(configuration.source)", "warnings": "\(warnings)"])
        return ["ok": true, "config": configuration.source, "warnings": warnings]
    }

    /// Installs a weights file as every session's prior (`mpcctl policy load`).
    func loadPolicy(_ path: String) -> [String: Any] {
        let network: AmortisedNetwork
        do {
            network = try AmortisedNetwork.load(path: path, for: configuration.task)
            _ = try NetworkPrior(network: network, task: configuration.task, horizon: configuration.planner.horizon)
        } catch let error as AmortisedNetwork.LoadError {
            return ["ok": false, "error": error.description]
        } catch let error as ConfigurationError {
            return ["ok": false, "error": "\(path): \(error.reason)"]
        } catch {
            return ["ok": false, "error": "\(path): \(error)"]
        }
        var prior = configuration.prior ?? PriorConfiguration(file: path, network: network)
        prior.file = path
        prior.network = network
        var next = configuration
        next.prior = prior
        apply(next)
        amortiser?.start()
        for session in sessions.values { rebuildPlanner(of: session) }
        logger.info("prior network loaded", metadata: ["file": "\(path)", "kind": "\(network.kind.rawValue)", "version": "\(network.version)"])
        return ["ok": true, "file": path, "kind": network.kind.rawValue, "version": network.version]
    }
}
