// Vectorised elementary functions for the batched task kernels and the noise generator.
//
// libm's scalar `sinf`/`expf`/`logf` cost 5-20 ns each and stop loops from vectorising; a
// K x H rollout calls them tens of thousands of times per iteration. These SIMD8 versions use
// range reduction plus short polynomials (Taylor/atanh series, accurate to about 1e-7 relative
// over the reduced ranges), enough for float32 models compared against float64 references at 1e-5.

/// Eight `Float` lanes: the unit of work of every batched kernel.
public typealias Lanes = SIMD8<Float>

/// The lane width every batch is padded to.
public let laneWidth = 8

public enum VectorMath {
    @usableFromInline static let piHigh: Float = 3.140625  // exactly representable
    @usableFromInline static let piLow: Float = 9.67653589793e-4  // pi - piHigh
    @usableFromInline static let inversePi: Float = 0.318309886183790671537767526745
    @usableFromInline static let ln2High: Float = 0.693359375
    @usableFromInline static let ln2Low: Float = -2.12194440e-4
    @usableFromInline static let log2e: Float = 1.44269504088896341

    /// a * b + c, fused into one instruction where the build targets a CPU with FMA (the native
    /// release build defines MPCD_FMA); a separate multiply and add otherwise, never a library call.
    @inlinable @inline(__always)
    public static func multiplyAdd(_ a: Lanes, _ b: Lanes, _ c: Lanes) -> Lanes {
        #if MPCD_FMA
        return c.addingProduct(a, b)
        #else
        return a * b + c
        #endif
    }

    /// sin(x) and cos(x) for every lane. Reduces x by a multiple n of pi to r in [-pi/2, pi/2]
    /// (pi split in two parts so the reduction stays exact for |x| up to a few thousand);
    /// sin(x) = (-1)^n sin(r), cos(x) = (-1)^n cos(r).
    @inlinable @inline(__always)
    public static func sinCos(_ x: Lanes) -> (sin: Lanes, cos: Lanes) {
        let (n, nInt) = roundToInteger(x * inversePi)
        var r = x - n * piHigh
        r = r - n * piLow
        let r2 = r * r
        // sin(r) = r (1 - r^2/3! + r^4/5! - r^6/7! + r^8/9! - r^10/11!)
        var s: Lanes = Lanes(repeating: -2.50521083854417187751e-8)
        s = multiplyAdd(s, r2, Lanes(repeating: 2.75573192239858906526e-6))
        s = multiplyAdd(s, r2, Lanes(repeating: -1.98412698412698412698e-4))
        s = multiplyAdd(s, r2, Lanes(repeating: 8.33333333333333333333e-3))
        s = multiplyAdd(s, r2, Lanes(repeating: -1.66666666666666666667e-1))
        s = multiplyAdd(s * r2, r, r)
        // cos(r) = 1 - r^2/2! + r^4/4! - ... + r^12/12!
        var c: Lanes = Lanes(repeating: 2.08767569878680989792e-9)
        c = multiplyAdd(c, r2, Lanes(repeating: -2.75573192239858906526e-7))
        c = multiplyAdd(c, r2, Lanes(repeating: 2.48015873015873015873e-5))
        c = multiplyAdd(c, r2, Lanes(repeating: -1.38888888888888888889e-3))
        c = multiplyAdd(c, r2, Lanes(repeating: 4.16666666666666666667e-2))
        c = multiplyAdd(c, r2, Lanes(repeating: -0.5))
        c = multiplyAdd(c, r2, Lanes(repeating: 1))
        let signBit = unsafeBitCast(nInt, to: SIMD8<UInt32>.self) &<< 31
        let sinBits = s.bitPattern ^ signBit
        let cosBits = c.bitPattern ^ signBit
        return (Lanes(bitPattern: sinBits), Lanes(bitPattern: cosBits))
    }

    @inlinable @inline(__always)
    public static func sin(_ x: Lanes) -> Lanes { sinCos(x).sin }

    @inlinable @inline(__always)
    public static func cos(_ x: Lanes) -> Lanes { sinCos(x).cos }

    /// e^x for every lane; inputs are clamped to [-87, 88] so the result stays a finite normal float.
    @inlinable @inline(__always)
    public static func exp(_ x: Lanes) -> Lanes {
        let clamped = x.clamp(Lanes(repeating: -87), Lanes(repeating: 88))
        let (n, nInt) = roundToInteger(clamped * log2e)
        var r = clamped - n * ln2High
        r = r - n * ln2Low
        // e^r for |r| <= ln2/2: Taylor to r^7.
        var p: Lanes = Lanes(repeating: 1.0 / 5040)
        p = multiplyAdd(p, r, Lanes(repeating: 1.0 / 720))
        p = multiplyAdd(p, r, Lanes(repeating: 1.0 / 120))
        p = multiplyAdd(p, r, Lanes(repeating: 1.0 / 24))
        p = multiplyAdd(p, r, Lanes(repeating: 1.0 / 6))
        p = multiplyAdd(p, r, Lanes(repeating: 0.5))
        p = multiplyAdd(p, r, Lanes(repeating: 1))
        p = multiplyAdd(p, r, Lanes(repeating: 1))
        let exponent = unsafeBitCast(nInt &+ 127, to: SIMD8<UInt32>.self) &<< 23
        return p * Lanes(bitPattern: exponent)
    }

