import ArrowIPC
import ConfigFiles
import Foundation
import Models
import Planners

/// `mpcd replay`: plans every recorded tick again with the recorded configuration (or another)
/// and the sessions' seeds, in the order they were planned, and reports the first tick whose plan
/// differs. The planner is seeded and its noise drawn per plan number, so where nothing changed
/// the replay is bit for bit the recording; a changed configuration or network shows where
/// behaviour departs.
public struct Replay {
    public struct Difference: Sendable {
        public var row: Int
        public var time: Int64
        public var session: UInt64
        public var peer: String
        public var tick: UInt64
        /// The largest difference between the recorded and the replayed plan (action, mean and std sequences).
        public var largest: Float
    }

    /// One recorded tick against its replay (the plot's points): session, tick, first action values.
    public struct Point: Sendable {
        public var session: UInt64
        public var tick: UInt64
        public var recorded: Float
        public var replayed: Float
    }

    public var configuration: DaemonConfiguration
    public var rows: [TickRecord] = []
    public var metadata: [String: String] = [:]
    /// Whether a file ended without its end marker (the daemon stopped uncleanly; its last batch may be missing).
    public var truncatedFiles: [String] = []
    /// What differs from the recording before a tick is planned (a network file changed since).
    public var warnings: [String] = []
    /// The most iterations a recorded row may ask for: the recorded configuration's (the daemon
    /// never plans more); a crafted row asking 10,000 of a 1-iteration planner ran for an hour.
    let iterationLimit: Int
    /// The most sessions live at once: the recorded `max_sessions`, within which the daemon's memory
    /// check held its planners (a crafted file interleaving sessions took 100 MB a session).
    let sessionLimit: Int

    /// Reads the recordings, in order (rotated files of one run: oldest first); they must share
    /// one configuration. `configuration` replaces the recorded one (to see where a change departs).
    public init(files: [String], configuration replacement: DaemonConfiguration? = nil, allowPlugin: Bool = false) throws {
        var recorded: DaemonConfiguration?
        var hash: String?
        var readers: [(String, ArrowStreamReader)] = []
        for file in files {
            let bytes = [UInt8](try FileReading.read(file, limit: Int.max / 2))
            let reader: ArrowStreamReader
            do { reader = try ArrowStreamReader(bytes) } catch { throw ReplayError("\(file): not an mpcd recording: \(error)") }
            guard let text = reader.metadata["configuration"], let source = reader.metadata["configuration_source"] else {
                throw ReplayError("\(file): not an mpcd recording (no configuration in its metadata)")
            }
            // one configuration and one prior: a policy load begins a file of the same configuration
            let identity = ["configuration_hash", "prior_file", "prior_version"].map { reader.metadata[$0] ?? "" }.joined(separator: "|")
            if let hash, identity != hash {
                throw ReplayError("\(file) was recorded under another configuration or prior than \(files[0]); replay the files of one configuration and prior together")
            }
            hash = identity
            if recorded == nil {
                metadata = reader.metadata
                if replacement == nil, !allowPlugin, (try? TOMLReader.parse(text))?["task"].flatMap({ if case let .table(t) = $0 { t["name"] } else { nil } }) == .string("plugin") {
                    throw ReplayError("the recording plans a compiled plug-in (a shared library the configuration names): give --allow-plugin to load it")
                }
                do { recorded = try DaemonConfiguration.parse(text, source: source, planningOnly: true) } catch {
                    throw ReplayError("the recorded configuration no longer loads: \(error)")
                }
            }
            if reader.truncated { truncatedFiles.append(file) }
            readers.append((file, reader))
        }
        guard var configuration = replacement ?? recorded else { throw ReplayError("no recording given") }
        // a network loaded at run time (mpcctl policy load) is the recording's prior
        if replacement == nil, let file = metadata["prior_file"], let prior = configuration.prior, file != prior.file, !file.hasPrefix("embedded:") {
            do { configuration.prior?.network = try AmortisedNetwork.load(path: file, for: configuration.task) } catch {
                throw ReplayError("the recording's prior \(file) no longer loads: \(error)")
            }
        }
        self.configuration = configuration
        iterationLimit = max(recorded?.planner.iterations ?? 0, configuration.planner.iterations)
        sessionLimit = recorded?.server.maxSessions ?? configuration.server.maxSessions
        if replacement == nil, let recordedVersion = metadata["prior_version"], let prior = configuration.prior,
           recordedVersion != String(prior.network.version) {
            warnings.append("the prior network is version \(prior.network.version) now, version \(recordedVersion) when recorded (its file changed): plans may differ from the start")
        }
        let n = configuration.task.dynamics.stateDimension, m = configuration.task.dynamics.actionDimension, h = configuration.planner.horizon
        for (file, reader) in readers {
            do { rows += try TickRecord.rows(of: reader, stateDimension: n, actionDimension: m, horizon: h) } catch {
                throw ReplayError("\(file): \(error) (the configuration replayed with plans another task or horizon)")
            }
        }
    }

    public struct Report: Sendable {
        public var replayed = 0
        public var identical = 0
        public var firstDifference: Difference?
        /// Sessions not replayed, and why (their planner began before the first file; their prior changed).
        public var notes: [String] = []
        public var points: [Point] = []
        /// Every row was replayed (no session skipped or cut short).
        public var complete: Bool { notes.isEmpty && replayed > 0 }
    }

