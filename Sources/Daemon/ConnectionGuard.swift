import CSystemShims
import CZeroMQ
import Logging
import Planners

/// Watches the connections of the data socket, which libzmq accepts and reads on its own thread,
/// and ends the ones that would otherwise exhaust the daemon (docs/reliability.md, "Connections"):
///
/// - **too many**: beyond `maxConnections` (kept below the open-files limit) a new connection
///   takes the place of the oldest one that has not sent a whole message within
///   `silentGraceNanoseconds`, or is itself refused. Connections that never finish their ZeroMQ
///   handshake are also closed by libzmq after `handshakeMilliseconds`.
/// - **a message too big to hold**: libzmq keeps a multipart message until its last frame has
///   arrived, whatever its size (ZMQ_MAXMSGSIZE limits each frame only). For each TCP connection
///   the guard compares the bytes the kernel received, minus those still in the kernel's queue,
///   with the bytes of the messages the daemon has been handed from it: what libzmq holds. Beyond
///   `maxHeldBytes` (a full receive queue of the largest messages) the connection is ended.
/// - **revoked keys**: with CURVE, every message carries its client's key; `cut(where:)` ends the
///   connections whose key was taken off the allow-list.
///
/// Connections are ended with shutdown(2) on libzmq's descriptor, which libzmq sees as the peer
/// leaving and closes itself. Before that the peer's address is checked again, so a descriptor
/// number reused by a newer connection is never ended by mistake.
final class ConnectionGuard {
    struct Limits {
        var maxConnections: Int
        var maxHeldBytes: UInt64
    }

    struct Connection {
        let descriptor: Int32
        let peer: String
        let acceptedAt: UInt64
        /// Whether the kernel reports TCP byte counts for it (not for ipc).
        let isTCP: Bool
        var deliveredBytes: UInt64 = 0
        var deliveredFrames: UInt64 = 0
        var messages: UInt64 = 0
        /// The client's CURVE key, from its messages.
        var userID: String?
    }

    /// Why connections were ended, for status and metrics.
    enum Reason: String, CaseIterable {
        case tooManyConnections = "too_many_connections"
        case messageTooLarge = "message_too_large"
        case keyRevoked = "key_revoked"
    }

    static let handshakeMilliseconds: Int32 = 2000
    /// A connection younger than this may still be about to send its first message.
    static let silentGraceNanoseconds: UInt64 = 500_000_000
    /// Bytes of ZeroMQ framing the guard allows besides the payload: per connection (greetings,
    /// handshake, CURVE's), per frame (frame and CURVE message headers), and per second of age
    /// (heartbeats, if a client sends them).
    static let handshakeAllowance: UInt64 = 8192, frameAllowance: UInt64 = 64, perSecondAllowance: UInt64 = 64
    /// How often the held bytes are checked.
    static let sweepNanoseconds: UInt64 = 20_000_000

    let monitor: ZMQSocket
    var limits: Limits
    private let logger: Logger
    private(set) var connections: [Int32: Connection] = [:]
    private(set) var ended: [Reason: UInt64] = [:]
    private(set) var accepted: UInt64 = 0
    private var lastSweep: UInt64 = 0
    private var lastLog: [Reason: UInt64] = [:]
    private var loggedCount: [Reason: UInt64] = [:]

    /// Starts monitoring `socket`: call before it binds, so that no connection goes unseen.
    init(context: ZMQContext, socket: ZMQSocket, name: String, limits: Limits, logger: Logger) throws(ZMQError) {
        self.limits = limits
        self.logger = logger
        let endpoint = "inproc://mpcd.monitor.\(name)"
        try socket.monitor(endpoint, events: ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED)
        monitor = try ZMQSocket(context, type: ZMQ_PAIR)
        try monitor.connect(endpoint)
    }

    var count: Int { connections.count }

    /// Reads the monitor's events: tracks connections as they come and go, and enforces the
    /// connection limit on every new one.
    func serviceEvents(now: UInt64) {
        while let frames = try? monitor.receive() {
            guard let first = frames.first, first.count >= 6 else { continue }
            let event = UInt16(first[0]) | UInt16(first[1]) << 8
            let value = Int32(bitPattern: UInt32(first[2]) | UInt32(first[3]) << 8 | UInt32(first[4]) << 16 | UInt32(first[5]) << 24)
            switch Int32(event) {
            case ZMQ_EVENT_ACCEPTED: admit(value, now: now)
            case ZMQ_EVENT_DISCONNECTED: connections.removeValue(forKey: value)
            default: break
            }
        }
    }

