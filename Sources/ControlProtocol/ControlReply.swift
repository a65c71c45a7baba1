import Foundation

/// The daemon's answer to one control request (JSON, keys sorted). `ok` says whether it did what
/// was asked; `error` says why not. The other fields belong to one command each.
public struct ControlReply: Codable, Equatable, Sendable {
    public var ok: Bool
    public var error: String?
    /// ping: the daemon's process id.
    public var pid: Int?
    public var status: DaemonStatus?
    public var sessions: [SessionStatus]?
    /// metrics: Prometheus text.
    public var text: String?
    /// reload: the file read again, and what it could not apply without a restart.
    public var config: String?
    public var warnings: [String]?
    /// policy load: the file installed, its kind and weights' version.
    public var file: String?
    public var kind: String?
    public var version: Int?

    public init(ok: Bool, error: String? = nil) {
        self.ok = ok
        self.error = error
    }

    public static func failure(_ reason: String) -> ControlReply { ControlReply(ok: false, error: reason) }

    /// The JSON frame; a reply that cannot be encoded (a non-finite number) says so instead.
    public var bytes: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return Array((try? encoder.encode(self)) ?? Data(#"{"error":"the reply could not be encoded","ok":false}"#.utf8))
    }

    /// Reads a reply, or says which field kept the bytes from being one.
    public static func decode(_ bytes: [UInt8]) -> Result<ControlReply, ControlReplyError> {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        do {
            return .success(try decoder.decode(ControlReply.self, from: Data(bytes)))
        } catch let error as DecodingError {
            return .failure(ControlReplyError(error))
        } catch {
            return .failure(ControlReplyError(reason: "\(error)"))
        }
    }
}

/// Why bytes are not a control reply: the field (a dotted path) and what was wrong with it.
public struct ControlReplyError: Error, CustomStringConvertible {
    public let reason: String

    init(reason: String) { self.reason = reason }

    init(_ error: DecodingError) {
        func path(_ keys: [any CodingKey]) -> String {
            keys.isEmpty ? "the reply" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case let .keyNotFound(key, context): reason = "\(path(context.codingPath + [key])) is missing"
        case let .typeMismatch(_, context), let .valueNotFound(_, context): reason = "\(path(context.codingPath)): \(context.debugDescription)"
        case let .dataCorrupted(context): reason = context.codingPath.isEmpty ? "not JSON" : "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default: reason = "\(error)"
        }
    }

    public var description: String { reason }
}
