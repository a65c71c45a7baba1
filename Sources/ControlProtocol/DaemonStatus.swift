/// `mpcctl status`: everything the daemon reports about itself, as the control socket carries it
/// (JSON, snake_case keys). The daemon fills it in ControlStatus.swift; mpcctl shows it.
public struct DaemonStatus: Codable, Equatable, Sendable {
    public struct Planner: Codable, Equatable, Sendable {
        public var likelihood: String
        public var samples: Int
        public var horizon: Int
        public var iterations: Int

        public init(likelihood: String, samples: Int, horizon: Int, iterations: Int) {
            self.likelihood = likelihood
            self.samples = samples
            self.horizon = horizon
            self.iterations = iterations
        }
    }

    public struct Latency: Codable, Equatable, Sendable {
        public var sinceStart: LatencySummary
        public var last60s: LatencySummary

        enum CodingKeys: String, CodingKey {
            case sinceStart = "since_start", last60s = "last_60s"
        }

        public init(sinceStart: LatencySummary, last60s: LatencySummary) {
            self.sinceStart = sinceStart
            self.last60s = last60s
        }
    }

    public struct Sessions: Codable, Equatable, Sendable {
        public var count: Int
        public var opened: UInt64
        public var expired: UInt64
        /// Sessions that gave their place to a newcomer (max_sessions reached).
        public var evicted: UInt64
        public var peerGone: UInt64
        public var endedByReload: UInt64
        public var max: Int
        public var bytesEach: Double
        public var list: [SessionStatus]

        enum CodingKeys: String, CodingKey {
            case count, opened, expired, evicted, max, list
            case peerGone = "peer_gone", endedByReload = "ended_by_reload", bytesEach = "bytes_each"
        }

        public init(count: Int, opened: UInt64, expired: UInt64, evicted: UInt64, peerGone: UInt64, endedByReload: UInt64, max: Int,
                    bytesEach: Double, list: [SessionStatus]) {
            self.count = count
            self.opened = opened
            self.expired = expired
            self.evicted = evicted
            self.peerGone = peerGone
            self.endedByReload = endedByReload
            self.max = max
            self.bytesEach = bytesEach
            self.list = list
        }
    }

    public struct Connections: Codable, Equatable, Sendable {
        public var count: Int
        public var accepted: UInt64
        public var max: Int
        /// Connections the daemon ended, by reason.
        public var ended: [String: UInt64]
        public var oversizedMessages: UInt64

        enum CodingKeys: String, CodingKey {
            case count, accepted, max, ended
            case oversizedMessages = "oversized_messages"
        }

        public init(count: Int, accepted: UInt64, max: Int, ended: [String: UInt64], oversizedMessages: UInt64) {
            self.count = count
            self.accepted = accepted
            self.max = max
            self.ended = ended
            self.oversizedMessages = oversizedMessages
        }
    }

    public struct Curve: Codable, Equatable, Sendable {
        public var publicKey: String
        public var authorizedKeys: Int
        public var refusedHandshakes: UInt64

        enum CodingKeys: String, CodingKey {
            case publicKey = "public_key", authorizedKeys = "authorized_keys", refusedHandshakes = "refused_handshakes"
        }

        public init(publicKey: String, authorizedKeys: Int, refusedHandshakes: UInt64) {
            self.publicKey = publicKey
            self.authorizedKeys = authorizedKeys
            self.refusedHandshakes = refusedHandshakes
        }
    }

    public struct Prior: Codable, Equatable, Sendable {
        public var file: String
        public var kind: String
        public var networkVersion: Int
        public var adaptive: Bool
        public var online: Bool
        /// The sessions' mean amortisation gap, when any has one.
        public var amortisationGap: Double?

        enum CodingKeys: String, CodingKey {
            case file, kind, adaptive, online
            case networkVersion = "network_version", amortisationGap = "amortisation_gap"
        }

        public init(file: String, kind: String, networkVersion: Int, adaptive: Bool, online: Bool, amortisationGap: Double?) {
            self.file = file
            self.kind = kind
            self.networkVersion = networkVersion
            self.adaptive = adaptive
            self.online = online
            self.amortisationGap = amortisationGap
        }
    }

    public struct Value: Codable, Equatable, Sendable {
        public var file: String
        public var weight: Double
        public var networkVersion: Int
        /// w V(x_H) averaged over the sessions: the cost their plans expect beyond the horizon.
        public var valueTerm: Double?

