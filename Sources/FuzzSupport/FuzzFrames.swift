// The fuzz targets' logic, shared by the libFuzzer builds (scripts/fuzz.sh compiles these files
// with the sources they exercise into one module) and by the test that replays their corpus.
#if canImport(Daemon)
import Daemon
#endif

/// Frames of a fuzz input: split at every 0xFF 0xFE pair.
public func fuzzFrames(_ bytes: [UInt8]) -> [[UInt8]] {
    var frames: [[UInt8]] = [[]]
    var i = 0
    while i < bytes.count {
        if bytes[i] == 0xFF, i + 1 < bytes.count, bytes[i + 1] == 0xFE {
            frames.append([])
            i += 2
        } else {
            frames[frames.count - 1].append(bytes[i])
            i += 1
        }
    }
    return frames
}

/// The decoder target: any bytes, decoded or refused, never a crash.
public func fuzzDecode(_ bytes: [UInt8]) {
    if case let .observation(_, _, values, _)? = try? WireProtocol.decode(fuzzFrames(bytes)) { _ = values.count }
}
