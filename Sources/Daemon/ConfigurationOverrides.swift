import ControlProtocol
import Models

/// What the command line overrides in `[server]` (`--mode`, `--rate-hz`, `--endpoint`) and
/// `[control]` (`--control`): applied to
/// the configuration at start and again to every configuration a reload reads, so an override
/// holds for the life of the process.
public struct ConfigurationOverrides: Sendable, Equatable {
    public var mode: TimingMode?
    public var rateHz: Double?
    public var endpoint: String?
    public var control: String?

    public init(mode: TimingMode? = nil, rateHz: Double? = nil, endpoint: String? = nil, control: String? = nil) {
        self.mode = mode
        self.rateHz = rateHz
        self.endpoint = endpoint
        self.control = control
    }

    /// Checks the command-line values as the `[server]` table checks its keys; the error names the
    /// flag.
    public init(checkingMode mode: String?, rateHz: Double?, endpoint: String?, control: String? = nil) throws(ConfigurationError) {
        if let mode {
            guard let parsed = TimingMode(rawValue: mode) else {
                throw ConfigurationError(key: "--mode", reason: "expected one of \(TimingMode.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(mode)\"")
            }
            self.mode = parsed
        }
        if let rateHz {
            guard rateHz >= 0.1, rateHz <= 10_000 else { throw ConfigurationError(key: "--rate-hz", reason: "expected a number in [0.1, 10000], got \(rateHz)") }
            self.rateHz = rateHz
        }
        if let endpoint {
            guard ServerConfiguration.isEndpoint(endpoint) else {
                throw ConfigurationError(key: "--endpoint", reason: "\"\(endpoint)\" is not a tcp://, ipc:// or inproc:// endpoint (a tcp:// port is 0 to 65535 or *)")
            }
            self.endpoint = endpoint
        }
        if let control {
            guard ControlEndpoint.isValid(control) else {
                throw ConfigurationError(key: "--control", reason: "expected an ipc:// (or, deliberately, tcp://) endpoint, got \"\(control)\"")
            }
            self.control = control
        }
    }

    public var isEmpty: Bool { self == ConfigurationOverrides() }

    /// `configuration` with these overrides in force.
    public func applied(to configuration: DaemonConfiguration) -> DaemonConfiguration {
        var c = configuration
        if let mode { c.server.mode = mode }
        if let rateHz { c.server.rateHz = rateHz }
        if let endpoint { c.server.endpoints = [endpoint] }
        if let control { c.controlEndpoint = control }
        return c
    }
}
