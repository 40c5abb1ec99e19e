import CKernels

/// A frozen matrix B [k × n] packed once into float32 column panels, for inference products
/// C = act(A·B + bias + residual). Unlike a BLAS SGEMM, which repacks B on every call, the packing is
/// paid once; the bias, a residual and GELU are applied while each tile of C is still in registers.
/// Exact float32 arithmetic (sums in a different order than BLAS: results agree to rounding).
public final class F32Matrix: @unchecked Sendable {
    public enum Activation: Int32, Sendable { case none = 0, gelu = 1 }

    public let k: Int, n: Int
    private let packed: UnsafeMutablePointer<Float>
    private let panels: Int

    /// Packs `source`: B itself [k × n] row-major, or with `transposed` its transpose stored [n × k]
    /// (a PyTorch weight W [out × in] as B = Wᵀ for y = x·Wᵀ).
    public init(_ source: UnsafePointer<Float>, k: Int, n: Int, transposed: Bool) {
        self.k = k; self.n = n
        panels = Int(graft_f32_panels(Int32(n)))
        let count = graft_f32_packed_size(Int32(k), Int32(n))
        packed = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64).bindMemory(to: Float.self, capacity: count)
        graft_f32_pack_b(source, Int32(k), Int32(n), transposed ? 1 : 0, packed)
    }

    deinit { packed.deallocate() }

    /// C[m × n] = act(A[m × k]·B + bias + residual), split over the cores by column panels. Row strides
    /// default to the dense ones; `residual` [m × n] must not overlap `c`.
    public func multiply(_ a: UnsafePointer<Float>, m: Int, lda: Int? = nil, into c: UnsafeMutablePointer<Float>, ldc: Int? = nil,
                         bias: UnsafePointer<Float>? = nil, residual: UnsafePointer<Float>? = nil, ldr: Int? = nil,
                         activation: Activation = .none) {
        let lda = Int32(lda ?? k), ldc = Int32(ldc ?? n), ldr = Int32(ldr ?? n)
        let work = UncheckedSendable((a, c, packed, bias, residual))
        let (M, N, K, act) = (Int32(m), Int32(n), Int32(k), activation.rawValue)
        // About a million multiply-adds per panel range before a second thread pays off.
        let minPanels = max(1, (1 << 20) / max(1, m * k * ((n + panels - 1) / panels)))
        parallelFor(count: panels, minChunk: minPanels) { r in
            let (a, c, p, bias, res) = work.value
            graft_f32_gemm(M, N, K, a, lda, p, c, ldc, bias, res, ldr, act, Int32(r.lowerBound), Int32(r.upperBound))
        }
    }
}
