import Logging

/// Plans none of whose rollouts had a finite cost (a model that diverges, a plug-in's NaN), across
/// every session, and when the log last told of them: a warning at the first, then at most one
/// every 10 s for the whole daemon with the count since, and the rest at the stop. Per session, a
/// client that opened a session per message flooded the journal (attacking helper).
struct FailedPlanReport {
    static let intervalNanoseconds: UInt64 = 10_000_000_000
    /// Distinct sessions named in one line, at most.
    static let peersShown = 8
    private(set) var total: UInt64 = 0
    private var unreported: UInt64 = 0
    private var peers: [String] = [], morePeers = false
    private var reportedAt: UInt64?

    mutating func count(_ plans: UInt64, peer: String) {
        guard plans > 0 else { return }
        total += plans
        unreported += plans
        if !peers.contains(peer) {
            if peers.count < Self.peersShown { peers.append(peer) } else { morePeers = true }
        }
    }

    /// The metadata of the line due at `now`, or nil; `stopping`: whatever is left, now.
    mutating func due(now: UInt64, stopping: Bool = false) -> Logger.Metadata? {
        guard unreported > 0 else { return nil }
        if !stopping, let at = reportedAt, now - at < Self.intervalNanoseconds { return nil }
        let line: Logger.Metadata = [
            "plans": "\(unreported)", "in_all": "\(total)",
            "peers": "\(peers.joined(separator: ","))\(morePeers ? ",..." : "")",
        ]
        unreported = 0
        peers.removeAll()
        morePeers = false
        reportedAt = now
        return line
    }
}
