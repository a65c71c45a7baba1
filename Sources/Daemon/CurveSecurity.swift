import Foundation
import ZeroMQ

/// The ZAP handler: answers libzmq's authentication requests for the CURVE server socket.
final class ZAPHandler {
    static let endpoint = "inproc://zeromq.zap.01"
    let socket: ZMQSocket
    private(set) var authorizedKeys: Set<String>
    private(set) var refused: UInt64 = 0

    init(context: ZMQContext, authorizedKeys: Set<String>) throws {
        socket = try ZMQSocket(context, type: ZMQSocketType.reply)
        try socket.bind(Self.endpoint)
        self.authorizedKeys = authorizedKeys
    }

    func update(authorizedKeys: Set<String>) { self.authorizedKeys = authorizedKeys }

    /// Answers every waiting request: 200 for an allowed CURVE key, 400 for anything else.
    func serve() {
        while let frames = try? socket.receive() {
            guard frames.count >= 6 else { continue }
            let version = frames[0], requestID = frames[1]
            let mechanism = String(decoding: frames[5], as: UTF8.self)
            var allowed = false, key = ""
            if mechanism == "CURVE", frames.count >= 7, frames[6].count == 32 {
                if let text = ZMQCurve.z85(frames[6]) {
                    key = text
                    allowed = authorizedKeys.contains(key)
                }
            }
            if !allowed { refused += 1 }
            let status = allowed ? "200" : "400"
            let text = allowed ? "OK" : "client key not in authorized_keys"
            // the user id is the client's key: every message from the connection carries it ("User-Id"),
            // so a key taken off the list later can be recognised and cut
            _ = try? socket.send([version, requestID, Array(status.utf8), Array(text.utf8), Array((allowed ? key : "").utf8), []])
        }
    }
}
