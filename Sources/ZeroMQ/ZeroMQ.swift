import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A failed libzmq call: the operation and the errno it set.
public struct ZMQError: Error, CustomStringConvertible, Equatable {
    public let code: Int32
    public let operation: String

    public var description: String { "\(operation): \(reason) (errno \(code))" }
    /// libzmq's words for the errno.
    public var reason: String { String(cString: zmq_strerror(code)) }
}

/// The one way mpcd calls libzmq: retries EINTR, turns -1 into a typed error.
@discardableResult
func zmqCall(_ operation: @autoclosure () -> String, _ body: () -> Int32) throws(ZMQError) -> Int32 {
    while true {
        let rc = body()
        if rc != -1 { return rc }
        let error = zmq_errno()
        if error == EINTR { continue }
        throw ZMQError(code: error, operation: operation())
    }
}

public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init() throws(ZMQError) {
        guard let handle = zmq_ctx_new() else { throw ZMQError(code: zmq_errno(), operation: "zmq_ctx_new") }
        self.handle = handle
    }

    deinit {
        // Every socket sets linger 0, so termination never waits on unsent messages.
        _ = try? zmqCall("zmq_ctx_term") { zmq_ctx_term(handle) }
    }
}

/// One libzmq socket, owned by one thread at a time. Linger is 0: closing never blocks.
public final class ZMQSocket {
    let handle: UnsafeMutableRawPointer
    let context: ZMQContext

    public init(_ context: ZMQContext, type: Int32) throws(ZMQError) {
        guard let handle = zmq_socket(context.handle, type) else { throw ZMQError(code: zmq_errno(), operation: "zmq_socket") }
        self.handle = handle
        self.context = context
        try setOption(ZMQ_LINGER, Int32(0))
    }

    deinit { zmq_close(handle) }

