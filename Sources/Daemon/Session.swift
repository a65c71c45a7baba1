import Foundation
import Models
import Planners

/// The newest observation of a session, as the daemon received it.
struct ReceivedObservation {
    var state: [Float]
    var sequence: UInt64
    /// When the state was measured, monotonic ns (its arrival, unless timestamps are trusted).
    var measuredAt: UInt64
    /// When it arrived, monotonic ns.
    var receivedAt: UInt64
}

/// One client identity: its own warm-started planner, random stream and statistics.
final class Session: @unchecked Sendable {
    let identity: [UInt8]
    /// The frames replies start with: the identity, and the empty delimiter for REQ clients.
    var envelope: [[UInt8]]
    private(set) var planner: MirrorDescentPlanner
    let index: UInt64
    var observation: ReceivedObservation?
    /// Set when an observation arrived that no reply has answered yet (lockstep plans these).
    var unanswered = false
    var lastSeen: UInt64
    let createdAt: UInt64
    /// When the last observation arrived (its creation before any): who gives way when full.
    var lastObservationAt: UInt64 { observation?.receivedAt ?? createdAt }
    /// The client's CURVE key, with CURVE.
    var userID: String?
    /// The connection its last message came by (descriptor and socket inode; nil where libzmq
    /// does not say).
    private(set) var connection: ConnectionGuard.Identity?
    /// When that connection closed, while no message has come since (by a new one: a client's
    /// ZeroMQ socket reconnects by itself, under the same identity).
    private(set) var departedAt: UInt64?

    /// A message came by `connection`: the session is live again if it had departed.
    func arrived(by connection: ConnectionGuard.Identity?) {
        if let connection { self.connection = connection }
        departedAt = nil
    }

    /// Its connection closed at `now`.
    func departed(at now: UInt64) {
        if departedAt == nil { departedAt = now }
    }
    var ticksServed: UInt64 = 0
    var refused: UInt64 = 0
    /// The reply built by the last plan, waiting for the socket thread to send it.
    var reply: [[UInt8]]?
    /// Actions sent, newest last, to advance stale observations through the model.
    private var sent: [(time: UInt64, action: [Float])] = []
    /// Time since the last plan not yet taken off the warm start, ns (realtime ticks may be
    /// shorter than the model's dt).
    private var unshiftedTime: UInt64 = 0
    private var lastPlanTime: UInt64?
    /// The network prior, when the configuration has one (this session's own instance).
    private(set) var prior: NetworkPrior?
    /// Adaptive iterations (nil without a prior): how many the next plan runs.
    private var adaptive: AdaptiveIterations?
    /// With `[prior] adaptive`: the iterations the rule has settled on, and its last relative gain.
    var iterationTarget: Int? { adaptive?.settings.adaptive == true ? adaptive?.target : nil }
    var lastRelativeGain: Double { adaptive?.lastGain ?? .nan }
    var fallbacks: UInt64 = 0
    /// Plans none of whose rollouts had a finite cost, and how many of them the server has
    /// counted into its report (FailedPlanReport).
    var failedPlans: UInt64 = 0
    var failedPlansCounted: UInt64 = 0
    /// The task parameters this session's client has set (the rest keep the configuration's).
    private(set) var parameterValues: [String: [Double]] = [:]
    /// The configuration's parameter values, taken before this session first changed them.
    private var configuredParameters: [[Float]]?
    /// The last plan's figures, for `mpcctl` and the reply.
    var lastIterations = 0
    private(set) var lastGap: Float = .nan
    /// w V(x_H) of the last plan, with a `[value]`: the cost the plan expects beyond its horizon.
    private(set) var lastValueTerm: Float = .nan
    /// The guard every action passes, and the last action sent (its slew reference).
    var safety: ActionSafety
    private(set) var lastSent: [Float]? {
        didSet { sentBeforeLast = oldValue }
    }
    /// The action sent before `lastSent`: with it, the change the robot was last given.
    private var sentBeforeLast: [Float]?
    var staleReplies: UInt64 = 0
    /// Iterations, plans cut short and tick latency, for Prometheus.
    var metrics = SessionMetrics()
    /// The state planned from and the plan, kept only for online amortisation.
    var lastPlan: ([Float], Plan)?
    var keepsPlans = false
    /// While the daemon records: every plan and stale reply leaves its record here for the recorder.
    var recording = false
    var record: TickRecord?
    /// The parameters the client set, as the recording keeps them.
    private var parametersJSON = "{}"

