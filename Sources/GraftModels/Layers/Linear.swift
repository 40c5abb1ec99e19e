import GraftTensor

/// y = x·Wᵀ + b (+ a low-rank update) for a batch of rows. W is [out × in] as PyTorch stores it.
/// (The training issue adds `backward` here, next to `forward`.)
public struct Linear: Sendable {
    public let weight: FloatBuffer
    public let bias: FloatBuffer?
    public let inFeatures: Int
    public let outFeatures: Int
    /// An adapter's update applied at inference (LoRA without fusing).
    public var lowRank: LowRankUpdate?
    /// The same weight in its stored block format, used for matrix–vector products (decode).
    public var quantized: QuantizedMatrix?
    /// Quantise the input to 8 bits for those products (llama.cpp's decode arithmetic) instead of
    /// multiplying in float.
    public var int8Activations = false

    public init(weight: FloatBuffer, bias: FloatBuffer?, inFeatures: Int, outFeatures: Int) {
        precondition(weight.count == inFeatures * outFeatures)
        self.weight = weight; self.bias = bias; self.inFeatures = inFeatures; self.outFeatures = outFeatures
    }

    /// Sets an adapter's low-rank update, checking it fits this layer.
    public mutating func attach(_ u: LowRankUpdate, module: String, source: String) throws {
        guard u.a.count == u.rank * inFeatures, u.b.count == outFeatures * u.rank else {
            throw ModelError("\(source): module '\(module)' (rank \(u.rank)) does not fit the model's [\(outFeatures), \(inFeatures)] layer (adapter for a different base?)")
        }
        lowRank = u
    }

    /// x: [rows × in] → [rows × out]
    public func forward(_ x: FloatBuffer, rows: Int) -> FloatBuffer {
        let y = FloatBuffer(count: rows * outFeatures)
        let yp = y.mutable.baseAddress!
        if let q = quantized, rows <= 2 {
            for r in 0..<rows {
                if int8Activations { q.matvecInt8(x.values.baseAddress! + r * inFeatures, into: yp + r * outFeatures) }
                else { q.matvec(x.values.baseAddress! + r * inFeatures, into: yp + r * outFeatures) }
            }
            if let bias { for r in 0..<rows { for j in 0..<outFeatures { yp[r * outFeatures + j] += bias[j] } } }
            addLowRank(x, rows: rows, into: yp)
            return y
        }
        if let bias {
            let b = bias.values
            for r in 0..<rows { (yp + r * outFeatures).update(from: b.baseAddress!, count: outFeatures) }
        }
        Linalg.gemm(m: rows, n: outFeatures, k: inFeatures, a: x.values.baseAddress!, transA: false,
                    b: weight.values.baseAddress!, transB: true, beta: bias == nil ? 0 : 1, c: yp)
        addLowRank(x, rows: rows, into: yp)
        return y
    }

    private func addLowRank(_ x: FloatBuffer, rows: Int, into yp: UnsafeMutablePointer<Float>) {
        if let lr = lowRank {
            let t = FloatBuffer(count: rows * lr.rank)
            Linalg.gemm(m: rows, n: lr.rank, k: inFeatures, a: x.values.baseAddress!, b: lr.a.values.baseAddress!, transB: true,
                        c: t.mutable.baseAddress!)
            Linalg.gemm(m: rows, n: outFeatures, k: lr.rank, alpha: lr.scale, a: t.values.baseAddress!,
                        b: lr.b.values.baseAddress!, transB: true, beta: 1, c: yp)
        }
    }
}

/// Layer normalisation over the last dimension: (x − mean) / sqrt(var + eps) · γ + β.
public struct LayerNorm: Sendable {
    public let gamma: FloatBuffer
    public let beta: FloatBuffer
    public let eps: Float

    public init(gamma: FloatBuffer, beta: FloatBuffer, eps: Float) { self.gamma = gamma; self.beta = beta; self.eps = eps }

    /// In place over `rows` rows of width γ.count.
    public func forward(_ x: FloatBuffer, rows: Int) {
        let d = gamma.count
        let xv = x.mutable, g = gamma.values, b = beta.values
        parallelFor(count: rows, minChunk: 16) { rr in
            for r in rr {
                let row = xv.baseAddress! + r * d
                var mean = 0.0
                for j in 0..<d { mean += Double(row[j]) }
                mean /= Double(d)
                var varSum = 0.0
                for j in 0..<d { let c = Double(row[j]) - mean; varSum += c * c }
                let inv = Float(1 / (varSum / Double(d) + Double(eps)).squareRoot())
                let m = Float(mean)
                for j in 0..<d { row[j] = (row[j] - m) * inv * g[j] + b[j] }
            }
        }
    }
}

/// Token-id lookup into an embedding table [vocabulary × width].
public struct Embedding: Sendable {
    public let table: FloatBuffer
    public let width: Int

    public init(table: FloatBuffer, width: Int) { self.table = table; self.width = width }

    public var count: Int { table.count / width }

    /// Adds the rows of `ids` into `out` (rows × width), or copies them when `accumulate` is false.
    public func gather(_ ids: [Int], into out: FloatBuffer, accumulate: Bool) {
        let t = table.values, o = out.mutable
        for (r, id) in ids.enumerated() {
            let src = t.baseAddress! + id * width, dst = o.baseAddress! + r * width
            if accumulate { for j in 0..<width { dst[j] += src[j] } } else { dst.update(from: src, count: width) }
        }
    }
}

/// The model module path an adapter's module name refers to: equal, or with a task-model prefix
/// (`bert.`, `base_model.model.`) in front.
func matchModule(_ name: String, in known: [String], source: String) throws -> String {
    guard let path = known.first(where: { name == $0 || name.hasSuffix("." + $0) }) else {
        throw ModelError("\(source): module '\(name)' is not a linear layer of this model (e.g. \(known.prefix(3).joined(separator: ", ")))")
    }
    return path
}
