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
        /// The largest difference between the recorded and the replayed plan (action and mean sequence).
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

    /// Reads the recordings, in order (rotated files of one run: oldest first); they must share
    /// one configuration. `configuration` replaces the recorded one (to see where a change departs).
    public init(files: [String], configuration replacement: DaemonConfiguration? = nil) throws {
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
            if let hash, reader.metadata["configuration_hash"] != hash {
                throw ReplayError("\(file) was recorded under another configuration than \(files[0]); replay the files of one configuration together")
            }
            hash = reader.metadata["configuration_hash"]
            if recorded == nil {
                metadata = reader.metadata
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
    }

    /// Plans every row again; `stopAtFirstDifference` ends at the first differing plan.
    public func run(stopAtFirstDifference: Bool = false, progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        var report = Report()
        let period = Double(metadata["reply_period_seconds"] ?? "") ?? Double(configuration.task.dynamics.dt)
        let safety = try configuration.actionSafety(period: period)
        var planners: [UInt64: (planner: MirrorDescentPlanner, prior: NetworkPrior?, parameters: String, configured: [[Float]]?)] = [:]
        var excluded: Set<UInt64> = []
        for (i, row) in rows.enumerated() {
            progress?(i, rows.count)
            if excluded.contains(row.session) { continue }
            if planners[row.session] == nil {
                guard row.planIndex == 0 else {
                    excluded.insert(row.session)
                    report.notes.append("session \(row.session) (\(row.peer)): its planner had made \(row.planIndex) plans before this recording began; replay the earlier files with it")
                    continue
                }
                let (planner, prior) = try configuration.sessionPlanner(index: row.session, workers: nil)
                planner.actionPrior = prior
                planners[row.session] = (planner, prior, "{}", nil)
            }
            guard var entry = planners[row.session] else { continue }
            let planner = entry.planner
            if row.parameters != entry.parameters {
                try Self.apply(parameters: row.parameters, to: planner, configured: &entry.configured)
                entry.parameters = row.parameters
                planners[row.session] = entry
            }
            if row.flags & WireProtocol.ActionFlags.stale.rawValue != 0 {
                // a safe action, not a plan: the plan starts afresh afterwards, as in the daemon
                planner.reset()
                continue
            }
            let version = row.diagnostics[13]
            if let prior = entry.prior, version.isFinite, Int(version) != prior.network.version {
                excluded.insert(row.session)
                report.notes.append("session \(row.session) (\(row.peer)): the prior changed to network version \(Int(version)) at tick \(row.tick) (online learning or a policy load): replayed up to there")
                continue
            }
            func given(_ values: [Float]) -> [Float]? { values.allSatisfy(\.isNaN) ? nil : values }
            let last = given(row.appliedLast)
            planner.setAppliedActions(last: last, beforeLast: given(row.appliedBeforeLast), firstStepLimit: safety.maxStep)
            let truncated = row.flags & WireProtocol.ActionFlags.truncated.rawValue != 0
            let plan = planner.plan(state: row.state, shift: Int(row.shift), iterations: Int(row.iterationsRequested),
                                    stopAfter: truncated ? Int(row.diagnostics[0]) : nil)
            if plan.failed { planner.reset() }
            report.replayed += 1
            // the plan, and the action the guard makes of it
            let sent = safety.filter(plan.action, previous: last).action
            let same = plan.action.map(\.bitPattern) == row.plannedAction.map(\.bitPattern)
                && plan.sequence.mean.map(\.bitPattern) == row.planMean.map(\.bitPattern) && sent.map(\.bitPattern) == row.action.map(\.bitPattern)
            report.points.append(Point(session: row.session, tick: row.tick, recorded: row.plannedAction.first ?? .nan, replayed: plan.action.first ?? .nan))
            if same {
                report.identical += 1
            } else if report.firstDifference == nil {
                let gaps = zip(plan.action + plan.sequence.mean + sent, row.plannedAction + row.planMean + row.action).map { abs($0 - $1) }
                report.firstDifference = Difference(row: i, time: row.time, session: row.session, peer: row.peer, tick: row.tick,
                                                    largest: gaps.max() ?? .nan)
                if stopAtFirstDifference { break }
            }
        }
        progress?(rows.count, rows.count)
        return report
    }

    /// The session's parameters as its client set them (the same rule as the daemon's session:
    /// while they differ from the configuration's, the prior only proposes).
    static func apply(parameters json: String, to planner: MirrorDescentPlanner, configured: inout [[Float]]?) throws {
        guard let data = json.data(using: .utf8), let values = try? JSONDecoder().decode([String: [Double]].self, from: data) else {
            throw ReplayError("a recorded parameters value is not JSON: \(json)")
        }
        let before = planner.task.parameters.map(\.value)
        if configured == nil { configured = before }
        try planner.setParameters(values)
        planner.priorFitsTask = planner.task.parameters.map(\.value) == configured
    }
}

public struct ReplayError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