    init(identity: [UInt8], envelope: [[UInt8]], planner: MirrorDescentPlanner, prior: NetworkPrior?,
         priorSettings: PriorConfiguration?, safety: ActionSafety, index: UInt64, now: UInt64) {
        self.safety = safety
        self.identity = identity
        name = Session.name(identity)
        self.envelope = envelope
        self.planner = planner
        self.prior = prior
        adaptive = priorSettings.map { AdaptiveIterations(settings: $0, planner: planner.configuration) }
        planner.actionPrior = prior
        self.index = index
        self.lastSeen = now
        self.createdAt = now
    }

    /// The identity as text for logs: printable ASCII as is, anything else in hex.
    let name: String

    /// Plans from the newest observation and stores the reply.
    ///
    /// In realtime mode an observation older than one period is first advanced to `now` through the
    /// model, one `dt` at a time, with the actions this session was sent in that interval.
    func plan(now: UInt64, deadline: UInt64, tick: UInt64, context: TickContext) {
        // an observation of another shape than the planner's task (a reload changed it) is never planned
        guard let observation, observation.state.count == planner.stateDimension else {
            unanswered = false
            return
        }
        let task = planner.task, dtNanoseconds = max(1, nanoseconds(seconds: Double(task.dynamics.dt)))
        var state = observation.state
        var advanced = 0
        if context.advanceStale, now > observation.measuredAt, now - observation.measuredAt > context.periodNanoseconds {
            let steps = min(planner.horizon, Int((Double(now - observation.measuredAt) / Double(dtNanoseconds)).rounded()))
            for i in 0..<steps {
                let at = observation.measuredAt + UInt64(i) * dtNanoseconds
                guard let action = sent.last(where: { $0.time <= at })?.action ?? sent.first?.action,
                      action.count == planner.actionDimension else { break }
                state = task.step(state: state, action: action).next
                advanced += 1
            }
        }
        var shift = 1
        if context.advanceStale {
            // realtime: shift the warm start by the whole model steps elapsed since the last plan
            if let lastPlanTime, now > lastPlanTime { unshiftedTime += now - lastPlanTime }
            shift = Int(unshiftedTime / dtNanoseconds)
            unshiftedTime -= UInt64(shift) * dtNanoseconds
            lastPlanTime = now
        }
        let iterations = plannedIterations()
        // what the robot was really sent: the plan's rate limits and action-change cost start from it
        var beforeLast = sentBeforeLast
        if let last = lastSent, let before = beforeLast, context.advanceStale {
            // realtime: the last change took a tick period; the plan's steps take the model's dt
            let ratio = Float(Double(dtNanoseconds) / Double(max(1, context.periodNanoseconds)))
            beforeLast = zip(last, before).map { $0 - ($0 - $1) * ratio }
        }
        planner.setAppliedActions(last: lastSent, beforeLast: beforeLast, firstStepLimit: safety.maxStep)
        let (appliedLast, planIndex) = (lastSent, planner.planCount)
        let plan = planner.plan(state: state, deadline: deadline, shift: shift, iterations: iterations)
        adapt(after: plan)
        lastValueTerm = plan.valueTerm ?? .nan
        // a plan that kept its proposal (never_worse) holds no refinement to learn from, and one
        // under this session's own parameters would teach every session's prior its goal
        if keepsPlans { lastPlan = plan.keptPrior || !planner.priorFitsTask ? nil : (state, plan) }
        let finished = monotonicNanoseconds()
        var flags = WireProtocol.ActionFlags()
        if advanced > 0 { flags.insert(.advanced) }
        if plan.iterations.count < iterations {
            flags.insert(.truncated)
            metrics.truncatedPlans += 1
        }
        if plan.failed {
            // No rollout had a finite cost: the action is the prior's, unrefined. Start afresh.
            flags.insert(.fallback)
            fallbacks += 1
            failedPlans += 1
            planner.reset()
        } else if plan.iterations.isEmpty && iterations > 0 {
            // No time left for a single iteration: the prior's action, flagged and counted.
            flags.insert(.fallback)
            fallbacks += 1
        }
        let last = plan.iterations.last
        let steps = min(context.planSteps, planner.horizon - 1)
        let (action, limited) = safety.filter(plan.action, previous: lastSent)
        if limited { flags.insert(.limited) }
        let upcoming = safety.filterSequence(Array(plan.sequence.mean[planner.actionDimension..<((steps + 1) * planner.actionDimension)]),
                                             previous: action)
        let diagnostics: [Double] = [
            Double(plan.iterations.count), Double(last?.bestCost ?? .nan), Double(finished - now) * 1e-9,
            context.latenessSeconds, Double(context.overruns), Double(last?.effectiveSampleSize ?? .nan),
            Double(last?.klDivergence ?? .nan), Double(last?.invalidSamples ?? 0), Double(advanced),
            prior == nil ? .nan : Double(plan.priorKL), Double(plan.amortisationGap), Double(plan.priorCost),
            Double(plan.planCost), Double(prior?.network.version ?? -1), Double(plan.valueTerm ?? .nan),
        ]
        let header = WireProtocol.Header(type: .action, a: observation.sequence, b: tick, c: flags.rawValue)
        reply = envelope + [header.bytes, WireProtocol.encodeFloat64(action),
                            WireProtocol.encodeFloat64(upcoming), WireProtocol.encodeFloat64(diagnostics)]
        if recording {
            let none = [Float](repeating: .nan, count: planner.actionDimension)
            record = TickRecord(
                time: wallClockNanoseconds() / 1000, session: index, peer: name, tick: tick, sequence: observation.sequence,
                observation: observation.state, observationAge: Double(now > observation.measuredAt ? now - observation.measuredAt : 0) * 1e-9,
                state: state, action: action, plannedAction: plan.action, planMean: plan.sequence.mean, planStd: plan.sequence.std, flags: flags.rawValue,
                diagnostics: diagnostics, iterationsRequested: Int32(clamping: iterations), shift: Int32(clamping: shift), appliedLast: appliedLast ?? none,
                appliedBeforeLast: appliedLast == nil ? none : beforeLast ?? none, planIndex: planIndex, parameters: parametersJSON)
        }
        lastSent = action
        sent.append((now, action))
        if sent.count > 2 * planner.horizon { sent.removeFirst(sent.count - planner.horizon) }
        ticksServed += 1
        unanswered = false
    }
}

