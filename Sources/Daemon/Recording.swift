import ControlProtocol
import Foundation
import Models
import Planners

/// Tick recording's place in the daemon (docs/recording.md): started from the configuration or
/// by `mpcctl record on`, restarted into a new file whenever the configuration or the prior
/// changes (a file holds one configuration, so it can be replayed), handed every tick's records
/// once the replies are out.
extension Server {
    /// Starts recording into a new file (the running recorder, if any, ends its file first, on the
    /// new writer's thread); a folder that cannot be made is reported, never fatal.
    @discardableResult
    func startRecording() -> String? {
        guard let settings = configuration.recording else { return "the configuration has no [recording] table (its directory)" }
        let old = recorder
        do {
            let n = configuration.task.dynamics.stateDimension, m = configuration.task.dynamics.actionDimension, h = configuration.planner.horizon
            recorder = try TickRecorder(settings: settings, fields: TickRecord.fields(stateDimension: n, actionDimension: m, horizon: h),
                                        shape: (n, m, h), metadata: recordingMetadata(), counters: recordingCounters,
                                        predecessor: old, logger: logger)
            recordingProblem = nil
        } catch {
            recorder = nil
            recordingProblem = "cannot record in \(settings.directory): \(error.localizedDescription)"
            logger.error("recording did not start", metadata: ["directory": "\(settings.directory)", "reason": "\(error.localizedDescription)"])
            if let old { retire(old) }
        }
        for session in sessions.values { session.recording = recorder != nil }
        return recordingProblem
    }

    func stopRecording() {
        guard let old = recorder else { return }
        recorder = nil
        for session in sessions.values {
            session.recording = false
            session.record = nil
        }
        retire(old)
    }

    /// Ends a recorder's file on a thread of its own: the serving thread never waits for a disk,
    /// and a hung one holds up nothing else (the daemon's stop waits for it a while, then goes).
    func retire(_ old: TickRecorder) {
        retiredRecorders.removeAll { $0.stop(timeout: 0) }
        retiredRecorders.append(old)
        Thread.detachNewThread { old.stop() }
    }

    /// After a reload or a policy load: a new file for the new configuration when recording, or
    /// when the configuration read says `enabled` and the operator has not switched recording off
    /// (a folder that failed before is tried again).
    func restartRecording(wasRecording: Bool) {
        guard wasRecording || (configuration.recording?.enabled == true && !recordingSwitchedOff) else { return }
        if configuration.recording == nil { stopRecording() } else { startRecording() }
    }

    /// Hands the records the sessions left to the recorder.
    func handOffRecords(_ sessions: [Session]) {
        guard let recorder else { return }
        var records: [TickRecord] = []
        for session in sessions {
            if let record = session.record { records.append(record) }
            session.record = nil
        }
        recorder.record(records)
    }

    /// `mpcctl record on|off`.
    func answerRecord(enable: Bool) -> ControlReply {
        recordingSwitchedOff = !enable
        if enable {
            if recorder == nil, let problem = startRecording() { return .failure(problem) }
        } else {
            stopRecording()
        }
        var reply = ControlReply(ok: true)
        reply.status = status(now: monotonicNanoseconds())
        return reply
    }

    var recordingStatus: DaemonStatus.Recording? {
        guard let settings = configuration.recording ?? recorder?.settings else { return nil }
        let c = recordingCounters, path = recorder?.currentPath ?? ""
        return .init(enabled: recorder != nil, directory: settings.directory, file: path.isEmpty ? nil : path,
                     written: c.written.load(ordering: .relaxed), dropped: c.dropped.load(ordering: .relaxed),
                     bytes: c.bytes.load(ordering: .relaxed), files: c.files.load(ordering: .relaxed), problem: recordingProblem ?? recorder?.problem)
    }

    /// What a file needs to be replayed and understood without the daemon: the configuration's
    /// text and where it was, the network it ran, the task's shape and the reply period.
    func recordingMetadata() -> [(key: String, value: String)] {
        let task = configuration.task
        let period = configuration.server.mode == .realtime ? 1 / configuration.rateHz : Double(task.dynamics.dt)
        var pairs: [(String, String)] = [
            ("mpcd_version", mpcdVersion), ("configuration", configuration.text), ("configuration_source", configuration.source == DaemonConfiguration.embeddedSource ? configuration.source : DaemonConfiguration.absolutePath(configuration.source)),
            ("configuration_hash", String(format: "%016llx", fnv1a(configuration.text.utf8))),
            ("task", task.name), ("mode", configuration.server.mode.rawValue), ("rate_hz", "\(configuration.rateHz)"),
            ("reply_period_seconds", "\(period)"), ("state_dimension", "\(task.dynamics.stateDimension)"),
            ("action_dimension", "\(task.dynamics.actionDimension)"), ("horizon", "\(configuration.planner.horizon)"),
            ("seed", "\(configuration.planner.seed)"), ("state_names", task.dynamics.stateNames.joined(separator: ",")),
            ("action_names", task.dynamics.actionNames.joined(separator: ",")),
            ("action_low", task.dynamics.actionLowerBounds.map { "\($0)" }.joined(separator: ",")),
            ("action_high", task.dynamics.actionUpperBounds.map { "\($0)" }.joined(separator: ",")),
            ("feature_names", task.dynamics.featureNames.joined(separator: ",")),
        ]
        if let prior = configuration.prior {
            pairs += [("prior_file", prior.file), ("prior_version", "\(prior.network.version)"), ("prior_kind", prior.network.kind.rawValue)]
        }
        if let value = configuration.value { pairs += [("value_file", value.file)] }
        return pairs
    }
}
