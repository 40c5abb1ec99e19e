import GraftTensor

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


extension Embedding {
    /// Backward of `gather`: adds each row of `dy` into the gradient of the table row it came from.
    /// (Graft's adapters keep the table frozen; this is here for completeness and gradient checks.)
    public func backward(_ ids: [Int], _ dy: FloatBuffer, into gradTable: FloatBuffer) {
        let g = gradTable.mutable, d = dy.values
        for (r, id) in ids.enumerated() { for j in 0..<width { g[id * width + j] += d[r * width + j] } }
    }
}
