import CSystemShims
import Foundation
import Logging
import Planners
import ZeroMQ

/// Watches the connections of a socket (the data socket, and the control socket with a smaller
/// limit), which libzmq accepts and reads on its own thread, and ends the ones that would otherwise
/// exhaust the daemon (docs/reliability.md, "Policies under
/// pressure"):
///
/// - **too many**: beyond `maxConnections` (kept well below the open-files limit) a new connection
///   takes the place of one that has sent no message within `silentGraceNanoseconds` of being
///   accepted, or else of the one that has gone longest without a message, if that is at least
///   `idleNanoseconds`; otherwise the newcomer is closed. Connections that never finish
///   their ZeroMQ handshake are closed by libzmq after `handshakeMilliseconds`.
/// - **a message too big to hold**: libzmq keeps a multipart message until its last frame has
///   arrived, whatever its size (ZMQOption.maxMessageSize limits each frame only), at 64 bytes a frame even
///   when the frame is empty. For each TCP connection the guard notes the bytes the kernel had
///   delivered to libzmq (received, less those still queued: TCP_INFO, SIOCINQ) when the daemon was
///   last handed a message from it; bytes libzmq has taken since, and not passed on, belong to
///   messages still being gathered. Beyond `maxHeldBytes` (and small allowances for the handshake
///   and heartbeats) the connection is ended.
/// - **revoked keys**: with CURVE, every message carries its client's key; `cut(where:)` ends the
///   connections whose key was taken off the allow-list.
///
/// Connections are ended with shutdown(2) on libzmq's descriptor, which libzmq sees as the peer
/// leaving and closes itself. Before that the descriptor's socket inode is checked against the one
/// seen when it was accepted, so a descriptor number libzmq has reused for a newer connection is
/// never ended by mistake. ipc connections have no TCP counters: they count towards the limit only.
final class ConnectionGuard {
    struct Limits {
        var maxConnections: Int
        var maxHeldBytes: UInt64

        init(maxConnections: Int, maxMessageBytes: Int) {
            self.maxConnections = maxConnections
            maxHeldBytes = ServerConfiguration.heldBytes(maxMessageBytes: maxMessageBytes)
        }
    }

    /// A connection told apart from a later one under the same descriptor number.
    struct Identity: Hashable {
        let descriptor: Int32
        let inode: UInt64
    }

    struct Connection {
        var identity: Identity { Identity(descriptor: descriptor, inode: inode) }
        let descriptor: Int32
        let peer: String
        /// The socket's inode: the same descriptor number may later be another connection.
        let inode: UInt64
        let acceptedAt: UInt64
        /// Whether the kernel reports TCP byte counts for it (not for ipc).
        let isTCP: Bool
        var messages: UInt64 = 0
        /// When the daemon was last handed a message from it (its acceptance before the first), and
        /// how many bytes libzmq had then taken from the kernel.
        var lastMessageAt: UInt64
        var takenAtLastMessage: UInt64
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
    /// When the limit is reached, a connection that has sent no message for this long since it
    /// was accepted, or none for `idleNanoseconds` since its last, may give its place to a newcomer.
    static let silentGraceNanoseconds: UInt64 = 500_000_000
    static let idleNanoseconds: UInt64 = 1_000_000_000
    /// Bytes before the first message (greetings, CURVE's handshake), and heartbeats (ZMTP PINGs a
    /// client may send while it has nothing to say): so much a second since its last message, up to
    /// a cap. A client silent for minutes while sending heartbeats reaches the cap and is ended;
    /// its ZeroMQ socket reconnects by itself.
    static let handshakeAllowance = ServerConfiguration.handshakeAllowance
    static let heartbeatAllowancePerSecond: UInt64 = 4096, heartbeatAllowanceCap = ServerConfiguration.heartbeatAllowanceCap
    /// How often the held bytes are checked.
    static let sweepNanoseconds: UInt64 = 20_000_000

    let monitor: ZMQSocket
    var limits: Limits
    /// Which socket it watches ("data", "control"), in its log lines.
    let name: String
    private let logger: Logger
    private(set) var connections: [Int32: Connection] = [:]
    /// Connections gone since the last `takeDeparted()`: closed by their peers or ended here.
    private var departed: [Connection] = []
    private(set) var ended: [Reason: UInt64] = [:]
    private(set) var accepted: UInt64 = 0
    private var lastSweep: UInt64 = 0
    private var lastLog: [Reason: UInt64] = [:]
    private var loggedCount: [Reason: UInt64] = [:]

    /// Starts monitoring `socket`: call before it binds, so that no connection goes unseen.
    init(context: ZMQContext, socket: ZMQSocket, name: String, limits: Limits, logger: Logger) throws(ZMQError) {
        self.limits = limits
        self.name = name
        self.logger = logger
        let endpoint = "inproc://mpcd.monitor.\(name)"
        try socket.monitor(endpoint, events: ZMQEvent.accepted | ZMQEvent.disconnected)
        monitor = try ZMQSocket(context, type: ZMQSocketType.pair)
        try monitor.connect(endpoint)
    }

    var count: Int { connections.count }

