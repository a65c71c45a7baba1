import ArrowIPC
import Foundation

/// One tick of one session as a recording keeps it (docs/recording.md, field by field): what the
/// session saw, what it planned and sent, and what a replay needs to plan it again.
public struct TickRecord: Sendable {
    /// Wall-clock time of the reply, µs since the Unix epoch.
    public var time: Int64
    public var session: UInt64
    public var peer: String
    public var tick: UInt64
    public var sequence: UInt64
    /// The state as the client sent it, and its age when planning began (s).
    public var observation: [Float]
    public var observationAge: Double
    /// The state planned from: the observation, advanced through the model when it was stale.
    public var state: [Float]
    /// What the client was sent (after the guard), and what the planner proposed.
    public var action: [Float]
    public var plannedAction: [Float]
    /// The plan's mean sequence and its std, H x m each (NaN for a stale reply, which has no
    /// plan): the refined distribution a network distilled from recordings is fitted to.
    public var planMean: [Float]
    public var planStd: [Float]
    public var flags: UInt32
    /// WireProtocol.diagnosticNames, in order.
    public var diagnostics: [Double]
    /// What the planner was asked for: iterations, and steps to shift the warm start by.
    public var iterationsRequested: Int32
    public var shift: Int32
    /// The applied actions the plan measured its rate limits and action-change cost from (NaN: none).
    public var appliedLast: [Float]
    public var appliedBeforeLast: [Float]
    /// Plans this session's planner had made before this one (0: a new planner).
    public var planIndex: UInt64
    /// The task parameters the session had set, as JSON ("{}": the configuration's).
    public var parameters: String
}

extension TickRecord {
    /// The columns of a recording whose task has `n` state values, `m` actions and horizon `h`.
    public static func fields(stateDimension n: Int, actionDimension m: Int, horizon h: Int) -> [ArrowField] {
        [
            ArrowField("time", .timestamp), ArrowField("session", .uint64), ArrowField("peer", .utf8),
            ArrowField("tick", .uint64), ArrowField("sequence", .uint64),
            ArrowField("observation", .float32List(size: n)), ArrowField("observation_age", .float64),
            ArrowField("state", .float32List(size: n)), ArrowField("action", .float32List(size: m)),
            ArrowField("planned_action", .float32List(size: m)), ArrowField("plan_mean", .float32List(size: h * m)),
            ArrowField("plan_std", .float32List(size: h * m)), ArrowField("flags", .uint32),
        ] + WireProtocol.diagnosticNames.map { ArrowField($0, .float64) } + [
            ArrowField("iterations_requested", .int32), ArrowField("shift", .int32),
            ArrowField("applied_last", .float32List(size: m)), ArrowField("applied_before_last", .float32List(size: m)),
            ArrowField("plan_index", .uint64), ArrowField("parameters", .utf8),
        ]
    }

    /// `records` as columns in the order of `fields`.
    public static func columns(_ records: [TickRecord]) -> [ArrowColumn] {
        var columns: [ArrowColumn] = [
            .int64(records.map(\.time)), .uint64(records.map(\.session)), .utf8(records.map(\.peer)),
            .uint64(records.map(\.tick)), .uint64(records.map(\.sequence)),
            .float32(records.flatMap(\.observation)), .float64(records.map(\.observationAge)),
            .float32(records.flatMap(\.state)), .float32(records.flatMap(\.action)),
            .float32(records.flatMap(\.plannedAction)), .float32(records.flatMap(\.planMean)),
            .float32(records.flatMap(\.planStd)), .uint32(records.map(\.flags)),
        ]
        for i in WireProtocol.diagnosticNames.indices { columns.append(.float64(records.map { $0.diagnostics[i] })) }
        columns += [
            .int32(records.map(\.iterationsRequested)), .int32(records.map(\.shift)),
            .float32(records.flatMap(\.appliedLast)), .float32(records.flatMap(\.appliedBeforeLast)),
            .uint64(records.map(\.planIndex)), .utf8(records.map(\.parameters)),
        ]
        return columns
    }

    /// The rows of a recording read back (the replay's input).
    public static func rows(of reader: ArrowStreamReader, stateDimension n: Int, actionDimension m: Int, horizon h: Int) throws(ArrowError) -> [TickRecord] {
        let expected = fields(stateDimension: n, actionDimension: m, horizon: h)
        guard reader.fields == expected else {
            if reader.fields == expected.filter({ $0.name != "plan_std" }) {
                throw ArrowError("the recording has no plan_std column: an mpcd before that column recorded it; replay it with that mpcd")
            }
            throw ArrowError("the recording's columns are not those of a \(n)-state, \(m)-action, horizon-\(h) task")
        }
        var rows: [TickRecord] = []
        for (count, c) in reader.batches {
            func floats(_ i: Int) -> [Float] { if case let .float32(v) = c[i] { v } else { [] } }
            func doubles(_ i: Int) -> [Double] { if case let .float64(v) = c[i] { v } else { [] } }
            func unsigned(_ i: Int) -> [UInt64] { if case let .uint64(v) = c[i] { v } else { [] } }
            func signed(_ i: Int) -> [Int32] { if case let .int32(v) = c[i] { v } else { [] } }
            func strings(_ i: Int) -> [String] { if case let .utf8(v) = c[i] { v } else { [] } }
            guard case let .int64(time) = c[0], case let .uint32(flags) = c[12] else { continue }
            let d = 13, k = WireProtocol.diagnosticNames.count
            let (observation, state, action, planned, mean, std) = (floats(5), floats(7), floats(8), floats(9), floats(10), floats(11))
            let (age, session, peer, tick, sequence) = (doubles(6), unsigned(1), strings(2), unsigned(3), unsigned(4))
            let diagnostics = (0..<k).map { doubles(d + $0) }
            let (requested, shift, last, before) = (signed(d + k), signed(d + k + 1), floats(d + k + 2), floats(d + k + 3))
            let (index, parameters) = (unsigned(d + k + 4), strings(d + k + 5))
            for r in 0..<count {
                rows.append(TickRecord(
                    time: time[r], session: session[r], peer: peer[r], tick: tick[r], sequence: sequence[r],
                    observation: Array(observation[(r * n)..<((r + 1) * n)]), observationAge: age[r],
                    state: Array(state[(r * n)..<((r + 1) * n)]), action: Array(action[(r * m)..<((r + 1) * m)]),
                    plannedAction: Array(planned[(r * m)..<((r + 1) * m)]), planMean: Array(mean[(r * h * m)..<((r + 1) * h * m)]),
                    planStd: Array(std[(r * h * m)..<((r + 1) * h * m)]),
                    flags: flags[r], diagnostics: diagnostics.map { $0[r] }, iterationsRequested: requested[r], shift: shift[r],
                    appliedLast: Array(last[(r * m)..<((r + 1) * m)]), appliedBeforeLast: Array(before[(r * m)..<((r + 1) * m)]),
                    planIndex: index[r], parameters: parameters[r]))
            }
        }
        return rows
    }
}
