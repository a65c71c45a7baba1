import Foundation

/// A request on the control socket, as mpcctl sends it: `{"command": "...", "path": "..."}`.
public struct ControlRequest: Codable, Equatable, Sendable {
    public enum Command: String, Codable, CaseIterable, Sendable {
        case ping, status, sessions, metrics, reload
        case policyLoad = "policy_load"
        /// Recording on or off (`enable`), with a `[recording]` table.
        case record
    }

    public var command: Command
    /// The weights file of `policy_load`.
    public var path: String?
    /// Whether `record` turns recording on or off.
    public var enable: Bool?

    public init(command: Command, path: String? = nil, enable: Bool? = nil) {
        self.command = command
        self.path = path
        self.enable = enable
    }

    /// Largest request read: a command and a path.
    public static let maxBytes = 16 * 1024

    /// Reads a request, or says what is wrong with it.
    public static func decode(_ bytes: [UInt8]) -> Result<ControlRequest, ControlRequestError> {
        guard bytes.count <= maxBytes else { return .failure(.init("a request is at most \(maxBytes) bytes")) }
        // the command as text first: an unknown one is named in the answer
        struct Raw: Decodable {
            var command: String
            var path: String?
            var enable: Bool?

            enum CodingKeys: String, CodingKey { case command, path, enable }

            // a path of another type is no path: policy_load says it needs one, the rest ignore it
            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                command = try container.decode(String.self, forKey: .command)
                path = try? container.decodeIfPresent(String.self, forKey: .path)
                enable = try? container.decodeIfPresent(Bool.self, forKey: .enable)
            }
        }
        guard let raw = try? JSONDecoder().decode(Raw.self, from: Data(bytes)) else {
            return .failure(.init("a request is a JSON object with a \"command\""))
        }
        guard let command = Command(rawValue: raw.command) else {
            return .failure(.init("unknown command \"\(raw.command)\"; known: \(Command.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        if command == .policyLoad, raw.path?.isEmpty ?? true { return .failure(.init("policy_load needs a \"path\"")) }
        if command == .record, raw.enable == nil { return .failure(.init("record needs \"enable\": true or false")) }
        return .success(ControlRequest(command: command, path: raw.path, enable: raw.enable))
    }
}

public struct ControlRequestError: Error, Equatable {
    public let reason: String
    init(_ reason: String) { self.reason = reason }
}
