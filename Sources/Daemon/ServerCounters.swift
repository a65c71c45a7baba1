/// Counters since start (the `mpcctl status` figures build on these).
public struct ServerCounters: Sendable {
    /// Ticks run (realtime), and grid slots passed, run or skipped: a reply's tick number.
    public var ticks: UInt64 = 0
    public var gridTick: UInt64 = 0
    public var overruns: UInt64 = 0
    public var replies: UInt64 = 0
    public var dropped: UInt64 = 0
    public var refused: [WireProtocol.ErrorCode: UInt64] = [:]
    public var sessionsOpened: UInt64 = 0
    public var sessionsExpired: UInt64 = 0
    /// Sessions that gave their place to a newcomer (max_sessions reached), whose peer was gone,
    /// or that a reload ended (another task, a revoked key).
    public var sessionsEvicted: UInt64 = 0
    public var sessionsPeerGone: UInt64 = 0
    public var sessionsEndedByReload: UInt64 = 0
    /// Messages over max_message_bytes (all frames together), read and discarded.
    public var oversizedMessages: UInt64 = 0
    /// Fallbacks and stale replies of sessions that have ended (live sessions count their own).
    public var fallbacks: UInt64 = 0
    public var staleReplies: UInt64 = 0
    public var truncatedPlans: UInt64 = 0
}