extension Session {
    /// The reply for a session whose observations stopped: the configured safe action, flagged
    /// `stale`, through the same guard as every action. The plan starts afresh afterwards.
    func staleReply(now: UInt64, tick: UInt64, safeAction: ActionSafety.SafeAction, context: TickContext) {
        var proposed = safety.zero
        switch safeAction {
        case .zero: break
        case .hold: proposed = lastSent ?? proposed
        case .prior:
            if let prior, let state = observation?.state,
               let sequence = prior.prior(for: state, warmStart: nil) { proposed = sequence.meanAction(at: 0) }
        }
        let (action, limited) = safety.filter(proposed, previous: lastSent)
        var flags: WireProtocol.ActionFlags = [.stale]
        if limited { flags.insert(.limited) }
        let m = action.count
        let upcoming = safety.filterSequence(Array((0..<min(context.planSteps, planner.horizon - 1)).map { _ in action }.joined()), previous: action)
        var diagnostics = [Double](repeating: .nan, count: WireProtocol.diagnosticNames.count)
        diagnostics[0] = 0
        diagnostics[3] = context.latenessSeconds
        diagnostics[4] = Double(context.overruns)
        let header = WireProtocol.Header(type: .action, a: observation?.sequence ?? 0, b: tick, c: flags.rawValue)
        reply = envelope + [header.bytes, WireProtocol.encodeFloat64(action), WireProtocol.encodeFloat64(upcoming),
                            WireProtocol.encodeFloat64(diagnostics)]
        precondition(upcoming.count % max(1, m) == 0)
        if recording {
            let none = [Float](repeating: .nan, count: m), n = planner.stateDimension
            let noPlan = [Float](repeating: .nan, count: planner.horizon * m)
            let state = observation?.state.count == n ? observation!.state : [Float](repeating: .nan, count: n)
            record = TickRecord(
                time: wallClockNanoseconds() / 1000, session: index, peer: name, tick: tick, sequence: observation?.sequence ?? 0,
                observation: state, observationAge: observation.map { Double(now > $0.measuredAt ? now - $0.measuredAt : 0) * 1e-9 } ?? .nan,
                state: state, action: action, plannedAction: proposed, planMean: noPlan, planStd: noPlan,
                flags: flags.rawValue, diagnostics: diagnostics, iterationsRequested: 0, shift: 0, appliedLast: lastSent ?? none,
                appliedBeforeLast: sentBeforeLast ?? none, planIndex: planner.planCount, parameters: parametersJSON)
        }
        lastSent = action
        sent.append((now, action))
        staleReplies += 1
        lastIterations = 0
        planner.reset()
    }

