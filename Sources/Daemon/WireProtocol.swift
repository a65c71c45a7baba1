import Foundation

/// mpcd's wire protocol, version 1 (docs/protocol.md).
///
/// Every message is a multipart ZeroMQ message whose first frame is a 32-byte little-endian
/// header: `magic "MPCD" | version u16 | type u16 | a u64 | b u64 | c u32 | d u32`, where the
/// meaning of a, b, c and d depends on the type. Vectors travel as frames of little-endian
/// float64, which `numpy.frombuffer(frame, "<f8")` reads directly.
public enum WireProtocol {
    public static let version: UInt16 = 1
    public static let magic: [UInt8] = Array("MPCD".utf8)
    public static let headerSize = 32
    /// Most frames a request may have after the routing id: a REQ client's delimiter, the header
    /// and an observation's state (or a parameters message's JSON).
    public static let maxFrames = 3

    public enum MessageType: UInt16, Sendable {
        case hello = 1
        case helloReply = 2
        case observation = 3
        case action = 4
        case error = 5
        case bye = 6
        /// Sets some of the session's task parameters (docs/protocol.md, "Parameters").
        case parameters = 7
        /// The session's parameters in force after a `parameters` message.
        case parametersReply = 8
    }

    /// Why the daemon refused a message.
    public enum ErrorCode: UInt32, Sendable, CaseIterable {
        case malformed = 1
        case unsupportedVersion = 2
        case unknownType = 3
        case wrongDimension = 4
        case nonFinite = 5
        case tooManySessions = 6
        case stale = 7
        case internalError = 8
        /// A parameters message named no parameter of the task, or a value out of its bounds.
        case invalidParameter = 9
        /// The task changed since the client's hello (a reload): only to a client that sent the
        /// hello's `task_fingerprint` in its message, asking to be told.
        case taskChanged = 10

        public var name: String {
            switch self {
            case .malformed: "malformed"
            case .unsupportedVersion: "unsupported_version"
            case .unknownType: "unknown_type"
            case .wrongDimension: "wrong_dimension"
            case .nonFinite: "non_finite"
            case .tooManySessions: "too_many_sessions"
            case .stale: "stale"
            case .internalError: "internal"
            case .invalidParameter: "invalid_parameter"
            case .taskChanged: "task_changed"
            }
        }
    }

