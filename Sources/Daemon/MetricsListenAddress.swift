import Models

/// Where Prometheus scrapes the daemon (`[metrics] listen`): an IPv4 address and a port.
public struct MetricsListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    /// Reads `"127.0.0.1:9464"` (`localhost` is 127.0.0.1; port 0 takes a free one), or says why not.
    public init(parsing text: String) throws(ConfigurationError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[1].isEmpty, parts[1].count <= 5, parts[1].allSatisfy({ ("0"..."9").contains($0) }),
              let port = Int(parts[1]), (0...65535).contains(port) else {
            throw ConfigurationError(key: "metrics.listen", reason: "expected \"address:port\" with an IPv4 address and a port in 0-65535, got \"\(text)\"")
        }
        let host = parts[0] == "localhost" ? "127.0.0.1" : String(parts[0])
        // as inet_pton reads it at bind time: four decimal numbers 0-255, no leading zeros or signs
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        let isOctet = { (o: Substring) in !o.isEmpty && o.count <= 3 && o.allSatisfy { ("0"..."9").contains($0) } && (o == "0" || o.first != "0") && Int(o)! <= 255 }
        guard octets.count == 4, octets.allSatisfy(isOctet) else {
            throw ConfigurationError(key: "metrics.listen", reason: "\"\(parts[0])\" is not an IPv4 address (IPv6 is not supported here; put a proxy in front)")
        }
        self.host = host
        self.port = port
    }

    public var isLoopback: Bool { host.hasPrefix("127.") }
    public var description: String { "\(host):\(port)" }
}