    /// Plans every row again; `stopAtFirstDifference` ends at the first differing plan.
    public func run(stopAtFirstDifference: Bool = false, progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        var report = Report()
        let period = Double(metadata["reply_period_seconds"] ?? "") ?? Double(configuration.task.dynamics.dt)
        let safety = try configuration.actionSafety(period: period)
        struct Replayed {
            var planner: MirrorDescentPlanner
            var prior: NetworkPrior?
            var parameters = "{}"
            var configured: [[Float]]?
            /// The prior's version in the session's first row: a change after it is online learning.
            var version: Double
        }
        var sessions: [UInt64: Replayed] = [:]
        var excluded: Set<UInt64> = []
        // a session's planner goes once its last row is replayed
        var lastRow: [UInt64: Int] = [:]
        for (i, row) in rows.enumerated() { lastRow[row.session] = i }
        func exclude(_ row: TickRecord, _ why: String) {
            excluded.insert(row.session)
            sessions[row.session] = nil
            report.notes.append("session \(row.session) (\(row.peer)): \(why)")
        }
        for (i, row) in rows.enumerated() {
            progress?(i, rows.count)
            defer { if lastRow[row.session] == i { sessions[row.session] = nil } }
            if excluded.contains(row.session) { continue }
            // a new planner (a new session, or one a reload or policy load rebuilt): made afresh
            if row.planIndex == 0, sessions[row.session].map({ $0.planner.planCount > 0 }) ?? true {
                guard sessions[row.session] != nil || sessions.count < sessionLimit else {
                    throw ReplayError("row \(i) opens session \(row.session) while \(sessions.count) others are live, beyond the recorded max_sessions = \(sessionLimit): not a recording mpcd writes")
                }
                let (planner, prior) = try configuration.sessionPlanner(index: row.session, workers: nil)
                planner.actionPrior = prior
                sessions[row.session] = Replayed(planner: planner, prior: prior, version: row.diagnostics[13])
            }
            guard var session = sessions[row.session] else {
                exclude(row, "its planner had made \(row.planIndex) plans before the first row given (record on mid-session, or earlier files not given): not replayed")
                continue
            }
            let planner = session.planner
            guard row.planIndex == planner.planCount else {
                exclude(row, "rows are missing before tick \(row.tick) (dropped while recording, or a file not given): replayed up to there")
                continue
            }
            if row.parameters != session.parameters {
                try Self.apply(parameters: row.parameters, to: planner, configured: &session.configured)
                session.parameters = row.parameters
                sessions[row.session] = session
            }
            if row.flags & WireProtocol.ActionFlags.stale.rawValue != 0 {
                // a safe action, not a plan: the plan starts afresh afterwards, as in the daemon
                planner.reset()
                continue
            }
            let version = row.diagnostics[13]
            if session.version.isNaN {
                // the first rows were stale replies, which carry no version
                session.version = version
                sessions[row.session] = session
            } else if version != session.version {
                exclude(row, "the prior changed to network version \(version) at tick \(row.tick) (online learning): replayed up to there")
                continue
            }
            let ran = row.diagnostics[0]
            guard row.shift >= 0, (0...iterationLimit).contains(Int(row.iterationsRequested)), ran.isFinite, ran >= 0,
                  ran <= Double(row.iterationsRequested), row.state.count == planner.stateDimension else {
                throw ReplayError("row \(i) is not one mpcd writes (shift \(row.shift), iterations \(row.iterationsRequested) asked and \(ran) run)")
            }
            func given(_ values: [Float]) -> [Float]? { values.allSatisfy(\.isNaN) ? nil : values }
            let last = given(row.appliedLast)
            planner.setAppliedActions(last: last, beforeLast: given(row.appliedBeforeLast), firstStepLimit: safety.maxStep)
            let truncated = row.flags & WireProtocol.ActionFlags.truncated.rawValue != 0
            let plan = planner.plan(state: row.state, shift: Int(row.shift), iterations: Int(row.iterationsRequested),
                                    stopAfter: truncated ? Int(ran) : nil)
            if plan.failed { planner.reset() }
            report.replayed += 1
            // the plan, and the action the guard makes of it
            let sent = safety.filter(plan.action, previous: last).action
            let same = plan.action.map(\.bitPattern) == row.plannedAction.map(\.bitPattern)
                && plan.sequence.mean.map(\.bitPattern) == row.planMean.map(\.bitPattern)
                && plan.sequence.std.map(\.bitPattern) == row.planStd.map(\.bitPattern) && sent.map(\.bitPattern) == row.action.map(\.bitPattern)
            report.points.append(Point(session: row.session, tick: row.tick, recorded: row.plannedAction.first ?? .nan, replayed: plan.action.first ?? .nan))
            if same {
                report.identical += 1
            } else if report.firstDifference == nil {
                let gaps = zip(plan.action + plan.sequence.mean + plan.sequence.std + sent, row.plannedAction + row.planMean + row.planStd + row.action).map { abs($0 - $1) }
                report.firstDifference = Difference(row: i, time: row.time, session: row.session, peer: row.peer, tick: row.tick,
                                                    largest: gaps.max() ?? .nan)
                if stopAtFirstDifference { break }
            }
        }
        progress?(rows.count, rows.count)
        return report
    }

    /// The session's parameters as its client set them, under the daemon's sessions' own rule.
    static func apply(parameters json: String, to planner: MirrorDescentPlanner, configured: inout [[Float]]?) throws {
        guard let data = json.data(using: .utf8), let values = try? JSONDecoder().decode([String: [Double]].self, from: data) else {
            // the start of it only: a recording is a file anyone may have written
            let shown = json.count > 200 ? json.prefix(200) + "... (\(json.utf8.count) bytes)" : json
            throw ReplayError("a recorded parameters value is not JSON: \(shown)")
        }
        try planner.setParameters(values, configured: &configured)
    }
}

public struct ReplayError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