    /// A session the same client had before: its last action is the slew reference of the first.
    func continueAfter(lastAction: [Float]) {
        guard lastSent == nil, lastAction.count == planner.actionDimension else { return }
        lastSent = lastAction
    }

    /// Sets some of the task's parameters for this session's next plans, all or none. While they
    /// differ from the configuration's, the network prior (trained under those) only proposes.
    func setParameters(_ values: [String: [Double]]) throws(ParameterError) {
        try planner.setParameters(values, configured: &configuredParameters)
        parameterValues.merge(values) { $1 }
        parametersJSON = Self.json(parameterValues)
    }

    /// Takes a new planner and prior (a reload, a policy load); statistics stay, and the
    /// parameters the client set when the new task takes them (else the error says why they went).
    @discardableResult
    func rebuild(planner: MirrorDescentPlanner, prior: NetworkPrior?, priorSettings: PriorConfiguration?) -> ParameterError? {
        var dropped: ParameterError?
        configuredParameters = nil
        if !parameterValues.isEmpty {
            do {
                try planner.setParameters(parameterValues, configured: &configuredParameters)
            } catch {
                dropped = error
                parameterValues = [:]
                parametersJSON = "{}"
            }
        }
        self.planner = planner
        self.prior = prior
        planner.actionPrior = prior
        adaptive = priorSettings.map { AdaptiveIterations(settings: $0, planner: planner.configuration) }
        return dropped
    }

    /// Iterations for the next plan: the configured count, or the adaptive rule's.
    func plannedIterations() -> Int {
        adaptive?.next() ?? planner.configuration.iterations
    }

    /// Records the plan's figures and lets the adaptive rule measure its gain.
    func adapt(after plan: Plan) {
        lastIterations = plan.iterations.count
        guard !plan.iterations.isEmpty else { return }
        lastGap = plan.amortisationGap
        // the start unpriced (a carried start without the mean sample): the prior's cost, the nearest known
        adaptive?.record(startCost: plan.startCost ?? plan.priorCost, planCost: plan.planCost)
    }
}

/// What a tick tells every session it plans.
struct TickContext {
    var periodNanoseconds: UInt64
    var advanceStale: Bool
    var planSteps: Int
    var latenessSeconds: Double
    var overruns: UInt64
}

extension Session {
    /// Parameter values as JSON with sorted keys (the recording's `parameters`).
    static func json(_ values: [String: [Double]]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return (try? encoder.encode(values)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func name(_ identity: [UInt8]) -> String {
        if !identity.isEmpty, identity.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }) { return String(decoding: identity, as: UTF8.self) }
        return identity.map { String(format: "%02x", $0) }.joined()
    }
}
