import CSystemShims
import Foundation
import Models
import Planners

/// Prometheus's scrape endpoint: a small HTTP/1.1 server that answers `GET /metrics` (and `HEAD`),
/// served between ticks by the serving thread, never blocking it. One request per connection; a
/// client that sends more than `maxRequestBytes` of headers, or takes longer than
/// `timeoutNanoseconds` to send them, is answered with an error or cut off, and at most
/// `maxConnections` are open at once, a newcomer taking the place of the one that loses least.
public final class MetricsHTTPServer {
    static let maxConnections = 8
    static let maxRequestBytes = 8192
    static let timeoutNanoseconds: UInt64 = 2_000_000_000
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private struct Connection {
        let descriptor: Int32
        let openedAt: UInt64
        var request: [UInt8] = []
        var response: [UInt8]?
        var sent = 0
        /// The response is out and the write side shut: what the client still sends is read and
        /// dropped until it closes, so that closing never resets the connection under a response
        /// it has not read yet (a close with unread input sends a reset).
        var draining = false
    }

    private let listener: Int32
    /// The address bound (with the port the kernel chose, for port 0).
    public let address: MetricsListenAddress
    private var connections: [Connection] = []

    init(_ requested: MetricsListenAddress) throws(ServerError) {
        var descriptor: Int32 = -1, port: Int32 = 0
        let error = mpcd_tcp_listen(requested.host, Int32(requested.port), 16, &descriptor, &port)
        guard error == 0 else { throw ServerError.bind(endpoint: "http://\(requested)", reason: String(cString: strerror(error))) }
        listener = descriptor
        var bound = requested
        bound.port = Int(port)
        address = bound
    }

    deinit {
        for connection in connections { close(connection.descriptor) }
        close(listener)
    }

    /// The descriptors worth waking up for: the listener and connections still sending requests or
    /// closing.
    var descriptors: [Int32] { [listener] + connections.filter { $0.response == nil || $0.draining }.map(\.descriptor) }

    /// Most connections accepted per call: a connection flood takes turns with the ticks.
    static let acceptsPerCall = 32
    /// How long a metrics page is served again before it is made anew: the page costs up to a few
    /// milliseconds of the serving thread with many sessions, so a scrape flood costs at most one a
    /// second (Prometheus scrapes every few seconds).
    static let pageLifetimeNanoseconds: UInt64 = 1_000_000_000
    private var page: (text: [UInt8], madeAt: UInt64)?

    /// Accepts, reads and answers what is ready now, stopping at `deadline` (the next tick's
    /// margin); `body` makes the metrics text when a scrape asks for one and the last page is old.
    func serve(now: UInt64, deadline: UInt64, body: () -> String) {
        let makePage = { [self] () -> [UInt8] in
            if let page, now >= page.madeAt, now - page.madeAt < Self.pageLifetimeNanoseconds { return page.text }
            let text = Array(body().utf8)
            page = (text, now)
            return text
        }
        // answer what has come in first, then let newcomers in, each answered as it comes
        step(now: now, deadline: deadline, page: makePage)
        var accepted = 0
        while accepted < Self.acceptsPerCall, monotonicNanoseconds() < deadline {
            let descriptor = mpcd_accept_nonblocking(listener)
            guard descriptor >= 0 else { break }
            accepted += 1
            if connections.count >= Self.maxConnections {
                // a newcomer always gets in (one that sends its request at once is answered in the
                // same pass): silent, slow or never-reading clients cannot keep a scraper out. The
                // connection that loses least gives way, oldest first: one whose response is all
                // sent (it waits in the client's own buffer, the daemon's FIN after it), then one
                // still sending its request, then one whose response is part sent
                func rank(_ c: Connection) -> (Int, UInt64) { (c.draining ? 0 : c.response == nil ? 1 : 2, c.openedAt) }
                let yielding = connections.indices.min { rank(connections[$0]) < rank(connections[$1]) }!
                close(connections[yielding].descriptor)
                connections.remove(at: yielding)
            }
            // answered at once if its request is in: in a burst of newcomers, each is served before
            // the next may push it out (the one pushed out then has its answer whole, a FIN after it)
            var connection = Connection(descriptor: descriptor, openedAt: monotonicNanoseconds())
            if advance(&connection, now: now, deadline: deadline, page: makePage) { connections.append(connection) }
        }
    }

    private func step(now: UInt64, deadline: UInt64, page: () -> [UInt8]) {
        var open: [Connection] = []
        for var connection in connections where advance(&connection, now: now, deadline: deadline, page: page) {
            open.append(connection)
        }
        connections = open
    }