    /// ln(x) for positive, finite, normal lanes (the callers guarantee it).
    /// x = m 2^e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172.
    @inlinable @inline(__always)
    public static func log(_ x: Lanes) -> Lanes {
        let bits = x.bitPattern
        var e = unsafeBitCast(bits &>> 23, to: SIMD8<Int32>.self) &- 127
        var m = Lanes(bitPattern: (bits & 0x007F_FFFF) | 0x3F80_0000)
        let large = m .> 1.41421356237
        m.replace(with: m * 0.5, where: large)
        e.replace(with: e &+ 1, where: large)
        let s = (m - 1) / (m + 1)
        let s2 = s * s
        var p: Lanes = Lanes(repeating: 2.0 / 9)
        p = multiplyAdd(p, s2, Lanes(repeating: 2.0 / 7))
        p = multiplyAdd(p, s2, Lanes(repeating: 2.0 / 5))
        p = multiplyAdd(p, s2, Lanes(repeating: 2.0 / 3))
        p = multiplyAdd(p, s2, Lanes(repeating: 2))
        return multiplyAdd(p, s, toFloat(e) * 0.693147180559945309)
    }

    /// tanh(x) = 1 - 2 / (e^{2x} + 1) for every lane; exact limits +-1 for large |x|.
    @inlinable @inline(__always)
    public static func tanh(_ x: Lanes) -> Lanes {
        let e = exp(2 * x.clamp(Lanes(repeating: -20), Lanes(repeating: 20)))
        return 1 - 2 / (e + 1)
    }

    /// tanh of `count` floats in place (libm's tanhf costs more than a whole small network layer).
    public static func tanh(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let full = count / laneWidth * laneWidth
        for k in Swift.stride(from: 0, to: full, by: laneWidth) { values.setLanes(tanh(values.lanes(at: k)), at: k) }
        for k in full..<count { values[k] = tanh(Lanes(repeating: values[k]))[0] }
    }

    /// Maps any angle to [-pi, pi], as Gymnasium's `angle_normalize` does (which returns -pi where
    /// this may return pi: the same angle, and the same squared cost).
    @inlinable @inline(__always)
    public static func wrapAngle(_ x: Lanes) -> Lanes {
        let twoPi: Float = 6.28318530717958647692
        return x - roundToInteger(x * (1 / twoPi)).float * twoPi
    }

    @usableFromInline static let roundingMagic: Float = 12_582_912  // 1.5 * 2^23

    /// Rounds to the nearest integer (ties to even), as a float and as an Int32, for |x| < 2^22.
    /// Adding 1.5 * 2^23 leaves no fraction bits, so the FPU rounds and the integer sits in the low
    /// mantissa bits: two vector instructions, where the generic SIMD float-to-int conversion is a
    /// scalar loop.
    @inlinable @inline(__always)
    public static func roundToInteger(_ x: Lanes) -> (float: Lanes, int: SIMD8<Int32>) {
        let shifted = x + roundingMagic
        let int = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        return (shifted - roundingMagic, int)
    }

    /// Int32 lanes with |e| < 2^22 as floats, by the same trick in reverse.
    @inlinable @inline(__always)
    public static func toFloat(_ e: SIMD8<Int32>) -> Lanes {
        unsafeBitCast(e &+ 0x4B40_0000, to: Lanes.self) - roundingMagic
    }
}

extension SIMD8 where Scalar == Float {
    /// Clamps every lane to [lower, upper]. The standard library's `clamped` goes through generic,
    /// NaN-aware `pointwiseMin`/`pointwiseMax` calls that neither inline nor vectorise (they took
    /// 40% of a rollout); a compare-and-blend compiles to `vminps`/`vmaxps`-like code.
    @inlinable @inline(__always)
    public func clamp(_ lower: SIMD8<Float>, _ upper: SIMD8<Float>) -> SIMD8<Float> {
        var r = self
        r.replace(with: lower, where: r .< lower)
        r.replace(with: upper, where: r .> upper)
        return r
    }

    /// Lanes below `lower` raised to it.
    @inlinable @inline(__always)
    public func atLeast(_ lower: SIMD8<Float>) -> SIMD8<Float> {
        var r = self
        r.replace(with: lower, where: r .< lower)
        return r
    }

    /// Lanes above `upper` lowered to it.
    @inlinable @inline(__always)
    public func atMost(_ upper: SIMD8<Float>) -> SIMD8<Float> {
        var r = self
        r.replace(with: upper, where: r .> upper)
        return r
    }

    /// The IEEE-754 bits of every lane.
    @inlinable @inline(__always)
    public var bitPattern: SIMD8<UInt32> { unsafeBitCast(self, to: SIMD8<UInt32>.self) }

    @inlinable @inline(__always)
    public init(bitPattern: SIMD8<UInt32>) { self = unsafeBitCast(bitPattern, to: SIMD8<Float>.self) }
}

extension UnsafePointer where Pointee == Float {
    /// Eight consecutive floats starting at `offset`.
    @inlinable @inline(__always)
    public func lanes(at offset: Int) -> Lanes {
        UnsafeRawPointer(self + offset).loadUnaligned(as: Lanes.self)
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    @inlinable @inline(__always)
    public func lanes(at offset: Int) -> Lanes {
        UnsafeRawPointer(self + offset).loadUnaligned(as: Lanes.self)
    }

    @inlinable @inline(__always)
    public func setLanes(_ value: Lanes, at offset: Int) {
        UnsafeMutableRawPointer(self + offset).storeBytes(of: value, as: Lanes.self)
    }
}
