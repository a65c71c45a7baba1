import Foundation
import Planners
import ZeroMQ

/// The data socket's transport: waiting for it, draining what arrived within a budget, sending
/// without blocking.
extension Server {
    /// How long before a tick the loop stops sleeping and spins: waking a sleeping thread takes
    /// tens to hundreds of microseconds on a virtual machine, spinning does not.
    static let tickSpinNanoseconds: UInt64 = 200_000

    /// Waits until a message is readable or `deadline` (monotonic ns) passes, whichever is first.
    /// With `busy_poll_us` it first checks the socket in a loop for that long instead of sleeping.
    /// zmq_poll counts whole milliseconds, so the last stretch before a tick is slept with
    /// clock_nanosleep and its final `tickSpinNanoseconds` spun, to start the tick on time.
    func waitForMessages(until deadline: UInt64, tick: Bool) {
        let sockets = [socket] + (control.map { [$0] } ?? []) + (zap.map { [$0.socket] } ?? []) + (connectionGuard.map { [$0.monitor] } ?? [])
            + (controlGuard.map { [$0.monitor] } ?? [])
        let descriptors = metricsServer?.descriptors ?? []
        if busyPollNanoseconds > 0 {
            let stop = min(deadline, monotonicNanoseconds() + busyPollNanoseconds)
            while monotonicNanoseconds() < stop {
                if (try? ZMQSocket.waitReadable(sockets, descriptors: descriptors, milliseconds: 0))?.contains(true) == true { return }
            }
        }
        let now = monotonicNanoseconds()
        guard deadline > now else { return }
        let remaining = deadline - now
        if remaining > 1_500_000 {
            // at most 100 ms, so a stop request or a watchdog notice is never late; with connections
            // to watch, at most the guard's sweep interval; with a reload running, 5 ms
            let cap: UInt64 = pendingReconfiguration != nil ? 5_000_000 : (connectionGuard?.count ?? 0) > 0 ? ConnectionGuard.sweepNanoseconds : 100_000_000
            let ms = Int(max(1_000_000, min(remaining - 1_000_000, cap)) / 1_000_000)
            _ = try? ZMQSocket.waitReadable(sockets, descriptors: descriptors, milliseconds: ms)
        } else if tick {
            if remaining > Self.tickSpinNanoseconds {
                let wake = deadline - Self.tickSpinNanoseconds
                var ts = timespec(tv_sec: Int(wake / 1_000_000_000), tv_nsec: Int(wake % 1_000_000_000))
                while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
            }
            while monotonicNanoseconds() < deadline {}
        } else {
            _ = try? ZMQSocket.waitReadable(sockets, descriptors: descriptors, milliseconds: 1)
        }
    }

    /// Most messages read per wake-up, and the longest a wake-up reads: a peer flooding the socket
    /// cannot keep the loop from its tick (each session keeps only its newest observation anyway,
    /// and the rest wait in libzmq's bounded queue, which then stops reading the flooder's socket).
    static let drainLimit = 512
    static let drainBudgetNanoseconds: UInt64 = 1_000_000

    func drainMessages(until deadline: UInt64) {
        zap?.serve()
        for connectionGuard in [connectionGuard, controlGuard].compactMap({ $0 }) {
            let now = monotonicNanoseconds()
            connectionGuard.serviceEvents(now: now)
            connectionGuard.sweep(now: now)
        }
        endSessionsOfDepartedConnections()
        _ = controlGuard?.takeDeparted()  // the control socket has no sessions: nothing to keep
        for _ in 0..<Self.drainLimit {
            guard monotonicNanoseconds() < deadline else { return }
            let incoming: ZMQSocket.Incoming?
            do {
                incoming = try socket.receive(limit: messageLimit)
            } catch {
                logger.error("receive failed", metadata: ["error": "\(error)"])
                return
            }
            switch incoming {
            case nil:
                return
            case let .oversized(identity, source, bytes, frames)?:
                // read whole and freed; its sender is disconnected, as libzmq does for one frame too big
                counters.oversizedMessages += 1
                counters.refused[.malformed, default: 0] += 1
                sessions[identity]?.refused += 1
                connectionGuard?.cut(descriptor: source, reason: .messageTooLarge,
                                     detail: "a message of \(frames) frames, \(bytes) bytes; max_message_bytes is \(messageLimit.bytes)")
            case let .message(frames, source, userID)?:
                let connection = connectionGuard?.delivered(from: source, userID: userID, now: monotonicNanoseconds())
                if let zap {
                    // a key taken off the allow-list since this connection's handshake: cut it
                    guard let userID, zap.authorizedKeys.contains(userID) else {
                        connectionGuard?.cut(descriptor: source, reason: .keyRevoked, detail: "its key is not in authorized_keys")
                        endSessions(where: { $0.identity == frames.first }, reason: "its key is not in authorized_keys")
                        continue
                    }
                }
                handle(frames, userID: userID, connection: connection?.identity)
            }
        }
    }

    func send(_ frames: [[UInt8]]) {
        do {
            switch try socket.trySend(frames) {
            case .sent:
                counters.replies += 1
            case .queueFull:
                counters.dropped += 1
            case .peerGone:
                // the client has gone: its session ends now rather than at its timeout
                counters.dropped += 1
                if let identity = frames.first, sessions[identity] != nil {
                    counters.sessionsPeerGone += 1
                    endSessions(where: { $0.identity == identity }, reason: nil)
                }
            }
        } catch {
            counters.dropped += 1
            logger.error("send failed", metadata: ["error": "\(error)"])
        }
    }
}
