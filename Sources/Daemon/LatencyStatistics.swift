import ControlProtocol
import Histogram

/// Tick latency since start and over the last minute, in HDR histograms (microseconds, three
/// significant digits). The last minute is six 10-second windows in a ring, merged on demand.
struct LatencyStatistics {
    static let windowNanoseconds: UInt64 = 10_000_000_000
    static let windowCount = 6

    private(set) var sinceStart = LatencyStatistics.makeHistogram()
    private var windows = Array(repeating: LatencyStatistics.makeHistogram(), count: LatencyStatistics.windowCount)
    private var windowStarts = Array(repeating: UInt64(0), count: LatencyStatistics.windowCount)

    static func makeHistogram() -> Histogram<UInt64> {
        Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    }

    mutating func record(nanoseconds: UInt64, now: UInt64) {
        let microseconds = max(1, min(nanoseconds / 1000, 60_000_000))
        _ = sinceStart.record(microseconds)
        let slot = Int((now / Self.windowNanoseconds) % UInt64(Self.windowCount))
        let start = now / Self.windowNanoseconds * Self.windowNanoseconds
        if windowStarts[slot] != start {
            windows[slot].reset()
            windowStarts[slot] = start
        }
        _ = windows[slot].record(microseconds)
    }

    /// The windows that began within the last minute, merged.
    func lastMinute(now: UInt64) -> Histogram<UInt64> {
        var merged = Self.makeHistogram()
        for (slot, start) in windowStarts.enumerated() where start + UInt64(Self.windowCount) * Self.windowNanoseconds > now {
            merged.add(windows[slot])
        }
        return merged
    }
}

extension Histogram where Count == UInt64 {
    /// p50, p90, p99, p99.9 and max in microseconds, for status replies.
    var summary: LatencySummary {
        guard totalCount > 0 else { return LatencySummary(count: 0) }
        return LatencySummary(count: totalCount, p50: valueAtPercentile(50), p90: valueAtPercentile(90), p99: valueAtPercentile(99),
                              p999: valueAtPercentile(99.9), max: max)
    }
}
