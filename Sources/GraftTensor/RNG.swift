import Foundation

/// A small, fast, seeded generator (xoshiro256**, seeded through SplitMix64) so every random choice
/// Graft makes is reproducible from one integer seed.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(&x), splitmix(&x), splitmix(&x), splitmix(&x))
    }

    /// A generator for a named stream (e.g. one tensor of one model): same seed + same key, same numbers,
    /// whatever order the streams are visited in.
    public init(seed: UInt64, key: String) {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        self.init(seed: seed ^ h)
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    @inline(__always)
    public mutating func nextUnitFloat() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Standard normal (Box–Muller, the cosine branch: two uniforms per value).
    public mutating func nextNormal() -> Float {
        let u1 = max(nextUnitFloat(), 1e-7), u2 = nextUnitFloat()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}
