import Foundation
import Planners
import Models

/// A decoded request acted on: hello answered, bye ending the session, an observation stored as
/// its session's newest; anything refused gets an error reply and changes nothing else.
extension Server {
    func handle(_ frames: [[UInt8]], userID: String?, connection: ConnectionGuard.Identity? = nil) {
        guard frames.count >= 2 else { return }
        let identity = frames[0]
        // REQ clients put an empty delimiter frame before the payload; DEALER clients do not.
        let isRequest = frames[1].isEmpty
        let envelope = isRequest ? [identity, []] : [identity]
        let payload = Array(frames[(isRequest ? 2 : 1)...])
        let now = monotonicNanoseconds()
        do throws(WireProtocol.Refusal) {
            // before the message is decoded: a stale client's state, sized for the old task, would
            // otherwise be refused as the wrong size, and the client not told why (attacking helper)
            if let header = payload.first.flatMap(WireProtocol.Header.init), header.version == WireProtocol.version,
               header.type == WireProtocol.MessageType.observation.rawValue || header.type == WireProtocol.MessageType.parameters.rawValue {
                try checkHeldTask(header.c, sequence: header.a)
            }
            switch try WireProtocol.decode(payload, maxValues: maxObservationValues) {
            case .hello:
                send(envelope + [WireProtocol.Header(type: .helloReply).bytes, helloReply])
                sessions[identity]?.lastSeen = now
            case .bye:
                if sessions[identity] != nil {
                    endSessions(where: { $0.identity == identity }, reason: nil)
                    logger.info("session closed by client", metadata: ["peer": "\(Session.name(identity))"])
                }
            case let .observation(sequence, timestamp, values, _):
                let state: [Float]
                do {
                    state = try configuration.task.dynamics.state(fromObservation: values)
                } catch .nonFinite(let index) {
                    throw WireProtocol.Refusal(.nonFinite, "observation value \(index) is not finite (or beyond float32's range)", sequence: sequence)
                } catch {
                    throw WireProtocol.Refusal(.wrongDimension, error.description, sequence: sequence)
                }
                let measuredAt = try measurementTime(timestamp, now: now, sequence: sequence)
                if let owner = sessions[identity]?.userID, owner != userID {
                    // with CURVE a session belongs to its client's key: another key cannot take over its routing id
                    throw WireProtocol.Refusal(.malformed, "this routing id belongs to a session of another client key", sequence: sequence)
                }
                let session = try session(for: identity, envelope: envelope, now: now, sequence: sequence)
                session.envelope = envelope
                session.lastSeen = now
                session.userID = userID
                session.arrived(by: connection)
                session.observation = ReceivedObservation(state: state, sequence: sequence, measuredAt: measuredAt, receivedAt: now)
                session.unanswered = true
            case let .parameters(sequence, values, _):
                if let owner = sessions[identity]?.userID, owner != userID {
                    throw WireProtocol.Refusal(.malformed, "this routing id belongs to a session of another client key", sequence: sequence)
                }
                // checked before a session is opened for it: a refused message leaves no session behind
                if sessions[identity] == nil {
                    do throws(ParameterError) { _ = try configuration.task.settingParameters(values) } catch { throw Self.refusal(error, sequence: sequence) }
                }
                let session = try session(for: identity, envelope: envelope, now: now, sequence: sequence)
                // the values first: a refused message leaves the session's envelope and key as they were
                do throws(ParameterError) { try session.setParameters(values) } catch { throw Self.refusal(error, sequence: sequence) }
                session.envelope = envelope
                session.lastSeen = now
                session.userID = userID
                session.arrived(by: connection)
                // debug: a client may send these as often as it likes
                logger.debug("session parameters set", metadata: [
                    "peer": "\(session.name)", "parameters": "\(values.keys.sorted().map { "\($0)=\(values[$0]!)" }.joined(separator: " "))",
                ])
                let inForce = Dictionary(uniqueKeysWithValues: session.planner.task.parameters.map { ($0.name, $0.value.map(Double.init)) })
                send(envelope + WireProtocol.parametersReply(sequence: sequence, inForce))
            }
        } catch {
            counters.refused[error.code, default: 0] += 1
            if let session = sessions[identity] {
                session.refused += 1
                session.lastSeen = now
            }
            send(envelope + WireProtocol.errorMessage(error))
        }
    }

    /// A client that sent the `task_fingerprint` of its hello, asking to be told, is refused while
    /// the task is another than the one that hello described (a reload or a restart changed it):
    /// its observation was made for the old task's state and its bounds check is the old task's.
    /// It says hello again, learns the new task, and goes on. A client that sends 0 is not asked.
    func checkHeldTask(_ heldTask: UInt32, sequence: UInt64) throws(WireProtocol.Refusal) {
        guard heldTask != 0, heldTask != taskFingerprint else { return }
        throw WireProtocol.Refusal(.taskChanged, "the task changed since this client's hello (now \(configuration.task.name), task_fingerprint \(taskFingerprint)): send hello again for its names, bounds and dimensions", sequence: sequence)
    }

    static func refusal(_ error: ParameterError, sequence: UInt64) -> WireProtocol.Refusal {
        let code: WireProtocol.ErrorCode = switch error.kind {
        case .wrongLength: .wrongDimension
        case .nonFinite: .nonFinite
        case .unknown, .outOfRange, .none: .invalidParameter
        }
        return WireProtocol.Refusal(code, error.description, sequence: sequence)
    }

    /// When an observation was measured: its arrival, or with `trust_client_timestamps` its
    /// timestamp (seconds on this host's CLOCK_MONOTONIC; 0: none), which must be a finite time
    /// not ahead of this host's clock and not older than `stale_after_s`.
    func measurementTime(_ timestamp: Double, now: UInt64, sequence: UInt64) throws(WireProtocol.Refusal) -> UInt64 {
        guard configuration.server.trustClientTimestamps, timestamp != 0 else { return now }
        guard timestamp.isFinite, timestamp > 0 else {
            throw WireProtocol.Refusal(.nonFinite, "timestamp \(timestamp) is not a time: seconds on this host's CLOCK_MONOTONIC, or 0 for none", sequence: sequence)
        }
        let stamped = nanoseconds(seconds: timestamp)
        guard stamped <= now + Self.timestampTolerance else {
            throw WireProtocol.Refusal(.malformed, "timestamp \(timestamp) s is ahead of this host's CLOCK_MONOTONIC (\(Double(now) * 1e-9) s): trust_client_timestamps needs this host's monotonic clock, e.g. Python's time.monotonic()", sequence: sequence)
        }
        let measuredAt = min(stamped, now)
        // the configured age, not the realtime floor of two tick periods: how old a measurement may
        // arrive has nothing to do with the tick
        let maxAge = nanoseconds(seconds: configuration.safety.staleAfter)
        if maxAge > 0, now - measuredAt > maxAge {
            throw WireProtocol.Refusal(.stale, "observation is \(Double(now - measuredAt) * 1e-9) s old; stale_after_s is \(configuration.safety.staleAfter)", sequence: sequence)
        }
        return measuredAt
    }

    /// How far ahead of this host's clock a trusted timestamp may be (rounding, not skew: the
    /// client reads the same clock).
    static let timestampTolerance: UInt64 = 1_000_000_000
}
