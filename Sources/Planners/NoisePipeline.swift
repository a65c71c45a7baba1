import Models

/// Standard-normal noise for the planner's iterations, generated before it is needed.
///
/// Noise for (plan p, iteration i) is a pure function of the seed, p and i (``GaussianNoise``),
/// so generating it early changes nothing but when the work happens: `prepare` fills the next
/// plan's noise between ticks (the daemon calls it after a reply has gone out). Noise that was not
/// ready is generated in place. Every iteration gets fresh noise: a buffer is refilled, never
/// reused for another (plan, iteration).
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

    /// `capacity` buffers of `rows` x `rowLength` floats.
    init(rows: Int, rowLength: Int, seed: UInt64, capacity: Int) {
        self.rows = rows
        self.rowLength = rowLength
        self.seed = seed
        buffers = (0..<capacity).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: rows * rowLength) }
        tags = Array(repeating: nil, count: capacity)
        lastUse = Array(repeating: 0, count: capacity)
    }

    deinit { buffers.forEach { $0.deallocate() } }

    var capacity: Int { buffers.count }

    /// The noise for `tag`: a prepared buffer when one holds it, else generated now (split across
    /// `pool` when given).
    func noise(for tag: Tag, pool: SpinningPool?) -> UnsafeMutablePointer<Float> {
        useCount &+= 1
        if let slot = tags.firstIndex(of: tag) {
            lastUse[slot] = useCount
            return buffers[slot]
        }
        let slot = leastRecentlyUsed()
        fill(slot, tag, pool: pool)
        lastUse[slot] = useCount
        return buffers[slot]
    }

    /// Fills the noise for `upcoming` now (at most `capacity` of them).
    func prepare(_ upcoming: [Tag], pool: SpinningPool? = nil) {
        for tag in upcoming.prefix(capacity) where !tags.contains(tag) {
            useCount &+= 1
            let slot = leastRecentlyUsed()
            fill(slot, tag, pool: pool)
            lastUse[slot] = useCount
        }
    }

    private func leastRecentlyUsed() -> Int {
        var best = 0
        for slot in 1..<capacity where lastUse[slot] < lastUse[best] { best = slot }
        return best
    }

    private func fill(_ slot: Int, _ tag: Tag, pool: SpinningPool?) {
        let buffer = buffers[slot], key = NoiseKey(seed: seed, plan: tag.plan, iteration: tag.iteration)
        if let pool {
            let parts = pool.extraWorkers + 1, blocks = rowLength / 16, chunk = (blocks + parts - 1) / parts * 16
            let rows = self.rows, rowLength = self.rowLength, shared = SharedBuffer(base: buffer)
            pool.run { part in
                let start = part * chunk, count = Swift.min(chunk, rowLength - start)
                if count > 0 { GaussianNoise.fill(shared.base, rows: rows, rowLength: rowLength, start: start, count: count, key: key) }
            }
        } else {
            GaussianNoise.fill(buffer, rows: rows, rowLength: rowLength, start: 0, count: rowLength, key: key)
        }
        tags[slot] = tag
    }
}

/// A raw buffer handed to a worker that owns a disjoint part of it for the duration of a job.
struct SharedBuffer: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
}