    private func admit(_ descriptor: Int32, now: UInt64) {
        accepted += 1
        var received: UInt64 = 0, queued: UInt64 = 0
        let isTCP = mpcd_tcp_received(descriptor, &received, &queued) == 0
        let connection = Connection(descriptor: descriptor, peer: Self.peerName(descriptor), acceptedAt: now, isTCP: isTCP)
        if connections.count >= limits.maxConnections {
            // the oldest connection still silent past its grace gives way; else the newcomer
            let silent = connections.values.filter { $0.messages == 0 && now - $0.acceptedAt > Self.silentGraceNanoseconds }
            guard let victim = silent.min(by: { $0.acceptedAt < $1.acceptedAt }) else {
                end(connection, .tooManyConnections, detail: "\(connections.count) connections open, none silent for long")
                return
            }
            end(victim, .tooManyConnections, detail: "silent for \(Double(now - victim.acceptedAt) * 1e-9) s, its place taken by a new connection")
            connections.removeValue(forKey: victim.descriptor)
        }
        connections[descriptor] = connection
    }

    /// Counts a message the daemon was handed from `descriptor` (its payload bytes and frames).
    func delivered(bytes: Int, frames: Int, from descriptor: Int32, userID: String?) {
        guard descriptor >= 0, var connection = connections[descriptor] else { return }
        connection.deliveredBytes += UInt64(bytes)
        connection.deliveredFrames += UInt64(frames)
        connection.messages += 1
        if let userID { connection.userID = userID }
        connections[descriptor] = connection
    }

    /// Every `sweepNanoseconds`: ends each TCP connection for which libzmq holds more than
    /// `maxHeldBytes` not yet handed to the daemon (a message in progress that can never be taken).
    func sweep(now: UInt64) {
        guard now - lastSweep >= Self.sweepNanoseconds else { return }
        lastSweep = now
        serviceEvents(now: now)
        for connection in connections.values where connection.isTCP {
            var received: UInt64 = 0, queued: UInt64 = 0
            guard mpcd_tcp_received(connection.descriptor, &received, &queued) == 0 else { continue }
            let taken = received > queued ? received - queued : 0
            let age = (now - connection.acceptedAt) / 1_000_000_000
            let accounted = connection.deliveredBytes + Self.handshakeAllowance + Self.frameAllowance * connection.deliveredFrames
                + Self.perSecondAllowance * age
            if taken > accounted, taken - accounted > limits.maxHeldBytes {
                end(connection, .messageTooLarge, detail: "\(taken - accounted) bytes of an unfinished message; the limit is \(limits.maxHeldBytes)")
                connections.removeValue(forKey: connection.descriptor)
            }
        }
    }

    /// Ends every connection `predicate` picks (a revoked key); returns how many.
    @discardableResult
    func cut(where predicate: (Connection) -> Bool, reason: Reason, detail: String) -> Int {
        serviceEvents(now: monotonicNanoseconds())
        let chosen = connections.values.filter(predicate)
        for connection in chosen {
            end(connection, reason, detail: detail)
            connections.removeValue(forKey: connection.descriptor)
        }
        return chosen.count
    }

    /// Ends the connection a message came from.
    func cut(descriptor: Int32, reason: Reason, detail: String) {
        serviceEvents(now: monotonicNanoseconds())
        guard let connection = connections.removeValue(forKey: descriptor) else { return }
        end(connection, reason, detail: detail)
    }

    private func end(_ connection: Connection, _ reason: Reason, detail: String) {
        // the descriptor must still be this connection's: libzmq may have closed it and reused the number
        guard Self.peerName(connection.descriptor) == connection.peer else { return }
        _ = mpcd_shutdown(connection.descriptor)
        ended[reason, default: 0] += 1
        // at most one line a second per reason, with the count since: an attack must not flood the journal
        let now = monotonicNanoseconds()
        if now - (lastLog[reason] ?? 0) >= 1_000_000_000 {
            logger.warning("connection ended", metadata: [
                "peer": "\(connection.peer)", "reason": "\(reason.rawValue)", "detail": "\(detail)",
                "ended_since_last_line": "\(ended[reason, default: 0] - (loggedCount[reason] ?? 0))",
            ])
            lastLog[reason] = now
            loggedCount[reason] = ended[reason, default: 0]
        }
    }


    static func peerName(_ descriptor: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 128)
        return mpcd_peer_name(descriptor, &buffer, Int32(buffer.count)) == 0 ? String(cString: buffer) : "local"
    }
}