    public func setOption(_ option: Int32, _ value: Int32) throws(ZMQError) {
        var v = value
        try zmqCall("zmq_setsockopt(\(option))") { zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) }
    }

    public func setOption(_ option: Int32, _ value: Int64) throws(ZMQError) {
        var v = value
        try zmqCall("zmq_setsockopt(\(option))") { zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) }
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws(ZMQError) {
        try zmqCall("zmq_setsockopt(\(option))") { bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) } }
    }

    public func bind(_ endpoint: String) throws(ZMQError) {
        try zmqCall("bind \(endpoint)") { zmq_bind(handle, endpoint) }
    }

    public func connect(_ endpoint: String) throws(ZMQError) {
        try zmqCall("connect \(endpoint)") { zmq_connect(handle, endpoint) }
    }

    /// The endpoint the last bind resolved to (a wildcard port becomes the real one).
    public var lastEndpoint: String {
        var buffer = [CChar](repeating: 0, count: 512)
        var size = buffer.count
        guard (try? zmqCall("zmq_getsockopt(ZMQ_LAST_ENDPOINT)") { zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) }) != nil else { return "" }
        return String(cString: buffer)
    }

    /// Waits up to `milliseconds` (-1: forever) for a message to read.
    public func waitReadable(milliseconds: Int) throws(ZMQError) -> Bool {
        try Self.waitReadable([self], milliseconds: milliseconds)[0]
    }

    /// Waits up to `milliseconds` for any of `sockets` to have a message; which ones do.
    ///
    /// A signal that interrupts the wait resumes it for what is left of the time, not the whole
    /// time again: SIGHUP sent 200 times a second had kept the daemon's loop in one wait, its ticks
    /// and a SIGTERM held off for as long as the signals came.
    public static func waitReadable(_ sockets: [ZMQSocket], descriptors: [Int32] = [], milliseconds: Int) throws(ZMQError) -> [Bool] {
        var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
            + descriptors.map { zmq_pollitem_t(socket: nil, fd: $0, events: Int16(ZMQ_POLLIN), revents: 0) }
        let count = Int32(items.count)
        let deadline = milliseconds > 0 ? Self.monotonicMilliseconds() + milliseconds : 0
        var timeout = milliseconds
        while items.withUnsafeMutableBufferPointer({ zmq_poll($0.baseAddress, count, timeout) }) == -1 {
            let error = zmq_errno()
            guard error == EINTR else { throw ZMQError(code: error, operation: "zmq_poll") }
            if milliseconds > 0 {
                timeout = deadline - Self.monotonicMilliseconds()
                if timeout <= 0 { return items.map { _ in false } }
            }
        }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }

    private static func monotonicMilliseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1000 + now.tv_nsec / 1_000_000
    }

    /// A message read with `receive(limit:)`.
    public enum Incoming {
        /// The frames, the socket descriptor of the connection it came from (-1: unknown, as for
        /// ipc and inproc), and the user id the ZAP handler gave that connection.
        case message(frames: [[UInt8]], source: Int32, userID: String?)
        /// A message over the limit: only its first frame (a ROUTER's routing id) was kept, the rest
        /// was read and discarded without being copied.
        case oversized(identity: [UInt8], source: Int32, bytes: Int, frames: Int)
    }

    /// The frame and byte limits of one message, after the first frame (a ROUTER's routing id).
    public struct MessageLimit: Sendable {
        public var bytes: Int
        public var frames: Int
        public init(bytes: Int, frames: Int) {
            self.bytes = bytes
            self.frames = frames
        }
    }

    /// One whole multipart message if one is waiting, without blocking; nil otherwise. A message
    /// whose frames after the first add up to more than `limit` is read to its end (libzmq hands
    /// over messages whole) but not copied, and returned as `.oversized`.
    public func receive(limit: MessageLimit) throws(ZMQError) -> Incoming? {
        var frames: [[UInt8]] = []
        var message = zmq_msg_t()
        zmq_msg_init(&message)
        defer { zmq_msg_close(&message) }
        var source: Int32 = -1, userID: String?, bytes = 0, count = 0
        while true {
            do {
                try zmqCall("zmq_msg_recv") { zmq_msg_recv(&message, handle, count == 0 ? ZMQ_DONTWAIT : 0) }
            } catch where error.code == EAGAIN && count == 0 {
                return nil
            }
            let size = zmq_msg_size(&message)
            if count == 1 {
                // the connection's properties travel with the payload frames, not the routing id
                source = zmq_msg_get(&message, ZMQ_SRCFD)
                if let id = zmq_msg_gets(&message, "User-Id") { userID = String(cString: id) }
            }
            if count > 0 { bytes += size }
            count += 1
            if count == 1 || (bytes <= limit.bytes && count - 1 <= limit.frames) {
                frames.append(size == 0 ? [] : Array(UnsafeRawBufferPointer(start: zmq_msg_data(&message), count: size)))
            } else if frames.count > 1 {
                frames.removeSubrange(1...)  // over the limit: keep nothing but the routing id
            }
            if zmq_msg_more(&message) == 0 {
                if bytes > limit.bytes || count - 1 > limit.frames {
                    return .oversized(identity: frames.first ?? [], source: source, bytes: bytes, frames: count - 1)
                }
                return .message(frames: frames, source: source, userID: userID)
            }
        }
    }

    /// One whole multipart message if one is waiting, without blocking; nil otherwise.
    public func receive() throws(ZMQError) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var message = zmq_msg_t()
        zmq_msg_init(&message)
        defer { zmq_msg_close(&message) }
        while true {
            do {
                try zmqCall("zmq_msg_recv") { zmq_msg_recv(&message, handle, frames.isEmpty ? ZMQ_DONTWAIT : 0) }
            } catch where error.code == EAGAIN && frames.isEmpty {
                return nil
            }
            let size = zmq_msg_size(&message)
            let data = zmq_msg_data(&message)
            frames.append(size == 0 ? [] : Array(UnsafeRawBufferPointer(start: data, count: size)))
            if zmq_msg_more(&message) == 0 { return frames }
        }
    }

    /// What became of a message sent without blocking.
    public enum SendOutcome: Equatable {
        case sent
        /// The peer's queue is full (a slow reader): dropped.
        case queueFull
        /// No peer of that routing id (gone, or never there; ROUTER_MANDATORY sockets only): dropped.
        case peerGone
    }

    /// Sends a multipart message without blocking: a slow reader never stalls the caller.
    @discardableResult
    public func send(_ frames: [[UInt8]]) throws(ZMQError) -> Bool { try trySend(frames) == .sent }

    /// Sends a multipart message without blocking, and says whether it went.
    public func trySend(_ frames: [[UInt8]]) throws(ZMQError) -> SendOutcome {
        for (i, frame) in frames.enumerated() {
            let flags = ZMQ_DONTWAIT | (i + 1 < frames.count ? ZMQ_SNDMORE : 0)
            do {
                try zmqCall("zmq_send") { frame.withUnsafeBytes { Int32(zmq_send(handle, $0.baseAddress, $0.count, flags)) } }
            } catch where error.code == EAGAIN || error.code == EHOSTUNREACH {
                // Only the first frame can fail this way: libzmq queues the rest of a message
                // atomically once its first frame is accepted.
                return error.code == EAGAIN ? .queueFull : .peerGone
            }
        }
        return .sent
    }

    /// Publishes this socket's connection events on `endpoint` (an inproc PAIR socket reads them).
    public func monitor(_ endpoint: String, events: Int32) throws(ZMQError) {
        try zmqCall("zmq_socket_monitor") { zmq_socket_monitor(handle, endpoint, events) }
    }
}

