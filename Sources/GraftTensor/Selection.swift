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
        public static let all = TopK(bits: 0, lastTieIndex: Int.max)
        public static let none = TopK(bits: UInt32.max, lastTieIndex: -1)

        @inline(__always)
        public func contains(magnitudeBits b: UInt32, index: Int) -> Bool {
            b > bits || (b == bits && index <= lastTieIndex)
        }
    }

    /// The top-`k` set of `magnitude(i)` over `0..<count`. `magnitude` must return |value| (≥ 0, no NaN).
    public static func topK(count n: Int, k: Int, magnitude: (Int) -> Float) -> TopK {
        topK(count: n, k: k, key: { magnitude($0).bitPattern & 0x7FFF_FFFF })
    }

    /// A key whose unsigned order is the float order (negative values below positive ones).
    @inline(__always)
    public static func orderedKey(_ x: Float) -> UInt32 {
        let b = x.bitPattern
        return b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
    }

    @inline(__always)
    public static func value(orderedKey k: UInt32) -> Float {
        Float(bitPattern: k & 0x8000_0000 != 0 ? k & 0x7FFF_FFFF : ~k)
    }

    /// The element at position `q` of `value(0..<n)` sorted ascending (like `torch.sort(x)[q]`).
    public static func quantile(count n: Int, position q: Int, value: (Int) -> Float) -> Float {
        precondition(q >= 0 && q < n)
        if q == 0 {
            var m = value(0)
            for i in 1..<n { let v = value(i); if v < m { m = v } }
            return m
        }
        let t = topK(count: n, k: n - q, key: { orderedKey(value($0)) })
        return Self.value(orderedKey: t.bits)
    }

    /// The top-`k` set by an order-preserving 32-bit `key`.
    public static func topK(count n: Int, k: Int, key: (Int) -> UInt32) -> TopK {
        if k >= n { return .all }
        if k <= 0 { return .none }
        @inline(__always) func bits(_ i: Int) -> UInt32 { key(i) }
        // Pass 1: histogram of the high 16 bits.
        let hi = histogram(count: n) { i in Int(bits(i) >> 16) }
        var need = k
        var hiBin = 0xFFFF
        while hiBin > 0 && hi[hiBin] < need { need -= hi[hiBin]; hiBin -= 1 }
        // Pass 2: low 16 bits among elements in that high bin.
        let lo = histogram(count: n) { i in
            let b = bits(i)
            return Int(b >> 16) == hiBin ? Int(b & 0xFFFF) : -1
        }
        var loBin = 0xFFFF
        while loBin > 0 && lo[loBin] < need { need -= lo[loBin]; loBin -= 1 }
        let t = UInt32(hiBin) << 16 | UInt32(loBin)
        // `need` elements equal to t are kept; find the index of the last one when not all are.
        let equal = lo[loBin]
        if need >= equal { return TopK(bits: t, lastTieIndex: Int.max) }
        var seen = 0
        for i in 0..<n where bits(i) == t {
            seen += 1
            if seen == need { return TopK(bits: t, lastTieIndex: i) }
        }
        return TopK(bits: t, lastTieIndex: Int.max)
    }

    /// The top-`k` set of |x − base| (or |x| without a base), with tight loops over the buffers —
    /// the hot path of TIES and Breadcrumbs on large tensors.
    public static func topKMagnitude(_ x: UnsafeBufferPointer<Float>, minus base: UnsafeBufferPointer<Float>?, k: Int) -> TopK {
        let n = x.count
        if k >= n { return .all }
        if k <= 0 { return .none }
        let xp = x.baseAddress!, bp = base?.baseAddress
        @inline(__always) func bits(_ i: Int) -> UInt32 {
            let v = bp == nil ? xp[i] : xp[i] - bp![i]
            return v.bitPattern & 0x7FFF_FFFF
        }
        let hi = countBins(n) { lo, hi, h in
            if let bp {
                for i in lo..<hi { h[Int((xp[i] - bp[i]).bitPattern & 0x7FFF_FFFF) >> 16] &+= 1 }
            } else {
                for i in lo..<hi { h[Int(xp[i].bitPattern & 0x7FFF_FFFF) >> 16] &+= 1 }
            }
        }
        var need = k
        var hiBin = 0x7FFF
        while hiBin > 0 && Int(hi[hiBin]) < need { need -= Int(hi[hiBin]); hiBin -= 1 }
        let target = UInt32(hiBin)
        let lo = countBins(n) { a, b, h in
            for i in a..<b {
                let v = bits(i)
                if v >> 16 == target { h[Int(v & 0xFFFF)] &+= 1 }
            }
        }
        var loBin = 0xFFFF
        while loBin > 0 && Int(lo[loBin]) < need { need -= Int(lo[loBin]); loBin -= 1 }
        let t = target << 16 | UInt32(loBin)
        if need >= Int(lo[loBin]) { return TopK(bits: t, lastTieIndex: Int.max) }
        var seen = 0
        for i in 0..<n where bits(i) == t {
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

    /// Counts of `bin(i)` (in 0..<65536; negative values are skipped), in parallel.
    private static func histogram(count n: Int, bin: (Int) -> Int) -> [Int] {
        let chunks = max(1, min(graftThreadCount, n / (1 << 16)))
        var partial = [[Int]](repeating: [], count: chunks)
        partial.withUnsafeMutableBufferPointer { parts in
            let out = UncheckedSendable(parts)
            parallelEach(chunks) { c in
                var h = [Int](repeating: 0, count: 1 << 16)
                let lo = n * c / chunks, hi = n * (c + 1) / chunks
                h.withUnsafeMutableBufferPointer { h in
                    for i in lo..<hi {
                        let b = bin(i)
                        if b >= 0 { h[b] += 1 }
                    }
                }
                out.value[c] = h
            }
        }
        var total = partial[0]
        for p in partial.dropFirst() { for j in 0..<total.count { total[j] += p[j] } }
        return total
    }
}
