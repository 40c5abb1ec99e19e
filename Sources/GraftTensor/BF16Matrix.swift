import CKernels

/// A frozen matrix B [k × n] packed once into bf16 panels, for products C = A·B with A converted to
/// bf16 on the fly and float32 accumulation (AVX512-BF16's VDPBF16PS: twice the multiply-adds of an
/// FP32 FMA). Inputs lose mantissa bits (8 instead of 24), like PyTorch's bf16 autocast; sums are exact
/// float32. Used for training's frozen-weight products when bf16 precision is chosen.
public final class BF16Matrix: @unchecked Sendable {
    public let k: Int, n: Int
    private let packed: UnsafeMutablePointer<UInt16>
    private let panels: Int

    /// Whether the host has AVX512-BF16 (otherwise a portable loop computes the same values slowly).
    public static var hardwareAccelerated: Bool { graft_has_bf16() != 0 }

    /// Packs `source`: B itself [k × n] row-major, or with `transposed` its transpose stored [n × k]
    /// (a PyTorch weight W [out × in] as B = Wᵀ for y = x·Wᵀ).
    public init(_ source: UnsafePointer<Float>, k: Int, n: Int, transposed: Bool) {
        self.k = k; self.n = n
        panels = (n + 63) / 64
        let size = graft_bf16_packed_size(Int32(k), Int32(n))
        packed = .allocate(capacity: size)
        graft_bf16_pack_b(source, Int32(k), Int32(n), transposed ? 1 : 0, packed)
    }

    deinit { packed.deallocate() }

    /// C[m × n] = A[m × k] · B + beta · C (row strides lda, ldc), split over the cores by column panels.
    public func multiply(_ a: UnsafePointer<Float>, m: Int, lda: Int? = nil, into c: UnsafeMutablePointer<Float>, ldc: Int? = nil, beta: Float = 0) {
        let lda = Int32(lda ?? k), ldc = Int32(ldc ?? n)
        let work = UncheckedSendable((a, c, packed))
        let (M, N, K) = (Int32(m), Int32(n), Int32(k))
        // Enough rows to be worth a second thread: about a million multiply-adds per panel range.
        let minPanels = max(1, (1 << 20) / max(1, m * k * 64))
        parallelFor(count: panels, minChunk: minPanels) { r in
            let (a, c, p) = work.value
            graft_bf16_gemm(M, N, K, a, lda, p, c, ldc, beta, Int32(r.lowerBound), Int32(r.upperBound))
        }
    }
}
