import CSystemShims
import ControlProtocol
import Foundation
import Models
import Planners
import ZeroMQ

/// The operator's side of the daemon: the local control socket mpcctl talks to (JSON requests and
/// replies) and systemd's notices. Status and metrics are in ControlStatus.swift, reload and policy
/// load in Reconfiguration.swift.
extension Server {
    /// Most connections the control socket keeps at once. Operators' tools connect for a request
    /// or two; libzmq aborts the daemon when it cannot accept on an ipc socket for want of
    /// descriptors, so connections beyond these, silent ones first, are ended by a guard.
    static let maxControlConnections = 16

    /// Binds the control socket. An ipc socket file is claimed first (a lock held while the daemon
    /// lives: a second daemon refuses to start rather than take it over), in a folder of this
    /// user's, with mode 0660 from the start.
    func bindControl() throws {
        let endpoint = configuration.controlEndpoint
        let socket = try ZMQSocket(context, type: ZMQSocketType.router)
        try socket.setOption(ZMQOption.maxMessageSize, Int64(ControlRequest.maxBytes))
        try socket.setOption(ZMQOption.handshakeInterval, ConnectionGuard.handshakeMilliseconds)
        controlGuard = try ConnectionGuard(context: context, socket: socket, name: "control",
                                           limits: .init(maxConnections: Self.maxControlConnections, maxMessageBytes: ControlRequest.maxBytes),
                                           logger: logger)
        do {
            if endpoint.hasPrefix("ipc://") {
                let file = try IPCSocketFile(path: String(endpoint.dropFirst(6)), createFolder: true)
                try file.bind(socket)
                controlSocketFile = file
            } else {
                logger.warning("the control socket is on TCP, as configured: anyone who reaches it can reconfigure the daemon", metadata: ["endpoint": "\(endpoint)"])
                try socket.bind(endpoint)
            }
        } catch let error as ZMQError {
            throw ServerError.bind(endpoint: endpoint, reason: error.reason)
        }
        control = socket
        controlEndpoint = endpoint
    }

    func closeControl() {
        control = nil
        controlGuard = nil
        metricsServer = nil
        controlSocketFile?.release()
        controlSocketFile = nil
    }

    /// Most control requests answered per call: a flood of requests takes turns with the ticks.
    static let controlRequestsPerCall = 8

    /// Between ticks, until `deadline`: answers control requests, finishes a reload or policy load
    /// that has been prepared off this thread, starts one on SIGHUP, and tells systemd how it is.
    func serviceControlPlane(now: UInt64, until deadline: UInt64) {
        zap?.serve()
        for _ in 0..<Self.controlRequestsPerCall {
            guard monotonicNanoseconds() < deadline, let control,
                  let incoming = try? control.receive(limit: .init(bytes: ControlRequest.maxBytes, frames: 3)) else { break }
            switch incoming {
            case let .message(frames, source, _) where frames.count >= 2:
                controlGuard?.delivered(from: source, userID: nil, now: monotonicNanoseconds())
                let isRequest = frames[1].isEmpty
                let envelope = isRequest ? [frames[0], []] : [frames[0]]
                guard frames.count == envelope.count + 1 else {
                    reply(to: envelope, .failure("a request is one frame of JSON"))
                    continue
                }
                if let answered = answer(frames.last!, envelope: envelope) { reply(to: envelope, answered) }
            case let .oversized(identity, source, _, _):
                reply(to: [identity], .failure("a request is one frame of at most \(ControlRequest.maxBytes) bytes"))
                controlGuard?.cut(descriptor: source, reason: .messageTooLarge, detail: "a control request over \(ControlRequest.maxBytes) bytes")
            default:
                continue
            }
        }
        metricsServer?.serve(now: now, deadline: deadline) { metrics(now: monotonicNanoseconds()) }
        finishReconfiguration()
        if reloadRequested.exchange(false, ordering: .relaxed) || mpcd_take_reload_request() != 0 { startReconfiguration(.reload, requester: nil) }
        if let interval = notifier.watchdogInterval, now - lastWatchdog >= interval / 2,
           configuration.server.mode == .lockstep || lastTickOnTime {
            // only while ticks are on time: a hung or overrunning loop lets systemd restart it
            lastWatchdog = now
            notifier.send("WATCHDOG=1")
        }
        if notifier.isActive, now - lastStatusNotice >= 5_000_000_000 {
            lastStatusNotice = now
            notifier.send("STATUS=\(statusLine())")
        }
    }

    func reply(to envelope: [[UInt8]], _ reply: ControlReply) {
        _ = try? control?.send(envelope + [reply.bytes])
    }

    /// The reply to a request, or nil when it comes later (a reload or policy load in progress).
    func answer(_ request: [UInt8], envelope: [[UInt8]]) -> ControlReply? {
        let parsed: ControlRequest
        switch ControlRequest.decode(request) {
        case let .success(request): parsed = request
        case let .failure(error): return .failure(error.reason)
        }
        switch parsed.command {
        case .ping:
            var reply = ControlReply(ok: true)
            reply.pid = Int(getpid())
            return reply
        case .status:
            var reply = ControlReply(ok: true)
            reply.status = status(now: monotonicNanoseconds())
            return reply
        case .sessions:
            var reply = ControlReply(ok: true)
            reply.sessions = sessionList(now: monotonicNanoseconds())
            return reply
        case .metrics:
            var reply = ControlReply(ok: true)
            reply.text = metrics(now: monotonicNanoseconds())
            return reply
        case .reload: return startReconfiguration(.reload, requester: envelope)
        case .policyLoad: return startReconfiguration(.policyLoad(path: parsed.path ?? ""), requester: envelope)
        case .record: return answerRecord(enable: parsed.enable ?? false)
        }
    }
}
