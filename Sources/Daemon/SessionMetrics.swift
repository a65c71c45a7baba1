/// Figures of a session's plans (or of all sessions' together) for Prometheus: plans sent (the
/// latency count), iterations, plans cut short by the deadline, and tick latency in fixed buckets.
struct SessionMetrics {
    /// Upper bounds of the latency buckets, µs (the daemon-wide histogram uses the same).
    /// Finer around the periods robots tick at (1-10 ms), where p99 is read.
    static let latencyBoundsMicroseconds: [UInt64] = [50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500,
                                                      10_000, 20_000, 50_000, 100_000, 1_000_000]

    private(set) var iterations: UInt64 = 0
    var truncatedPlans: UInt64 = 0
    /// Observations per bucket (not cumulative); beyond the last bound only in `latencyCount`.
    private(set) var latencyBuckets = [UInt64](repeating: 0, count: SessionMetrics.latencyBoundsMicroseconds.count)
    private(set) var latencyCount: UInt64 = 0
    private(set) var latencySumMicroseconds: UInt64 = 0

    mutating func record(latencyMicroseconds: UInt64, iterations: Int) {
        self.iterations &+= UInt64(max(0, iterations))
        latencyCount &+= 1
        latencySumMicroseconds &+= latencyMicroseconds
        if let bucket = Self.latencyBoundsMicroseconds.firstIndex(where: { latencyMicroseconds <= $0 }) { latencyBuckets[bucket] &+= 1 }
    }

    /// The buckets as the exposition format counts them: each includes every smaller one.
    var cumulativeLatencyBuckets: [UInt64] {
        var total: UInt64 = 0
        return latencyBuckets.map { total &+= $0; return total }
    }
}
