import GraftTensor

/// Sparsification of one task vector τ = θ − θ₀, as mergekit's `sparsify.py` defines it:
/// - `magnitude` (TIES): keep the k = max(1, ⌊density·n⌋) entries of largest |τ|;
/// - `random` (DARE): keep each entry with probability `density`;
/// - `magnitudeOutliers` (Breadcrumbs): sort |τ| ascending, keep ranks [n_bot, n_bot + ⌊density·n⌋)
///   where n_bot = max(0, n − ⌊density·n⌋ − ⌊gamma·n⌋): the largest ⌊gamma·n⌋ and the smallest are dropped.
/// With `rescale`, kept entries are scaled so the L1 norm of τ is preserved (mergekit's `rescale_norm: l1`).
///
/// τ is never materialised: a sparsifier is prepared from θ and θ₀, then applied chunk by
/// chunk. Randomness is drawn per fixed-size chunk from a stream keyed by (seed, key, chunk), so results
/// do not depend on the thread count.
struct Sparsifier: Sendable {
    enum Method: Sendable { case magnitude, random, magnitudeOutliers }
    static let chunk = 1 << 16

    private enum Rule: Sendable {
        case keepAll
        case dropAll
        case topK(Selection.TopK)
        case band(keep: Selection.TopK, drop: Selection.TopK)
        case bernoulli(density: Float, seed: UInt64, key: String)
    }
    private let rule: Rule
    private(set) var scale: Float = 1

    /// - Parameters:
    ///   - x, base: θ and θ₀ (τ = x − base).
    ///   - key: names the random stream (model and tensor), for `.random`.
    init(_ method: Method, x: UnsafeBufferPointer<Float>, base: UnsafeBufferPointer<Float>, density: Double,
         gamma: Double = 0, rescale: Bool, seed: UInt64 = 0, key: String = "") {
        let n = x.count
        @inline(__always) func delta(_ i: Int) -> Float { x[i] - base[i] }
        if density >= 1 || n == 0 {
            rule = .keepAll
            return
        }
        switch method {
        case .magnitude:
            if density <= 0 { rule = .dropAll; return }
            let k = max(1, Int(density * Double(n)))
            rule = .topK(Selection.topKMagnitude(x, minus: base, k: k))
        case .random:
            rule = .bernoulli(density: Float(density), seed: seed, key: key)
        case .magnitudeOutliers:
            let target = Int(density * Double(n))
            let nTop = Int(gamma * Double(n))
            let nBot = max(0, n - target - nTop)
            let dropTop = n - nBot - target
            let keep = Selection.topKMagnitude(x, minus: base, k: n - nBot)
            let drop = Selection.topKMagnitude(x, minus: base, k: dropTop)
            rule = .band(keep: keep, drop: drop)
        }
        if rescale {
            // L1 norm before and after masking, chunk by chunk.
            var before = 0.0, after = 0.0
            var buf = [Float](repeating: 0, count: Self.chunk)
            var start = 0
            while start < n {
                let len = min(Self.chunk, n - start)
                buf.withUnsafeMutableBufferPointer { b in
                    for j in 0..<len { b[j] = delta(start + j); before += Double(abs(b[j])) }
                    let view = UnsafeMutableBufferPointer(rebasing: b[0..<len])
                    self.mask(start: start, view)
                    for j in 0..<len { after += Double(abs(b[j])) }
                }
                start += len
            }
            let eps = 1e-7
            if before >= eps && after >= eps { scale = Float(before / after) }
        }
    }

    /// Zeroes the dropped entries of `d` (τ[start ..< start + d.count]) and applies the rescale factor.
    func apply(start: Int, _ d: UnsafeMutableBufferPointer<Float>) {
        mask(start: start, d)
        Kernels.scale(d.baseAddress!, by: scale, count: d.count)
    }

    private func mask(start: Int, _ d: UnsafeMutableBufferPointer<Float>) {
        switch rule {
        case .keepAll: return
        case .dropAll: d.update(repeating: 0)
        case let .topK(t):
            Kernels.keepTopK(d.baseAddress!, count: d.count, start: start, t)
        case let .band(keep, drop):
            for j in d.indices {
                let b = d[j].bitPattern & 0x7FFF_FFFF
                if !keep.contains(magnitudeBits: b, index: start + j) || drop.contains(magnitudeBits: b, index: start + j) { d[j] = 0 }
            }
        case let .bernoulli(density, seed, key):
            precondition(start % Self.chunk == 0, "random sparsification must be applied on chunk boundaries")
            var c = start / Self.chunk
            var j = 0
            while j < d.count {
                var rng = SeededRNG(seed: seed &+ UInt64(c) &* 0x9E37_79B9, key: key)
                let end = min(d.count, j + Self.chunk)
                while j < end {
                    if rng.nextUnitFloat() >= density { d[j] = 0 }
                    j += 1
                }
                c += 1
            }
        }
    }
}
