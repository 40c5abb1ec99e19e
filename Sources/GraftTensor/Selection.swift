/// Order statistics over magnitudes for the sparsifying merge methods (TIES, Breadcrumbs, PCB).
///
/// Magnitudes are compared through their IEEE bit patterns (for non-negative floats the bit order is
/// the value order), so the k-th largest |x| is found by a two-pass radix select — two streaming
/// passes with 65,536-bin histograms, parallel over the cores, and no copy of the data.
public enum Selection {
    /// Which elements are among the `k` largest by magnitude: every element whose |x| bits exceed
    /// `bits`, plus elements equal to it up to and including index `lastTieIndex` (ties go to the lowest
    /// indices, as a stable sort would give).
    public struct TopK: Sendable, Equatable {
        public let bits: UInt32
        public let lastTieIndex: Int

        @inlinable
        public init(bits: UInt32, lastTieIndex: Int) {
            self.bits = bits
            self.lastTieIndex = lastTieIndex
        }
        public static let all = TopK(bits: 0, lastTieIndex: Int.max)
        public static let none = TopK(bits: UInt32.max, lastTieIndex: -1)

        @inlinable @inline(__always)
        public func contains(magnitudeBits b: UInt32, index: Int) -> Bool {
            b > bits || (b == bits && index <= lastTieIndex)
        }
    }

    /// A key whose unsigned order is the float order (negative values below positive ones).
    @inlinable @inline(__always)
    public static func orderedKey(_ x: Float) -> UInt32 {
        let b = x.bitPattern
        return b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
    }

    @inlinable @inline(__always)
    public static func value(orderedKey k: UInt32) -> Float {
        Float(bitPattern: k & 0x8000_0000 != 0 ? k & 0x7FFF_FFFF : ~k)
    }

    /// The top-`k` set of |x − base| (or |x| without a base), with tight loops over the buffers —
    /// the hot path of TIES and Breadcrumbs on large tensors.
    public static func topKMagnitude(_ x: UnsafeBufferPointer<Float>, minus base: UnsafeBufferPointer<Float>?, k: Int) -> TopK {
        topKBuffer(x, minus: base, k: k, signed: false)
    }

    /// The element at position `q` of `values` sorted ascending (like `torch.sort(x)[q]`).
    public static func quantile(_ values: UnsafeBufferPointer<Float>, position q: Int) -> Float {
        let n = values.count
        precondition(q >= 0 && q < n)
        if q == 0 { return values.min()! }
        return value(orderedKey: topKBuffer(values, minus: nil, k: n - q, signed: true).bits)
    }

    /// Radix select over 32-bit keys of the buffer: |x − base| bits, or the order-preserving key of x
    /// when `signed`.
    private static func topKBuffer(_ x: UnsafeBufferPointer<Float>, minus base: UnsafeBufferPointer<Float>?, k: Int,
                                   signed: Bool) -> TopK {
        let n = x.count
        if k >= n { return .all }
        if k <= 0 { return .none }
        let xp = x.baseAddress!, bp = base?.baseAddress
        @inline(__always) func key(_ i: Int) -> UInt32 {
            let v = bp == nil ? xp[i] : xp[i] - bp![i]
            return signed ? orderedKey(v) : v.bitPattern & 0x7FFF_FFFF
        }
        let hi = countBins(n) { lo, hi, h in
            if signed {
                for i in lo..<hi { h[Int(orderedKey(xp[i]) >> 16)] &+= 1 }
            } else if let bp {
                for i in lo..<hi { h[Int((xp[i] - bp[i]).bitPattern & 0x7FFF_FFFF) >> 16] &+= 1 }
            } else {
                for i in lo..<hi { h[Int(xp[i].bitPattern & 0x7FFF_FFFF) >> 16] &+= 1 }
            }
        }
        var need = k
        var hiBin = 0xFFFF
        while hiBin > 0 && Int(hi[hiBin]) < need { need -= Int(hi[hiBin]); hiBin -= 1 }
        let target = UInt32(hiBin)
        let lo = countBins(n) { a, b, h in
            for i in a..<b {
                let v = key(i)
                if v >> 16 == target { h[Int(v & 0xFFFF)] &+= 1 }
            }
        }
        var loBin = 0xFFFF
        while loBin > 0 && Int(lo[loBin]) < need { need -= Int(lo[loBin]); loBin -= 1 }
        let t = target << 16 | UInt32(loBin)
        if need >= Int(lo[loBin]) { return TopK(bits: t, lastTieIndex: Int.max) }
        var seen = 0
        for i in 0..<n where key(i) == t {
            seen += 1
            if seen == need { return TopK(bits: t, lastTieIndex: i) }
        }
        return TopK(bits: t, lastTieIndex: Int.max)
    }

    /// Parallel 65,536-bin histogram: `fill(lo, hi, bins)` counts elements lo..<hi into `bins`.
    private static func countBins(_ n: Int, _ fill: (Int, Int, UnsafeMutablePointer<UInt32>) -> Void) -> [UInt32] {
        let chunks = max(1, min(graftThreadCount, n / (1 << 16)))
        let parts = UnsafeMutablePointer<UInt32>.allocate(capacity: chunks << 16)
        parts.initialize(repeating: 0, count: chunks << 16)
        defer { parts.deallocate() }
        let p = UncheckedSendable(parts)
        parallelEach(chunks) { c in fill(n * c / chunks, n * (c + 1) / chunks, p.value + (c << 16)) }
        var total = [UInt32](repeating: 0, count: 1 << 16)
        for c in 0..<chunks { for j in 0..<(1 << 16) { total[j] &+= parts[(c << 16) + j] } }
        return total
    }
}
