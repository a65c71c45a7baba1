/// K vectors stored structure-of-arrays: component `c` of lane `k` is at `base[c * stride + k]`.
///
/// Every lane of one component is contiguous, so a kernel that loops over lanes reads and writes
/// consecutive floats and vectorises. `lanes` is always a multiple of ``laneWidth``: buffers are
/// padded so kernels never need a scalar tail loop.
public struct BatchView {
    public let base: UnsafeMutablePointer<Float>
    public let stride: Int
    public let lanes: Int

    @inlinable
    public init(base: UnsafeMutablePointer<Float>, stride: Int, lanes: Int) {
        precondition(lanes % laneWidth == 0, "a batch must hold a multiple of \(laneWidth) lanes")
        self.base = base
        self.stride = stride
        self.lanes = lanes
    }

    /// The first lane of component `c`.
    @inlinable @inline(__always)
    public subscript(component c: Int) -> UnsafeMutablePointer<Float> { base + c &* stride }

    /// The lanes `start ..< start + count` of every component, for splitting a batch across workers.
    @inlinable
    public func slice(start: Int, count: Int) -> BatchView {
        BatchView(base: base + start, stride: stride, lanes: count)
    }
}

/// Rounds a sample count up to a whole number of ``laneWidth`` lanes.
@inlinable
public func paddedLaneCount(_ count: Int) -> Int { (count + laneWidth - 1) / laneWidth * laneWidth }