        enum CodingKeys: String, CodingKey {
            case file, weight
            case networkVersion = "network_version", valueTerm = "value_term"
        }

        public init(file: String, weight: Double, networkVersion: Int, valueTerm: Double?) {
            self.file = file
            self.weight = weight
            self.networkVersion = networkVersion
            self.valueTerm = valueTerm
        }
    }

    /// Tick recording (docs/recording.md): absent without a `[recording]` table.
    public struct Recording: Codable, Equatable, Sendable {
        public var enabled: Bool
        public var directory: String
        /// The file being written; null between files and while off.
        public var file: Nullable<String>
        /// Ticks written and dropped (the queue full, or the disk refused), bytes written, files begun, since start.
        public var written: UInt64
        public var dropped: UInt64
        public var bytes: UInt64
        public var files: UInt64
        /// Why recording could not start, when it could not.
        public var problem: Nullable<String>

        public init(enabled: Bool, directory: String, file: String?, written: UInt64, dropped: UInt64, bytes: UInt64, files: UInt64, problem: String?) {
            self.enabled = enabled
            self.directory = directory
            self.file = Nullable(file)
            self.written = written
            self.dropped = dropped
            self.bytes = bytes
            self.files = files
            self.problem = Nullable(problem)
        }
    }

    public var version: String
    public var pid: Int
    public var uptimeSeconds: Double
    public var config: String
    public var task: String
    public var mode: String
    public var planner: Planner
    public var targetRateHz: Double
    public var achievedRateHz: Double
    public var tickLatencyUs: Latency
    public var ticks: UInt64
    public var replies: UInt64
    public var droppedReplies: UInt64
    public var missedTicks: UInt64
    public var fallbacks: UInt64
    public var rejectedMessages: UInt64
    public var rejectedByCode: [String: UInt64]
    public var staleReplies: UInt64
    public var sessions: Sessions
    public var connections: Connections
    /// "reload" or "policy_load" while one is being prepared; null otherwise.
    public var reconfiguring: Nullable<String>
    public var iterationsPerTick: Double
    public var endpoints: [String]
    public var control: String
    /// The Prometheus endpoint's URL; null without `[metrics]`.
    public var metrics: Nullable<String>
    /// null without CURVE.
    public var curve: Nullable<Curve>
    /// Absent without a `[prior]`, and without a `[value]`.
    public var prior: Prior?
    public var value: Value?
    public var recording: Recording?

    enum CodingKeys: String, CodingKey {
        case version, pid, config, task, mode, planner, ticks, replies, fallbacks, sessions, connections, reconfiguring, endpoints
        case control, metrics, curve, prior, value, recording
        case uptimeSeconds = "uptime_seconds", targetRateHz = "target_rate_hz", achievedRateHz = "achieved_rate_hz"
        case tickLatencyUs = "tick_latency_us", droppedReplies = "dropped_replies", missedTicks = "missed_ticks"
        case rejectedMessages = "rejected_messages", rejectedByCode = "rejected_by_code", staleReplies = "stale_replies"
        case iterationsPerTick = "iterations_per_tick"
    }

    public init(version: String, pid: Int, uptimeSeconds: Double, config: String, task: String, mode: String, planner: Planner,
                targetRateHz: Double, achievedRateHz: Double, tickLatencyUs: Latency, ticks: UInt64, replies: UInt64, droppedReplies: UInt64,
                missedTicks: UInt64, fallbacks: UInt64, rejectedMessages: UInt64, rejectedByCode: [String: UInt64], staleReplies: UInt64,
                sessions: Sessions, connections: Connections, reconfiguring: String?, iterationsPerTick: Double, endpoints: [String],
                control: String, metrics: String?, curve: Curve?, prior: Prior?, value: Value?) {
        self.version = version
        self.pid = pid
        self.uptimeSeconds = uptimeSeconds
        self.config = config
        self.task = task
        self.mode = mode
        self.planner = planner
        self.targetRateHz = targetRateHz
        self.achievedRateHz = achievedRateHz
        self.tickLatencyUs = tickLatencyUs
        self.ticks = ticks
        self.replies = replies
        self.droppedReplies = droppedReplies
        self.missedTicks = missedTicks
        self.fallbacks = fallbacks
        self.rejectedMessages = rejectedMessages
        self.rejectedByCode = rejectedByCode
        self.staleReplies = staleReplies
        self.sessions = sessions
        self.connections = connections
        self.reconfiguring = Nullable(reconfiguring)
        self.iterationsPerTick = iterationsPerTick
        self.endpoints = endpoints
        self.control = control
        self.metrics = Nullable(metrics)
        self.curve = Nullable(curve)
        self.prior = prior
        self.value = value
    }
}

