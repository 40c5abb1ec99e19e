import CKernels

/// A frozen matrix B [k × n] packed once into float32 column panels, for inference products
/// C = act(A·B + bias + residual). Unlike a BLAS SGEMM, which repacks B on every call, the packing is
/// paid once; the bias, a residual and GELU are applied while each tile of C is still in registers.
/// Float32 arithmetic throughout; see `Algorithm` for the order of the sums.
public final class F32Matrix: @unchecked Sendable {
    public enum Activation: Int32, Sendable { case none = 0, gelu = 1 }

    /// How the product is computed (see CKernels/f32gemm.c).
    public enum Algorithm: Sendable {
        /// m·k·n multiply-adds, in k order per 1536-block: agrees with BLAS to rounding.
        case classical
        /// One level of Strassen's algorithm: 7/8 of the multiply-adds, B packed as seven (k/2 × n/2)
        /// operands (7/4 of B's memory). Each output is a sum of up to four products whose operands are
        /// sums of two quadrants, so rounding errors are a little larger than classical's (1.2–1.7× in
        /// the kernel tests against double precision). Requires k and n even.
        case strassen
        /// Strassen where it pays: k and n even and at least 384, on a CPU where it measured faster
        /// (`KernelChoices.active.strassen`). On Zen 4 with AVX-512 (2 cores, m = 2048, `graft bench gemm`
        /// and BERT's products with their epilogues): 7–10 % faster than classical at k = 384, 12 % at
        /// k = 1536; at k = n = 192 the half-size products are too short and it is ~20 % slower (one
        /// core). On Zen 3 with AVX2 it lost at most shapes (MiniLM embeddings 0.93×). Classical otherwise.
        case automatic
    }

    public let k: Int, n: Int
    /// With Strassen's layout, products of fewer rows than this run in the classical order from the
    /// operands, split over the cores by columns. With few rows the weight streams from memory once and
    /// bounds the time: Strassen's seven operands are 7/4 of it, and a split by rows would stream all of
    /// them on each core. Measured (MiniLM embeddings, 2 cores; speed as a fraction of a classically
    /// packed weight's, split by rows → by columns): 16 rows 0.79 → 0.92–0.95, 64 rows 0.87 → 0.96–0.97,
    /// 128 rows 0.96 → 0.98–1.01, 192 rows 1.04 → 0.95. (Internal so that the tests can take either path.)
    var columnSplitBelow = 160
    /// The algorithm in use (`automatic` resolved).
    public let algorithm: Algorithm
    private let packed: UnsafeMutablePointer<Float>
    private let panels: Int

    /// Packs `source`: B itself [k × n] row-major, or with `transposed` its transpose stored [n × k]
    /// (a PyTorch weight W [out × in] as B = Wᵀ for y = x·Wᵀ).
    public init(_ source: UnsafePointer<Float>, k: Int, n: Int, transposed: Bool, algorithm: Algorithm = .automatic) {
        self.k = k; self.n = n
        let even = graft_f32s_supported(Int32(k), Int32(n)) != 0
        switch algorithm {
        case .classical: self.algorithm = .classical
        case .strassen:
            precondition(even, "F32Matrix: Strassen needs k and n even (got \(k) × \(n))")
            self.algorithm = .strassen
        case .automatic: self.algorithm = KernelChoices.active.strassen && even && k >= 384 && n >= 384 ? .strassen : .classical
        }
        panels = Int(graft_f32_panels(Int32(n)))
        let strassen = self.algorithm == .strassen
        let count = strassen ? graft_f32s_packed_size(Int32(k), Int32(n)) : graft_f32_packed_size(Int32(k), Int32(n))
        packed = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64).bindMemory(to: Float.self, capacity: count)
        if strassen {
            graft_f32s_pack_b(source, Int32(k), Int32(n), transposed ? 1 : 0, packed)
        } else {
            graft_f32_pack_b(source, Int32(k), Int32(n), transposed ? 1 : 0, packed)
        }
    }

    deinit { packed.deallocate() }

    /// C[m × n] = act(A[m × k]·B + bias + residual), split over the cores (by column panels, or for
    /// Strassen by rows, below `columnSplitBelow` rows by columns). Row strides default to the dense
    /// ones; `residual` [m × n] must not overlap `c`, nor `a` overlap `c`.
    public func multiply(_ a: UnsafePointer<Float>, m: Int, lda: Int? = nil, into c: UnsafeMutablePointer<Float>, ldc: Int? = nil,
                         bias: UnsafePointer<Float>? = nil, residual: UnsafePointer<Float>? = nil, ldr: Int? = nil,
                         activation: Activation = .none) {
        let lda = Int32(lda ?? k), ldc = Int32(ldc ?? n), ldr = Int32(ldr ?? n)
        let work = UncheckedSendable((a, c, packed, bias, residual))
        let (M, N, K, act) = (Int32(m), Int32(n), Int32(k), activation.rawValue)
        if algorithm == .strassen && m < columnSplitBelow {
            // Units of 64 columns in either half of C (a unit's two products, the one that stores and the
            // one that adds, run on one core), about a million multiply-adds per range at least.
            let units = 2 * Int(graft_f32_panels(Int32(n / 2)))
            let minUnits = max(1, (1 << 20) / max(1, m * k * 64))
            parallelFor(count: units, minChunk: minUnits) { r in
                let (a, c, p, bias, res) = work.value
                graft_f32s_gemm_columns(M, N, K, a, lda, p, c, ldc, bias, res, ldr, act, Int32(r.lowerBound), Int32(r.upperBound))
            }
            return
        }
        if algorithm == .strassen {
            // Ranges of 6-row strips (the kernel's tile height), about a million multiply-adds each at least.
            let strips = (m + 5) / 6
            let minStrips = max(1, (1 << 20) / max(1, 6 * k * n))
            parallelFor(count: strips, minChunk: minStrips) { r in
                let (a, c, p, bias, res) = work.value
                graft_f32s_gemm(N, K, a, lda, p, c, ldc, bias, res, ldr, act,
                                Int32(6 * r.lowerBound), Int32(min(m, 6 * r.upperBound)))
            }
            return
        }
        // About a million multiply-adds per panel range before a second thread pays off.
        let minPanels = max(1, (1 << 20) / max(1, m * k * ((n + panels - 1) / panels)))
        parallelFor(count: panels, minChunk: minPanels) { r in
            let (a, c, p, bias, res) = work.value
            graft_f32_gemm(M, N, K, a, lda, p, c, ldc, bias, res, ldr, act, Int32(r.lowerBound), Int32(r.upperBound))
        }
    }
}
