import Dispatch
import Models

/// Standard-normal noise for the planner's iterations, generated before it is needed.
///
/// Noise for (plan p, iteration i) is a pure function of the seed, p and i (``GaussianNoise``),
/// so generating it early changes nothing but when the work happens. Two ways take it off the
/// critical path: `prepare` fills the next plan's noise between ticks (the daemon calls it after
/// a reply has gone out), and `prefetch` fills the next iteration's noise on another thread while
/// the current one rolls out. Noise that was not ready is generated in place. Every iteration gets
/// fresh noise: a buffer is refilled, never reused for another (plan, iteration).
final class NoisePipeline: @unchecked Sendable {
    struct Tag: Equatable {
        var plan: UInt64
        var iteration: Int
    }

    let rows: Int, rowLength: Int, seed: UInt64
    private let buffers: [UnsafeMutablePointer<Float>]
    private var tags: [Tag?]
    private var lastUse: [UInt64]
    private var useCount: UInt64 = 0
    private var pending = false
    private let queue = DispatchQueue(label: "mpcd.planner.noise", qos: .userInitiated)
    private let group = DispatchGroup()

    /// `capacity` buffers of `rows` x `rowLength` floats.
    init(rows: Int, rowLength: Int, seed: UInt64, capacity: Int) {
        self.rows = rows
        self.rowLength = rowLength
        self.seed = seed
        buffers = (0..<capacity).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: rows * rowLength) }
        tags = Array(repeating: nil, count: capacity)
        lastUse = Array(repeating: 0, count: capacity)
    }

    deinit {
        group.wait()
        buffers.forEach { $0.deallocate() }
    }

    var capacity: Int { buffers.count }

    /// The noise for `tag`: a prepared or prefetched buffer when one holds it, else generated now,
    /// across `workers` threads when more than one.
    func noise(for tag: Tag, workers: Int) -> UnsafeMutablePointer<Float> {
        settle()
        useCount &+= 1
        if let slot = tags.firstIndex(of: tag) {
            lastUse[slot] = useCount
            return buffers[slot]
        }
        let slot = leastRecentlyUsed(sparing: nil)
        fill(slot, tag, workers: workers)
        lastUse[slot] = useCount
        return buffers[slot]
    }

    /// Fills the noise for `upcoming` now, on the calling thread (at most `capacity` of them).
    func prepare(_ upcoming: [Tag]) {
        settle()
        for tag in upcoming.prefix(capacity) where !tags.contains(tag) {
            useCount &+= 1
            let slot = leastRecentlyUsed(sparing: nil)
            fill(slot, tag, workers: 1)
            lastUse[slot] = useCount
        }
    }

    /// Starts filling the noise for `tag` on another thread, sparing the buffer in use.
    func prefetch(_ tag: Tag, sparing current: Tag) {
        guard !pending, !tags.contains(tag) else { return }
        let slot = leastRecentlyUsed(sparing: current)
        tags[slot] = tag
        useCount &+= 1
        lastUse[slot] = useCount
        pending = true
        let shared = SharedBuffer(base: buffers[slot]), rows = self.rows, rowLength = self.rowLength
        let key = NoiseKey(seed: seed, plan: tag.plan, iteration: tag.iteration)
        queue.async(group: group) {
            GaussianNoise.fill(shared.base, rows: rows, rowLength: rowLength, start: 0, count: rowLength, key: key)
        }
    }

    private func settle() {
        if pending {
            group.wait()
            pending = false
        }
    }

    private func leastRecentlyUsed(sparing spared: Tag?) -> Int {
        var best = 0
        for slot in 1..<capacity where tags[best] == spared || (tags[slot] != spared && lastUse[slot] < lastUse[best]) {
            best = slot
        }
        return best
    }

    private func fill(_ slot: Int, _ tag: Tag, workers: Int) {
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
    }
}

/// A raw buffer handed to a worker that owns a disjoint part of it for the duration of a job.
struct SharedBuffer: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
}
