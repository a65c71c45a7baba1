import Models

/// Fresh standard-normal noise from a counter-based generator.
///
/// Every normal is a pure function of (seed, plan number, iteration, position in the sample
/// buffer): no generator state is carried between lanes, so any split of the buffer across
/// threads gives bit-identical noise, and no noise bank is ever reused. Uniforms come from a keyed
/// 32-bit integer hash (two rounds of a multiply-xorshift avalanche); normals from the Box-Muller
/// transform with the vectorised `log`/`sinCos`, 16 normals per 8-lane call.
public struct NoiseKey: Sendable, Equatable {
    @usableFromInline let a: UInt32, b: UInt32, c: UInt32, d: UInt32

    /// The key of one iteration of one plan.
    public init(seed: UInt64, plan: UInt64, iteration: Int) {
        var x = seed
        let first = splitMix64(&x) ^ plan &* 0x9E37_79B9_7F4A_7C15
        var y = first ^ UInt64(truncatingIfNeeded: iteration) &* 0xBF58_476D_1CE4_E5B9
        let k1 = splitMix64(&y), k2 = splitMix64(&y)
        a = UInt32(truncatingIfNeeded: k1)
        b = UInt32(truncatingIfNeeded: k1 >> 32)
        c = UInt32(truncatingIfNeeded: k2)
        d = UInt32(truncatingIfNeeded: k2 >> 32)
    }
}

/// SplitMix64: turns consecutive seeds into well-mixed 64-bit keys.
@inlinable
public func splitMix64(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

public enum GaussianNoise {
    @inlinable @inline(__always)
    static func avalanche(_ v: SIMD8<UInt32>) -> SIMD8<UInt32> {
        var x = v
        x ^= x &>> 16
        x &*= 0x7FEB_352D
        x ^= x &>> 15
        x &*= 0x846C_A68B
        x ^= x &>> 16
        return x
    }

    @usableFromInline static let iota = SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7)

    /// Sixteen standard normals for the pair block `block` (8 Box-Muller pairs).
    @inlinable @inline(__always)
    public static func normals(block: UInt32, key: NoiseKey) -> (Lanes, Lanes) {
        let counter = SIMD8<UInt32>(repeating: block &* 8) &+ iota
        let bits1 = avalanche(avalanche(counter ^ SIMD8(repeating: key.a)) &+ SIMD8(repeating: key.b))
        let bits2 = avalanche(avalanche(counter ^ SIMD8(repeating: key.c)) &+ SIMD8(repeating: key.d))
        // 23 random bits as the mantissa of a float in [1, 2): u in [0, 1) without an int conversion.
        // u1 in (0, 1] so the logarithm is finite; u2 in [0, 1).
        let one = SIMD8<UInt32>(repeating: 0x3F80_0000)
        let u1 = 2 - Lanes(bitPattern: (bits1 &>> 9) | one)
        let u2 = Lanes(bitPattern: (bits2 &>> 9) | one) - 1
        let radius = (-2 * VectorMath.log(u1)).squareRoot()
        let (s, c) = VectorMath.sinCos(u2 * (2 * Float.pi))
        return (radius * c, radius * s)
    }

    /// Fills lanes `start ..< start + count` (multiples of 16) of every row of a
    /// `rows` x `rowLength` buffer with standard normals. Lane k of row r is the same number
    /// whichever lanes a call covers, so workers may fill disjoint lane ranges.
    public static func fill(_ buffer: UnsafeMutablePointer<Float>, rows: Int, rowLength: Int, start: Int, count: Int, key: NoiseKey) {
        precondition(rowLength % 16 == 0 && start % 16 == 0 && count % 16 == 0)
        for r in 0..<rows {
            let row = buffer + r &* rowLength
            var block = UInt32(truncatingIfNeeded: (r &* rowLength &+ start) / 16)
            for k in Swift.stride(from: start, to: start &+ count, by: 16) {
                let (z1, z2) = normals(block: block, key: key)
                row.setLanes(z1, at: k)
                row.setLanes(z2, at: k &+ 8)
                block &+= 1
            }
        }
    }
}