    /// Reads the monitor's events: tracks connections as they come and go, and enforces the
    /// connection limit on every new one.
    func serviceEvents(now: UInt64) {
        while let frames = try? monitor.receive() {
            guard let first = frames.first, let (event, value) = ZMQEvent.decode(first) else { continue }
            switch event {
            case ZMQEvent.accepted: admit(value, now: now)
            case ZMQEvent.disconnected: if let gone = connections.removeValue(forKey: value) { departed.append(gone) }
            default: break
            }
        }
    }

    private func admit(_ descriptor: Int32, now: UInt64) {
        accepted += 1
        let taken = Self.taken(descriptor)
        let connection = Connection(descriptor: descriptor, peer: Self.peerName(descriptor), inode: Self.inode(descriptor),
                                    acceptedAt: now, isTCP: taken != nil, lastMessageAt: now, takenAtLastMessage: taken ?? 0)
        if connections.count >= limits.maxConnections {
            // one that never sent a message gives way first, then the one quiet longest, if quiet
            // long enough; else the newcomer
            func quietFor(_ c: Connection) -> UInt64 { now > c.lastMessageAt ? now - c.lastMessageAt : 0 }
            let candidates = connections.values.filter {
                quietFor($0) >= ($0.messages == 0 ? Self.silentGraceNanoseconds : Self.idleNanoseconds)
            }
            guard let quietest = candidates.min(by: { ($0.messages == 0 ? 0 : 1, $0.lastMessageAt) < ($1.messages == 0 ? 0 : 1, $1.lastMessageAt) }) else {
                end(connection, .tooManyConnections, detail: "\(connections.count) connections open, all active")
                return
            }
            end(quietest, .tooManyConnections, detail: "quiet for \(Double(now - quietest.lastMessageAt) * 1e-9) s, its place taken by a new connection")
            connections.removeValue(forKey: quietest.descriptor)
        }
        connections[descriptor] = connection
    }

    /// The connections gone since the last call, for their sessions to end.
    func takeDeparted() -> [Connection] {
        defer { departed.removeAll(keepingCapacity: true) }
        return departed
    }

    /// Counts a message the daemon was handed from `descriptor`: what libzmq had taken from that
    /// connection until now is accounted for. Returns the connection it came from (nil if unknown).
    @discardableResult
    func delivered(from descriptor: Int32, userID: String?, now: UInt64) -> Connection? {
        guard descriptor >= 0 else { return nil }
        if let known = connections[descriptor], known.inode != Self.inode(descriptor) {
            // the number is a newer connection's, whose acceptance (and the old one's departure)
            // the monitor has not been read for yet: read it, or the message would be the old one's
            serviceEvents(now: now)
        }
        guard var connection = connections[descriptor] else { return nil }
        connection.messages += 1
        connection.lastMessageAt = now
        if connection.isTCP, let taken = Self.taken(descriptor) { connection.takenAtLastMessage = taken }
        if let userID { connection.userID = userID }
        connections[descriptor] = connection
        return connection
    }

    /// Every `sweepNanoseconds`: ends each TCP connection for which libzmq holds more than
    /// `maxHeldBytes` not yet handed to the daemon (a message in progress that can never be taken).
    func sweep(now: UInt64) {
        guard now >= lastSweep &+ Self.sweepNanoseconds else { return }
        lastSweep = now
        serviceEvents(now: now)
        for connection in connections.values where connection.isTCP {
            guard let taken = Self.taken(connection.descriptor), taken > connection.takenAtLastMessage else { continue }
            let held = taken - connection.takenAtLastMessage
            let quiet = now > connection.lastMessageAt ? (now - connection.lastMessageAt) / 1_000_000_000 : 0
            let allowance = (connection.messages == 0 ? Self.handshakeAllowance : 0)
                + min(Self.heartbeatAllowancePerSecond * quiet, Self.heartbeatAllowanceCap)
            if held > limits.maxHeldBytes + allowance {
                end(connection, .messageTooLarge, detail: "libzmq holds \(held) bytes from it not yet handed over (a message too large in the making, or messages sent faster than they are read); the limit is \(limits.maxHeldBytes)")
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
        guard Self.inode(connection.descriptor) == connection.inode else { return }
        _ = mpcd_shutdown(connection.descriptor)
        departed.append(connection)
        ended[reason, default: 0] += 1
        // at most one line a second per reason, with the count since: an attack must not flood the journal
        let now = monotonicNanoseconds()
        if lastLog[reason] == nil || now >= lastLog[reason]! &+ 1_000_000_000 {
            logger.warning("connection ended", metadata: [
                "socket": "\(name)", "peer": "\(connection.peer)", "reason": "\(reason.rawValue)", "detail": "\(detail)",
                "ended_since_last_line": "\(ended[reason, default: 0] - (loggedCount[reason] ?? 0))",
            ])
            lastLog[reason] = now
            loggedCount[reason] = ended[reason, default: 0]
        }
    }

    /// Bytes libzmq has taken from a TCP connection (received less still queued), or nil (not TCP).
    static func taken(_ descriptor: Int32) -> UInt64? {
        var received: UInt64 = 0, queued: UInt64 = 0
        guard mpcd_tcp_received(descriptor, &received, &queued) == 0 else { return nil }
        return received > queued ? received - queued : 0
    }

    static func inode(_ descriptor: Int32) -> UInt64 {
        var info = stat()
        return fstat(descriptor, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    static func peerName(_ descriptor: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 128)
        guard mpcd_peer_name(descriptor, &buffer, Int32(buffer.count)) == 0 else { return "local" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
