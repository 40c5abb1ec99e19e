import GraftTensor

/// y = x·Wᵀ + b (+ a low-rank update) for a batch of rows. W is [out × in] as PyTorch stores it.
/// `forward` is inference; `forwardTraining` / `backward` (below) are the training pair.
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
    /// Where `backward` accumulates the gradients of the trainable parts; nil when the layer is frozen
    /// (the input gradient is still computed for the layers below).
    public var gradients: LinearGradients?
    /// Dropout probability on the low-rank branch's input (LoRA dropout), in training only.
    public var loraDropout: Float = 0
    /// The frozen weight packed in bf16 for training's products (x·Wᵀ forward, dy·W backward), when
    /// bf16 precision is on; nil: float32 BLAS.
    public var bf16: (forward: BF16Matrix, backward: BF16Matrix)?

    /// The frozen weight packed once in float32 for training's products (x·Wᵀ forward; dy·W backward
    /// unless only the forward pass runs), where that measured faster than BLAS; nil: BLAS, or bf16.
    public var f32Training: (forward: F32Matrix, backward: F32Matrix?)?

    /// The frozen weight packed once for float32 inference products (`forward`), with bias, residual and
    /// GELU applied in the product's last step; nil: BLAS, which repacks the weight on every call.
    public var packed: F32Matrix?

    /// Packs the weight for `forward`'s float32 products (inference on CPUs with AVX-512: 10–20 % faster
    /// than BLAS, more with Strassen's algorithm where `algorithm` takes it; the fused epilogue saves a pass
    /// over the output). Costs a second copy of the weight (7/4 of it for Strassen).
    public mutating func packForInference(algorithm: F32Matrix.Algorithm = .automatic) {
        packed = F32Matrix(weight.values.baseAddress!, k: inFeatures, n: outFeatures, transposed: true, algorithm: algorithm)
    }

    /// Packs the weight for bf16 products (training's `forwardTraining` and `backward` then use them).
    public mutating func enableBF16() {
        bf16 = (BF16Matrix(weight.values.baseAddress!, k: inFeatures, n: outFeatures, transposed: true),
                BF16Matrix(weight.values.baseAddress!, k: outFeatures, n: inFeatures, transposed: false))
    }

    /// Prepares training's products with this (frozen) weight: bf16 when `bf16`, else float32 over the
    /// weight packed once where `KernelChoices` measured that faster than BLAS SGEMM, which repacks the
    /// weight on every call (the same float32 arithmetic; sums in another order). `backward: false`
    /// packs only the forward product (evaluation). Only for frozen weights (`trainFully` drops the copies).
    public mutating func packForTraining(bf16: Bool, backward: Bool = true) {
        if bf16 { enableBF16(); return }
        guard KernelChoices.active.packedTraining else { return }
        let w = weight.values.baseAddress!
        // Classical order: each row's sums then run the same way whatever the number of rows, which
        // skipping padding rows relies on (`TokenRows`); Strassen's small-row path would not.
        f32Training = (F32Matrix(w, k: inFeatures, n: outFeatures, transposed: true, algorithm: .classical),
                       backward ? F32Matrix(w, k: outFeatures, n: inFeatures, transposed: false, algorithm: .classical) : nil)
    }

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
    public func forward(_ x: FloatBuffer, rows: Int) -> FloatBuffer { forward(x, rows: rows, residual: nil) }

    /// act(x·Wᵀ + b + low-rank update + residual): x [rows × in], residual [rows × out] → [rows × out].
    /// With a packed weight (`packForInference`) the residual and GELU are applied inside the product.
    public func forward(_ x: FloatBuffer, rows: Int, residual: FloatBuffer?, activation: F32Matrix.Activation = .none) -> FloatBuffer {
        if lowRank?.magnitude != nil { return finish(forwardTraining(x, rows: rows, rng: nil).y, residual: residual, activation: activation) }
        let y = FloatBuffer(count: rows * outFeatures)
        let yp = y.mutable.baseAddress!
        if let q = quantized, rows <= 2 {
            for r in 0..<rows {
                if int8Activations { q.matvecInt8(x.values.baseAddress! + r * inFeatures, into: yp + r * outFeatures) }
                else { q.matvec(x.values.baseAddress! + r * inFeatures, into: yp + r * outFeatures) }
            }
            if let bias { for r in 0..<rows { for j in 0..<outFeatures { yp[r * outFeatures + j] += bias[j] } } }
            addLowRank(x, rows: rows, into: yp)
            return finish(y, residual: residual, activation: activation)
        }
        if let packed, bf16 == nil {
            // The low-rank update must be added before the activation: then only the bias is fused.
            let fuse = lowRank == nil
            packed.multiply(x.values.baseAddress!, m: rows, into: yp, bias: bias?.values.baseAddress,
                            residual: fuse ? residual?.values.baseAddress : nil, activation: fuse ? activation : .none)
            if fuse { return y }
            addLowRank(x, rows: rows, into: yp)
            return finish(y, residual: residual, activation: activation)
        }
        frozenProduct(x.values.baseAddress!, rows: rows, into: yp, backward: false, tokens: nil)
        addLowRank(x, rows: rows, into: yp)
        return finish(y, residual: residual, activation: activation)
    }

    /// y += residual, then the activation, in place.
    private func finish(_ y: FloatBuffer, residual: FloatBuffer?, activation: F32Matrix.Activation) -> FloatBuffer {
        if let residual { addInPlace(y, residual) }
        if activation == .gelu { Activation.gelu(y) }
        return y
    }

    func addLowRank(_ x: FloatBuffer, rows: Int, into yp: UnsafeMutablePointer<Float>) {
        if let lr = lowRank {
            let t = FloatBuffer(count: rows * lr.rank)
            Linalg.gemm(m: rows, n: lr.rank, k: inFeatures, a: x.values.baseAddress!, b: lr.a.values.baseAddress!, transB: true,
                        c: t.mutable.baseAddress!)
            Linalg.gemm(m: rows, n: outFeatures, k: lr.rank, alpha: lr.scale, a: t.values.baseAddress!,
                        b: lr.b.values.baseAddress!, transB: true, beta: 1, c: yp)
        }
    }
}

/// y += x, split over the cores.
func addInPlace(_ y: FloatBuffer, _ x: FloatBuffer) {
    let yv = y.mutable, xv = x.values
    parallelFor(count: yv.count, minChunk: 1 << 15) { r in for i in r { yv[i] += xv[i] } }
}

/// The model module path an adapter's module name refers to: equal, or with a task-model prefix
/// (`bert.`, `base_model.model.`) in front.
func matchModule(_ name: String, in known: [String], source: String) throws -> String {
    guard let path = known.first(where: { name == $0 || name.hasSuffix("." + $0) }) else {
        throw ModelError("\(source): module '\(name)' is not a linear layer of this model (e.g. \(known.prefix(3).joined(separator: ", ")))")
    }
    return path
}
