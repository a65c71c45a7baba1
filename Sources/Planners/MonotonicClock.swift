#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Nanoseconds on the monotonic clock: immune to wall-clock steps, used for budgets and timing.
@inlinable
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// `seconds` as nanoseconds for the monotonic clock, saturating: negative or NaN gives 0, and
/// anything beyond UInt64's range (about 584 years) gives `UInt64.max`, never a trap.
@inlinable
public func nanoseconds(seconds: Double) -> UInt64 {
    guard seconds > 0 else { return 0 }
    let ns = (seconds * 1e9).rounded()
    return ns < 18_446_744_073_709_549_568.0 ? UInt64(ns) : .max
}

/// The wall clock, nanoseconds since the Unix epoch (what a recording's rows are stamped with).
public func wallClockNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
