import CSystemShims
import ControlProtocol
import Dispatch
import Foundation
import Logging
import Models
import Planners

/// A reload or a policy load: the files are read and checked on a background thread (a big or slow
/// file never holds up a tick), then applied on the serving thread between ticks, and the requester
/// gets its reply only then.
final class PendingReconfiguration: @unchecked Sendable {
    enum Kind: Equatable {
        case reload
        case policyLoad(path: String)
    }

    enum Prepared {
        case configuration(DaemonConfiguration)
        case network(AmortisedNetwork, path: String)
    }

    let kind: Kind
    /// The control-socket envelopes waiting for the reply (none for SIGHUP).
    let requester: [[UInt8]]?
    let startedAt = monotonicNanoseconds()
    /// Whether the log has said that this one is slow (the serving thread's alone).
    var reportedSlow = false
    private let lock = NSLock()
    private var outcome: Result<Prepared, ConfigurationFailure>?

    struct ConfigurationFailure: Error {
        let reason: String
    }

    init(kind: Kind, requester: [[UInt8]]?) {
        self.kind = kind
        self.requester = requester
    }

    /// The prepared outcome once the background work is done.
    var result: Result<Prepared, ConfigurationFailure>? {
        lock.lock()
        defer { lock.unlock() }
        return outcome
    }

    func finish(_ result: Result<Prepared, ConfigurationFailure>) {
        lock.lock()
        outcome = result
        lock.unlock()
    }

    /// Reads and checks what `kind` names, off the serving thread.
    static func prepare(_ kind: Kind, source: String, task: ControlTask, horizon: Int) -> Result<Prepared, ConfigurationFailure> {
        switch kind {
        case .reload:
            do {
                let fresh = source == DaemonConfiguration.embeddedSource
                    ? try DaemonConfiguration.parse(DaemonConfiguration.embeddedDefault, source: DaemonConfiguration.embeddedSource)
                    : try DaemonConfiguration.load(path: source)
                return .success(.configuration(fresh))
            } catch {
                return .failure(.init(reason: "\(error)"))
            }
        case let .policyLoad(path):
            do throws(AmortisedNetwork.LoadError) {
                let network = try AmortisedNetwork.load(path: path, for: task)
                do {
                    _ = try NetworkPrior(network: network, task: task, horizon: horizon)
                } catch {
                    return .failure(.init(reason: "\(path): \(error.reason)"))
                }
                return .success(.network(network, path: path))
            } catch {
                return .failure(.init(reason: error.description))
            }
        }
    }
}

extension Server {
    static let reconfigurationQueue = DispatchQueue(label: "mpcd.reconfiguration", qos: .utility)

    /// Starts a reload or policy load off the serving thread; nil: the reply comes when it is
    /// applied. One at a time: another request meanwhile is refused.
    @discardableResult
    func startReconfiguration(_ kind: PendingReconfiguration.Kind, requester: [[UInt8]]?) -> ControlReply? {
        if let pendingReconfiguration {
            let what = pendingReconfiguration.kind == .reload ? "a reload" : "a policy load"
            let error = "\(what) is in progress (for \(Double(monotonicNanoseconds() - pendingReconfiguration.startedAt) * 1e-9) s); try again when it has finished (one that never does, a plug-in whose setup hangs say, needs a restart of mpcd)"
            if requester == nil { logger.warning("reload on SIGHUP refused", metadata: ["error": "\(error)"]) }
            return .failure(error)
        }
        let pending = PendingReconfiguration(kind: kind, requester: requester)
        pendingReconfiguration = pending
        let source = configuration.source, task = configuration.task, horizon = configuration.planner.horizon
        Self.reconfigurationQueue.async {
            _ = mpcd_lower_thread_priority()
            pending.finish(PendingReconfiguration.prepare(kind, source: source, task: task, horizon: horizon))
        }
        return nil
    }

    /// A reload or policy load still preparing after this long is reported in the log, once.
    static let slowReconfigurationSeconds = 10.0

    /// Applies a prepared reload or policy load, and answers whoever asked.
    func finishReconfiguration() {
        guard let pending = pendingReconfiguration else { return }
        guard let result = pending.result else {
            // one stuck in a plug-in's setup or a model slow to load refuses every later one: say
            // so rather than leave the operator with refusals alone
            let seconds = Double(monotonicNanoseconds() - pending.startedAt) * 1e-9
            if !pending.reportedSlow, seconds >= Self.slowReconfigurationSeconds {
                pending.reportedSlow = true
                logger.warning(pending.kind == .reload ? "a reload is still preparing; later reloads are refused until it finishes" : "a policy load is still preparing; later reloads are refused until it finishes",
                               metadata: ["seconds": "\(Int(seconds))", "config": "\(configuration.source)",
                                          "hint": "a plug-in's setup or a model may hang; the previous configuration serves on; if it never finishes, restart mpcd"])
            }
            return
        }
        pendingReconfiguration = nil
        let reply: ControlReply
        switch result {
        case let .failure(failure):
            reply = .failure(failure.reason)
            logger.error(pending.kind == .reload ? "reload refused; serving the previous configuration" : "policy load refused; the prior is unchanged",
                         metadata: ["error": "\(failure.reason)"])
        case let .success(.configuration(fresh)):
            reply = applyReload(fresh)
        case let .success(.network(network, path)):
            reply = applyPolicy(network, path: path)
        }
        if let requester = pending.requester { self.reply(to: requester, reply) }
    }

