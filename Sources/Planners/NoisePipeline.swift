import Dispatch
import Models

/// Standard-normal noise for the planner's iterations, generated ahead on another thread.
///
/// Noise for (plan p, iteration i) is a pure function of the seed, p and i (``GaussianNoise``),
/// so generating it early changes nothing but when the work happens. While iteration i rolls out,
/// a background job fills the other of two buffers with the noise of the iteration expected
/// next; if that guess is wrong (a deadline cut a plan short) the noise is generated in place.
/// Every iteration still gets fresh noise: nothing is ever reused.
final class NoisePipeline: @unchecked Sendable {
    struct Tag: Equatable {
        var plan: UInt64
        var iteration: Int
    }

    let rows: Int, rowLength: Int, seed: UInt64
    private let buffers: [UnsafeMutablePointer<Float>]
    private var tags: [Tag?] = [nil, nil]
    private var pendingSlot: Int?
    private let queue = DispatchQueue(label: "mpcd.planner.noise", qos: .userInitiated)
    private let group = DispatchGroup()

    init(rows: Int, rowLength: Int, seed: UInt64) {
        self.rows = rows
        self.rowLength = rowLength
        self.seed = seed
        buffers = (0..<2).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: rows * rowLength) }
    }

    deinit {
        group.wait()
        buffers.forEach { $0.deallocate() }
    }

    /// The noise for `tag`: the prefetched buffer when it holds it, else generated now, across
    /// `workers` threads when more than one.
    func noise(for tag: Tag, workers: Int) -> UnsafeMutablePointer<Float> {
        if pendingSlot != nil {
            group.wait()
            pendingSlot = nil
        }
        if let slot = tags.firstIndex(of: tag) { return buffers[slot] }
        let slot = tags[0] == nil ? 0 : 1
        let buffer = buffers[slot], key = NoiseKey(seed: seed, plan: tag.plan, iteration: tag.iteration)
        if workers <= 1 {
            GaussianNoise.fill(buffer, rows: rows, rowLength: rowLength, start: 0, count: rowLength, key: key)
        } else {
            let blocks = rowLength / 16, chunk = (blocks + workers - 1) / workers * 16
            let rows = self.rows, rowLength = self.rowLength, shared = SharedBuffer(base: buffer)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let start = w * chunk, count = Swift.min(chunk, rowLength - start)
                if count > 0 { GaussianNoise.fill(shared.base, rows: rows, rowLength: rowLength, start: start, count: count, key: key) }
            }
        }
        tags[slot] = tag
        return buffer
    }

    /// Starts generating the noise for `tag` in the background, into the buffer not holding `current`.
    func prefetch(_ tag: Tag, keeping current: Tag) {
        guard pendingSlot == nil, !tags.contains(tag) else { return }
        let slot = tags[0] == current ? 1 : 0
        tags[slot] = tag
        pendingSlot = slot
        let shared = SharedBuffer(base: buffers[slot]), rows = self.rows, rowLength = self.rowLength
        let key = NoiseKey(seed: seed, plan: tag.plan, iteration: tag.iteration)
        queue.async(group: group) {
            GaussianNoise.fill(shared.base, rows: rows, rowLength: rowLength, start: 0, count: rowLength, key: key)
        }
    }
}

/// A raw buffer handed to a worker that owns a disjoint part of it for the duration of a job.
struct SharedBuffer: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
}