    /// Bits of an action's flags word.
    public struct ActionFlags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// The observation was older than one period and was advanced through the model.
        public static let advanced = ActionFlags(rawValue: 1 << 0)
        /// The deadline stopped planning before the configured iterations.
        public static let truncated = ActionFlags(rawValue: 1 << 1)
        /// The planner failed (no rollout had a finite cost): the action is the prior's, unrefined.
        public static let fallback = ActionFlags(rawValue: 1 << 2)
        /// No observation for `stale_after`: the configured safe action, not a plan.
        public static let stale = ActionFlags(rawValue: 1 << 3)
        /// The safety filter changed the planned action (slew limit, bounds or a non-finite value).
        public static let limited = ActionFlags(rawValue: 1 << 4)
    }

    /// The names of the diagnostics vector of an action, in order (also sent in the hello reply).
    public static let diagnosticNames = [
        "iterations", "cost", "compute_seconds", "tick_lateness_seconds", "overruns",
        "effective_sample_size", "kl_divergence", "invalid_samples", "advanced_steps",
        "prior_kl", "amortisation_gap", "prior_cost", "plan_cost", "network_version", "value_term",
    ]

    public struct Header: Equatable, Sendable {
        public var type: UInt16
        public var version: UInt16 = WireProtocol.version
        public var a: UInt64 = 0
        public var b: UInt64 = 0
        public var c: UInt32 = 0
        public var d: UInt32 = 0

        public init(type: MessageType, a: UInt64 = 0, b: UInt64 = 0, c: UInt32 = 0, d: UInt32 = 0) {
            self.type = type.rawValue
            self.a = a
            self.b = b
            self.c = c
            self.d = d
        }

        public var bytes: [UInt8] {
            var out = magic
            out.reserveCapacity(headerSize)
            append(&out, version)
            append(&out, type)
            append(&out, a)
            append(&out, b)
            append(&out, c)
            append(&out, d)
            return out
        }

        /// Reads a header frame; nil when it is not one (wrong size or magic).
        public init?(_ frame: [UInt8]) {
            guard frame.count == headerSize, Array(frame[0..<4]) == magic else { return nil }
            version = read(frame, 4)
            type = read(frame, 6)
            a = read(frame, 8)
            b = read(frame, 16)
            c = read(frame, 24)
            d = read(frame, 28)
        }
    }

    /// A decoded request from a client.
    public enum Request: Equatable, Sendable {
        case hello
        /// `heldTask`: header word c, the `task_fingerprint` of the hello the client holds (0: none).
        case observation(sequence: UInt64, timestamp: Double, values: [Double], heldTask: UInt32 = 0)
        case bye
        /// Parameter values by name, each one number or an array of numbers; a = `sequence`.
        case parameters(sequence: UInt64, values: [String: [Double]], heldTask: UInt32 = 0)
    }

    /// A request that cannot be acted on: the code, a message, and the sequence number if known.
    public struct Refusal: Error, Equatable, Sendable {
        public let code: ErrorCode
        public let message: String
        public let sequence: UInt64

        public init(_ code: ErrorCode, _ message: String, sequence: UInt64 = 0) {
            self.code = code
            self.message = message
            self.sequence = sequence
        }
    }

    /// Decodes the payload frames of a request (the routing envelope already removed). A state
    /// of more than `maxValues` values is refused as `wrongDimension` before it is decoded.
    public static func decode(_ frames: [[UInt8]], maxValues: Int = .max) throws(Refusal) -> Request {
        guard let first = frames.first, let header = Header(first) else {
            throw Refusal(.malformed, "the first frame must be a \(headerSize)-byte header starting with \"MPCD\"")
        }
        guard header.version == version else {
            throw Refusal(.unsupportedVersion, "protocol version \(header.version) is not supported; this daemon speaks version \(version)")
        }
        guard let type = MessageType(rawValue: header.type) else {
            throw Refusal(.unknownType, "unknown message type \(header.type)")
        }
        switch type {
        case .hello:
            return .hello
        case .bye:
            return .bye
        case .observation:
            guard frames.count == 2 else {
                throw Refusal(.malformed, "an observation has 2 frames (header, state), got \(frames.count)", sequence: header.a)
            }
            let body = frames[1]
            guard body.count % 8 == 0 else {
                throw Refusal(.malformed, "the state frame has \(body.count) bytes, not a whole number of float64 values", sequence: header.a)
            }
            guard body.count / 8 <= maxValues else {
                throw Refusal(.wrongDimension, "the state has \(body.count / 8) values; this task takes at most \(maxValues)", sequence: header.a)
            }
            let values = decodeFloat64(body)
            return .observation(sequence: header.a, timestamp: Double(bitPattern: header.b), values: values, heldTask: header.c)
        case .parameters:
            guard frames.count == 2 else {
                throw Refusal(.malformed, "a parameters message has 2 frames (header, a JSON object), got \(frames.count)", sequence: header.a)
            }
            return .parameters(sequence: header.a, values: try decodeParameters(frames[1], sequence: header.a), heldTask: header.c)
        case .helloReply, .action, .error, .parametersReply:
            throw Refusal(.unknownType, "message type \(header.type) is sent by the daemon, not to it", sequence: header.a)
        }
    }

    /// A parameter's value on the wire: one number, or an array of them.
    enum ParameterValue: Decodable {
        case one(Double), many([Double])

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let value = try? container.decode(Double.self) { self = .one(value) } else { self = .many(try container.decode([Double].self)) }
        }

        var values: [Double] {
            switch self {
            case let .one(value): [value]
            case let .many(values): values
            }
        }
    }

    /// `{"name": number or [numbers], ...}`. JSON5 is accepted so that NaN and Infinity (which
    /// Python's json module writes) arrive as numbers and are refused by name, not as bad JSON.
    static func decodeParameters(_ body: [UInt8], sequence: UInt64) throws(Refusal) -> [String: [Double]] {
        let decoder = JSONDecoder()
        decoder.allowsJSON5 = true
        do {
            return try decoder.decode([String: ParameterValue].self, from: Data(body)).mapValues(\.values)
        } catch let DecodingError.typeMismatch(_, context) where !context.codingPath.isEmpty {
            throw Refusal(.malformed, "parameter \(context.codingPath[0].stringValue): a value must be a number or an array of numbers", sequence: sequence)
        } catch {
            throw Refusal(.malformed, "a parameters message's second frame must be a JSON object of numbers or arrays of numbers, e.g. {\"goal\": [1.0, 2.0]}", sequence: sequence)
        }
    }

    /// The reply to a parameters message: every parameter of the session's task, as in force now.
    public static func parametersReply(sequence: UInt64, _ object: [String: [Double]]) -> [[UInt8]] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return [Header(type: .parametersReply, a: sequence).bytes, Array((try? encoder.encode(object)) ?? Data("{}".utf8))]
    }

    public static func encodeFloat64(_ values: [Double]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 8)
        for v in values { append(&out, v.bitPattern) }
        return out
    }

    public static func encodeFloat64(_ values: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 8)
        for v in values { append(&out, Double(v).bitPattern) }
        return out
    }

    public static func decodeFloat64(_ bytes: [UInt8]) -> [Double] {
        bytes.withUnsafeBytes { raw in
            (0..<(bytes.count / 8)).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 &* 8, as: UInt64.self))) }
        }
    }

    public static func errorMessage(_ refusal: Refusal) -> [[UInt8]] {
        [Header(type: .error, a: refusal.sequence, c: refusal.code.rawValue).bytes, Array(refusal.message.utf8)]
    }
}

@inline(__always)
private func append<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
    var v = value.littleEndian
    withUnsafeBytes(of: &v) { out.append(contentsOf: $0) }
}

@inline(__always)
private func read<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int) -> T {
    var v: T = 0
    withUnsafeMutableBytes(of: &v) { dst in
        for i in 0..<MemoryLayout<T>.size { dst[i] = bytes[offset + i] }
    }
    return T(littleEndian: v)
}