/// The socket types callers open, so that they need not import libzmq's C constants.
public enum ZMQSocketType {
    public static let request = ZMQ_REQ
    public static let reply = ZMQ_REP
    public static let router = ZMQ_ROUTER
    public static let dealer = ZMQ_DEALER
    public static let pair = ZMQ_PAIR
}

/// The socket options mpcd sets.
public enum ZMQOption {
    public static let maxMessageSize = ZMQ_MAXMSGSIZE
    public static let sendHighWaterMark = ZMQ_SNDHWM
    public static let receiveHighWaterMark = ZMQ_RCVHWM
    public static let routerMandatory = ZMQ_ROUTER_MANDATORY
    public static let handshakeInterval = ZMQ_HANDSHAKE_IVL
    public static let curveServer = ZMQ_CURVE_SERVER
    public static let curveSecretKey = ZMQ_CURVE_SECRETKEY
}

/// The socket monitor's events mpcd watches.
public enum ZMQEvent {
    public static let accepted = ZMQ_EVENT_ACCEPTED
    public static let disconnected = ZMQ_EVENT_DISCONNECTED

    /// The event and its value (a descriptor, for these two) from a monitor message's first
    /// frame, as libzmq lays it out: a 16-bit event and a 32-bit value, little-endian; nil for a
    /// frame too short to be one.
    public static func decode(_ frame: [UInt8]) -> (event: Int32, value: Int32)? {
        guard frame.count >= 6 else { return nil }
        let event = UInt16(frame[0]) | UInt16(frame[1]) << 8
        let value = UInt32(frame[2]) | UInt32(frame[3]) << 8 | UInt32(frame[4]) << 16 | UInt32(frame[5]) << 24
        return (Int32(event), Int32(bitPattern: value))
    }
}

/// CURVE keys (Z85 text).
public enum ZMQCurve {
    /// A new key pair, or nil when this libzmq has no CURVE support.
    public static func keyPair() -> (publicKey: String, secretKey: String)? {
        var publicKey = [CChar](repeating: 0, count: 41), secretKey = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&publicKey, &secretKey) == 0 else { return nil }
        return (String(cString: publicKey), String(cString: secretKey))
    }

    /// Whether `key` is a 40-character Z85 key.
    public static func isValidKey(_ key: String) -> Bool {
        guard key.utf8.count == 40 else { return false }
        var raw = [UInt8](repeating: 0, count: 32)
        return zmq_z85_decode(&raw, key) != nil
    }

    /// The public key that goes with a Z85 secret key.
    public static func publicKey(forSecret secret: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&buffer, secret) == 0 else { return nil }
        return String(cString: buffer)
    }

    /// 32 raw key bytes as Z85 text.
    public static func z85(_ raw: [UInt8]) -> String? {
        guard raw.count == 32 else { return nil }
        var text = [CChar](repeating: 0, count: 41)
        var bytes = raw
        return zmq_z85_encode(&text, &bytes, 32) != nil ? String(cString: text) : nil
    }
}