    /// Reads, answers or drains one connection as far as it can go now; false once it is closed.
    private func advance(_ connection: inout Connection, now: UInt64, deadline: UInt64, page: () -> [UInt8]) -> Bool {
        if connection.response == nil && monotonicNanoseconds() < deadline { read(&connection, page: page) }
        if connection.response != nil && !connection.draining { write(&connection) }
        if let response = connection.response, connection.sent >= response.count, !connection.draining {
            shutdown(connection.descriptor, Int32(SHUT_WR))
            connection.draining = true
        }
        let finished = connection.draining && Self.drain(connection.descriptor)
        let expired = now > connection.openedAt && now - connection.openedAt > Self.timeoutNanoseconds
        guard connection.descriptor < 0 || finished || expired else { return true }
        if connection.descriptor >= 0 { close(connection.descriptor) }
        return false
    }

    private func read(_ connection: inout Connection, page: () -> [UInt8]) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while connection.request.count <= Self.maxRequestBytes {
            let n = buffer.withUnsafeMutableBytes { recv(connection.descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                connection.request += buffer[0..<n]
                if let response = respond(to: connection.request, page: page) {
                    connection.response = response
                    return
                }
            } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                // the client closed (or broke) the connection before a whole request
                close(connection.descriptor)
                connection = Connection(descriptor: -1, openedAt: connection.openedAt)
                return
            } else {
                return
            }
        }
        connection.response = Self.response(status: 431, reason: "Request Header Fields Too Large", body: "a request is at most \(Self.maxRequestBytes) bytes\n")
    }

    /// Reads and drops what the client sends; true once it has closed its side (or broken).
    private static func drain(_ descriptor: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { continue }
            return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        }
    }

    private func write(_ connection: inout Connection) {
        guard let response = connection.response else { return }
        while connection.sent < response.count {
            let n = response.withUnsafeBytes {
                send(connection.descriptor, $0.baseAddress! + connection.sent, $0.count - connection.sent, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            if n > 0 {
                connection.sent += n
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                return
            } else {
                connection.sent = response.count  // the client has gone: nothing more to send
            }
        }
    }

    /// The response to a complete request head, or nil while the head is incomplete.
    private func respond(to request: [UInt8], page: () -> [UInt8]) -> [UInt8]? {
        guard let end = Self.headEnd(request) else { return nil }
        // bytes, not Characters: "\r\n" is one Character in Swift
        let lineEnd = request[0..<end].firstIndex { $0 == 0x0D || $0 == 0x0A } ?? end
        let words = String(decoding: request[0..<lineEnd], as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
        guard words.count == 3, words[2].hasPrefix("HTTP/1.") else {
            return Self.response(status: 400, reason: "Bad Request", body: "expected an HTTP/1.x request line\n")
        }
        guard words[0] == "GET" || words[0] == "HEAD" else {
            return Self.response(status: 405, reason: "Method Not Allowed", body: "only GET and HEAD\n", extra: "Allow: GET, HEAD\r\n")
        }
        let bodyless = words[0] == "HEAD"
        switch words[1].prefix(while: { $0 != "?" }) {
        case "/metrics": return Self.response(status: 200, reason: "OK", content: page(), contentType: Self.contentType, headOnly: bodyless)
        case "/": return Self.response(status: 200, reason: "OK", body: "mpcd: metrics at /metrics\n", headOnly: bodyless)
        default: return Self.response(status: 404, reason: "Not Found", body: "mpcd serves /metrics only\n", headOnly: bodyless)
        }
    }

    /// Where the request head ends (after its blank line), accepting bare LF line ends too.
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        var i = 0
        while i + 1 < bytes.count {
            if bytes[i] == 0x0A && bytes[i + 1] == 0x0A { return i + 2 }
            if i + 3 < bytes.count && bytes[i] == 0x0D && bytes[i + 1] == 0x0A && bytes[i + 2] == 0x0D && bytes[i + 3] == 0x0A { return i + 4 }
            i += 1
        }
        return nil
    }

    static func response(status: Int, reason: String, body: String, contentType: String = "text/plain; charset=utf-8",
                         extra: String = "", headOnly: Bool = false) -> [UInt8] {
        response(status: status, reason: reason, content: Array(body.utf8), contentType: contentType, extra: extra, headOnly: headOnly)
    }

    static func response(status: Int, reason: String, content: [UInt8], contentType: String = "text/plain; charset=utf-8",
                         extra: String = "", headOnly: Bool = false) -> [UInt8] {
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(content.count)\r\n\(extra)Connection: close\r\n\r\n"
        return Array(head.utf8) + (headOnly ? [] : content)
    }
}