/// Tick latency percentiles, µs; only `count` when there is none yet.
public struct LatencySummary: Codable, Equatable, Sendable {
    public var count: UInt64
    public var p50: UInt64?
    public var p90: UInt64?
    public var p99: UInt64?
    public var p999: UInt64?
    public var max: UInt64?

    enum CodingKeys: String, CodingKey {
        case count, p50, p90, p99, max
        case p999 = "p99.9"
    }

    public init(count: UInt64, p50: UInt64? = nil, p90: UInt64? = nil, p99: UInt64? = nil, p999: UInt64? = nil, max: UInt64? = nil) {
        self.count = count
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
        self.p999 = p999
        self.max = max
    }
}

/// One client being served (`mpcctl sessions`, and `list` in the status).
public struct SessionStatus: Codable, Equatable, Sendable {
    /// The client's identity: printable ASCII as is, anything else in hex.
    public var peer: String
    public var ticksServed: UInt64
    public var refused: UInt64
    public var fallbacks: UInt64
    public var ageSeconds: Double
    /// The last plan's iterations.
    public var iterations: Int
    // running totals: a reader's differences give rates and means over its interval (mpcctl top)
    public var iterationsTotal: UInt64
    public var truncatedPlans: UInt64
    public var staleReplies: UInt64
    public var latencyCount: UInt64
    public var latencySumUs: UInt64
    public var lastObservationAgeSeconds: Double?
    public var amortisationGap: Double?
    /// With adaptive iterations: the count the rule has settled on, and its last measure of gain.
    public var iterationTarget: Int?
    public var relativeGain: Double?
    public var valueTerm: Double?
    /// Every parameter's value in force (tasks with parameters), the names the client set, and
    /// whether the network prior was trained for these values (else it only proposes).
    public var parameters: [String: [Double]]?
    public var parametersSet: [String]?
    public var priorFitsParameters: Bool?

    enum CodingKeys: String, CodingKey {
        case peer, refused, fallbacks, iterations, parameters
        case ticksServed = "ticks_served", ageSeconds = "age_seconds", iterationsTotal = "iterations_total"
        case truncatedPlans = "truncated_plans", staleReplies = "stale_replies", latencyCount = "latency_count"
        case latencySumUs = "latency_sum_us", lastObservationAgeSeconds = "last_observation_age_seconds"
        case amortisationGap = "amortisation_gap", iterationTarget = "iteration_target", relativeGain = "relative_gain"
        case valueTerm = "value_term", parametersSet = "parameters_set", priorFitsParameters = "prior_fits_parameters"
    }

    public init(peer: String, ticksServed: UInt64, refused: UInt64, fallbacks: UInt64, ageSeconds: Double, iterations: Int,
                iterationsTotal: UInt64, truncatedPlans: UInt64, staleReplies: UInt64, latencyCount: UInt64, latencySumUs: UInt64) {
        self.peer = peer
        self.ticksServed = ticksServed
        self.refused = refused
        self.fallbacks = fallbacks
        self.ageSeconds = ageSeconds
        self.iterations = iterations
        self.iterationsTotal = iterationsTotal
        self.truncatedPlans = truncatedPlans
        self.staleReplies = staleReplies
        self.latencyCount = latencyCount
        self.latencySumUs = latencySumUs
    }
}

/// A value whose key is always written, as null when absent (a script can tell "none" from an
/// older daemon that does not report it).
public struct Nullable<Wrapped: Codable & Equatable & Sendable>: Codable, Equatable, Sendable {
    public var value: Wrapped?

    public init(_ value: Wrapped?) { self.value = value }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        value = container.decodeNil() ? nil : try container.decode(Wrapped.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let value { try container.encode(value) } else { try container.encodeNil() }
    }
}

extension KeyedDecodingContainer {
    /// A missing key reads as null: replies from a daemon that predates the field still decode.
    public func decode<T>(_ type: Nullable<T>.Type, forKey key: Key) throws -> Nullable<T> {
        try decodeIfPresent(type, forKey: key) ?? Nullable(nil)
    }
}