    /// Applies a configuration read again. The command line's overrides still hold; endpoint and
    /// key changes need a restart and are reported as warnings; a changed task ends the sessions
    /// of the old one; a key taken off the allow-list ends its client's sessions and connections.
    func applyReload(_ fresh: DaemonConfiguration) -> ControlReply {
        if let running = configuration.curve, !running.authorizedKeys.isEmpty, let keys = fresh.curve?.authorizedKeys, keys.isEmpty {
            // a file caught mid-rewrite reads empty: one reload would cut every robot at once
            let reason = "security.authorized_keys_file \(fresh.curve?.authorizedKeysFile ?? "") lists no key: this reload would refuse every client and end their sessions; to refuse them all, stop mpcd"
            logger.error("reload refused; serving the previous configuration", metadata: ["error": "\(reason)"])
            return .failure(reason)
        }
        var warnings: [String] = []
        var next = overrides.applied(to: fresh)
        if next.server.endpoints != configuration.server.endpoints {
            warnings.append("server.endpoints changed: restart mpcd to bind the new endpoints")
            next.server.endpoints = configuration.server.endpoints
        }
        if next.controlEndpoint != configuration.controlEndpoint {
            warnings.append("control.endpoint changed: restart mpcd to move the control socket")
            next.controlEndpoint = configuration.controlEndpoint
        }
        if next.metricsListen != configuration.metricsListen {
            warnings.append("metrics.listen changed: restart mpcd to move the metrics endpoint")
            next.metricsListen = configuration.metricsListen
        }
        if next.server.cpuAffinity != configuration.server.cpuAffinity { warnings.append("server.cpu_affinity changed: restart mpcd to apply it") }
        if next.server.maxConnections != configuration.server.maxConnections {
            warnings.append("server.max_connections changed: restart mpcd to apply it")
            next.server.maxConnections = configuration.server.maxConnections
        }
        if next.curve?.secretKey != configuration.curve?.secretKey || (next.curve == nil) != (configuration.curve == nil) {
            warnings.append("security keys changed: restart mpcd to apply them (the allow-list is reloaded)")
            next.curve = configuration.curve.map { var c = $0; c.authorizedKeys = fresh.curve?.authorizedKeys ?? $0.authorizedKeys; return c }
        }
        if next.server.maxMessageBytes != configuration.server.maxMessageBytes {
            // libzmq's per-frame limit applies to connections made from now on; the daemon's own at once
            try? socket.setOption(ZMQOption.maxMessageSize, Int64(next.server.maxMessageBytes))
            connectionGuard?.limits.maxHeldBytes = ServerConfiguration.heldBytes(maxMessageBytes: next.server.maxMessageBytes)
        }
        let before = sessions.count
        let taskChanged = !Self.sameShape(configuration.task, next.task)
        if let keys = next.curve?.authorizedKeys {
            zap?.update(authorizedKeys: keys)
            let revoked = sessions.values.filter { $0.userID.map { !keys.contains($0) } ?? false }
            counters.sessionsEndedByReload += UInt64(revoked.count)
            endSessions(where: { session in revoked.contains { $0 === session } }, reason: "its key is no longer in authorized_keys")
            let cut = connectionGuard?.cut(where: { $0.userID.map { !keys.contains($0) } ?? false }, reason: .keyRevoked,
                                           detail: "its key is no longer in authorized_keys") ?? 0
            if cut > 0 || !revoked.isEmpty { warnings.append("\(cut) connection(s) and \(revoked.count) session(s) of keys no longer in authorized_keys were ended") }
        }
        if taskChanged {
            counters.sessionsEndedByReload += UInt64(sessions.count)
            warnings.append("the task changed from \(configuration.task.name) to \(next.task.name): \(sessions.count) of \(before) session(s) ended; clients open new ones with their next observation (a client that sends its hello's task_fingerprint is refused with task_changed until it says hello again)")
        }
        let wasRecording = recorder != nil
        apply(next)
        amortiser?.start()
        for session in sessions.values { rebuildPlanner(of: session) }
        restartRecording(wasRecording: wasRecording)
        var reloaded: Logger.Metadata = ["config": "\(configuration.source)", "warnings": "\(warnings)"]
        if let library = configuration.mujocoLibrary { reloaded["mujoco"] = "\(library)" }
        logger.info("configuration reloaded", metadata: reloaded)
        var reply = ControlReply(ok: true)
        reply.config = configuration.source
        reply.warnings = warnings
        return reply
    }

    /// Installs a checked weights file as every session's prior (`mpcctl policy load`).
    func applyPolicy(_ network: AmortisedNetwork, path: String) -> ControlReply {
        var prior = configuration.prior ?? PriorConfiguration(file: path, network: network)
        prior.file = path
        prior.network = network
        var next = configuration
        next.prior = prior
        // a network loaded on purpose: online learning goes on from it, not from what it had
        apply(next, restartingAmortiser: true)
        amortiser?.start()
        for session in sessions.values { rebuildPlanner(of: session) }
        restartRecording(wasRecording: recorder != nil)
        logger.info("prior network loaded", metadata: ["file": "\(path)", "kind": "\(network.kind.rawValue)", "version": "\(network.version)"])
        var reply = ControlReply(ok: true)
        reply.file = path
        reply.kind = network.kind.rawValue
        reply.version = network.version
        return reply
    }
}
