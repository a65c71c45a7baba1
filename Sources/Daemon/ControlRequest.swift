import Foundation

/// A request on the control socket, as mpcctl sends it: `{"command": "...", "path": "..."}`.
public struct ControlRequest: Codable, Equatable, Sendable {
    public enum Command: String, Codable, CaseIterable, Sendable {
        case ping, status, sessions, metrics, reload
        case policyLoad = "policy_load"
    }

    public var command: Command
    /// The weights file of `policy_load`.
    public var path: String?

    public init(command: Command, path: String? = nil) {
        self.command = command
        self.path = path
    }

    /// Largest request read: a command and a path.
    public static let maxBytes = 16 * 1024

    /// Reads a request, or says what is wrong with it.
    public static func decode(_ bytes: [UInt8]) -> Result<ControlRequest, ControlRequestError> {
        guard bytes.count <= maxBytes else { return .failure(.init("a request is at most \(maxBytes) bytes")) }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], let name = object["command"] as? String else {
            return .failure(.init("a request is a JSON object with a \"command\""))
        }
        guard let command = Command(rawValue: name) else {
            return .failure(.init("unknown command \"\(name)\"; known: \(Command.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        let path = object["path"] as? String
        if command == .policyLoad, path?.isEmpty ?? true { return .failure(.init("policy_load needs a \"path\"")) }
        return .success(ControlRequest(command: command, path: path))
    }
}

public struct ControlRequestError: Error, Equatable {
    public let reason: String
    init(_ reason: String) { self.reason = reason }
}
