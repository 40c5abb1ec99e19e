import GraftTensor

/// y = x·Wᵀ + b for a batch of rows, with the adapter updates attached to it (`updates`: LoRA, DoRA,
/// IA³, … — each method's math is in its GraftAdapters folder, behind `LayerUpdate`). W is [out × in] as
/// PyTorch stores it. `forward` is inference; `forwardTraining` / `backward` (LinearTraining.swift) are
/// the training pair.
public struct Linear: Sendable {
    public let weight: FloatBuffer
    public let bias: FloatBuffer?
    public let inFeatures: Int
    public let outFeatures: Int
    /// The adapters' updates on this layer, unfused, applied in order (each wraps the layer beneath it).
    /// Training runs one.
    public var updates: [any LayerUpdate] = []
    /// The same weight in its stored block format, used for matrix–vector products (decode).
    public var quantized: QuantizedMatrix?
    /// Quantise the input to 8 bits for those products (llama.cpp's decode arithmetic) instead of
    /// multiplying in float.
    public var int8Activations = false
    /// Where `backward` accumulates the gradients of the weight and bias when they train (a
    /// classification head, full fine-tuning); nil when they are frozen. An update's gradients are its own.
    public var gradients: LinearGradients?
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

    /// Adds an adapter's update on top of those already attached, checking it fits this layer; `module`
    /// is the layer's path in the model.
    public mutating func attach(_ u: any LayerUpdate, module: String, source: String) throws {
        try fit(u, module: module, source: source)
        updates.append(u)
    }

    /// Checks an update fits this layer (and lets it take its slice of shared tensors), without attaching it.
    public func fit(_ u: any LayerUpdate, module: String, source: String) throws {
        if let why = u.fit(module: module, inFeatures: inFeatures, outFeatures: outFeatures) {
            throw ModelError("\(source): module '\(module)' \(why), but the model's layer is [\(outFeatures), \(inFeatures)] (adapter for a different base?)")
        }
    }

    /// Makes the weight and bias train (a classification head, full fine-tuning): owned copies the
    /// optimizer updates in place (the loaded ones may be read-only file mappings), zeroed gradients, and
    /// no packed or quantised copies, which would not follow the updates.
    public mutating func trainWeights() {
        var l = Linear(weight: FloatBuffer(weight.array), bias: bias.map { FloatBuffer($0.array) }, inFeatures: inFeatures, outFeatures: outFeatures)
        l.updates = updates
        l.gradients = LinearGradients.zeros(for: l)
        self = l
    }

    /// Whether `backward` has gradients to accumulate here (the weight, or an update that trains).
    public var trains: Bool { gradients != nil || updates.contains { $0.isTraining } }

    /// x: [rows × in] → [rows × out]
    public func forward(_ x: FloatBuffer, rows: Int) -> FloatBuffer { forward(x, rows: rows, residual: nil) }

    /// act(the layer with its updates + residual): x [rows × in], residual [rows × out] → [rows × out].
    /// With a packed weight (`packForInference`) the residual and GELU are applied inside the product.
    public func forward(_ x: FloatBuffer, rows: Int, residual: FloatBuffer?, activation: F32Matrix.Activation = .none) -> FloatBuffer {
        if !updates.isEmpty {
            // The updates must come before the residual and the activation: only the bias is fused.
            let base = updates.indices.dropLast().reduce(frozen(inference: true)) { inner, i in stacked(updates[i], on: inner) }
            return finish(updates.last!.forward(x, rows: rows, base: base, rng: nil).y, residual: residual, activation: activation)
        }
        let y = FloatBuffer(count: rows * outFeatures)
        let yp = y.mutable.baseAddress!
        if let packed, bf16 == nil, quantized == nil || rows > 2 {
            packed.multiply(x.values.baseAddress!, m: rows, into: yp, bias: bias?.values.baseAddress,
                            residual: residual?.values.baseAddress, activation: activation)
            return y
        }
        inferenceProduct(x.values.baseAddress!, rows: rows, into: yp)
        return finish(y, residual: residual, activation: activation)
    }

    /// The layer over a batch whose row groups each add their own adapters' updates, unfused and weighted
    /// (`graft serve`'s mixed-adapter batches): the layer's product once for all rows, then for each group
    /// y_g + Σ sᵢ·(Uᵢ(x_g) − y_g), each update on its own rows only (S-LoRA's grouped products). An
    /// update that asks its base for x_g gets the rows already computed; one that first changes its input
    /// (IA³ on a feed-forward input) gets a product of its own.
    public func forward(_ x: FloatBuffer, rows: Int, groups: [RowGroup]) -> FloatBuffer {
        let y = forward(x, rows: rows)
        for g in groups where !g.updates.isEmpty {
            let n = g.rows.count, nIn = inFeatures, nOut = outFeatures
            let xg = FloatBuffer(count: n * nIn), yg = FloatBuffer(count: n * nOut)
            xg.mutable.baseAddress!.update(from: x.values.baseAddress! + g.rows.lowerBound * nIn, count: n * nIn)
            let yRows = y.mutable.baseAddress! + g.rows.lowerBound * nOut
            yg.mutable.baseAddress!.update(from: yRows, count: n * nOut)
            let base = FrozenLinear(weight: weight, bias: bias, inFeatures: nIn, outFeatures: nOut,
                                    product: { xi, r in
                                        guard xi.values.baseAddress == xg.values.baseAddress, r == n else { return forward(xi, rows: r) }
                                        let copy = FloatBuffer(count: n * nOut)
                                        copy.mutable.baseAddress!.update(from: yg.values.baseAddress!, count: n * nOut)
                                        return copy
                                    },
                                    inputProduct: { _, _ in preconditionFailure("grouped updates are for inference only") })
            for (u, s) in g.updates {
                let yu = u.forward(xg, rows: n, base: base, rng: nil).y
                withExtendedLifetime(yu) {
                    let v = yu.values, b = yg.values
                    if g.updates.count == 1, s == 1 { yRows.update(from: v.baseAddress!, count: n * nOut); return }
                    for i in 0..<(n * nOut) { yRows[i] += s * (v[i] - b[i]) }
                }
            }
        }
        return y
    }

    /// x·Wᵀ + b into `yp` [rows × out] by inference's fastest path: the stored blocks' matrix–vector
    /// products for one or two rows (decode), the packed weight, or training's product.
    private func inferenceProduct(_ x: UnsafePointer<Float>, rows: Int, into yp: UnsafeMutablePointer<Float>) {
        if let q = quantized, rows <= 2 {
            for r in 0..<rows {
                if int8Activations { q.matvecInt8(x + r * inFeatures, into: yp + r * outFeatures) }
                else { q.matvec(x + r * inFeatures, into: yp + r * outFeatures) }
            }
            if let bias { for r in 0..<rows { for j in 0..<outFeatures { yp[r * outFeatures + j] += bias[j] } } }
        } else if let packed, bf16 == nil {
            packed.multiply(x, m: rows, into: yp, bias: bias?.values.baseAddress)
        } else {
            frozenProduct(x, rows: rows, into: yp, backward: false, tokens: nil)
        }
    }

    /// The frozen layer as the updates see it: inference's products, or training's (over `tokens`' rows).
    func frozen(inference: Bool, tokens: TokenRows? = nil) -> FrozenLinear {
        FrozenLinear(weight: weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures,
                     product: { x, rows in
                         let y = FloatBuffer(count: rows * outFeatures)
                         if inference { inferenceProduct(x.values.baseAddress!, rows: rows, into: y.mutable.baseAddress!) }
                         else { frozenProduct(x.values.baseAddress!, rows: rows, into: y.mutable.baseAddress!, backward: false, tokens: tokens) }
                         return y
                     },
                     inputProduct: { dy, rows in
                         let dx = FloatBuffer(count: rows * inFeatures)
                         frozenProduct(dy.values.baseAddress!, rows: rows, into: dx.mutable.baseAddress!, backward: true, tokens: tokens)
                         return dx
                     })
    }

    /// `inner` with `u` applied on top, as the layer beneath the next update (inference only).
    private func stacked(_ u: any LayerUpdate, on inner: FrozenLinear) -> FrozenLinear {
        FrozenLinear(weight: weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures,
                     product: { x, rows in u.forward(x, rows: rows, base: inner, rng: nil).y },
                     inputProduct: { _, _ in preconditionFailure("stacked updates are for inference only") })
    }

    /// y += residual, then the activation, in place.
    private func finish(_ y: FloatBuffer, residual: FloatBuffer?, activation: F32Matrix.Activation) -> FloatBuffer {
        if let residual { addInPlace(y, residual) }
        if activation == .gelu { Activation.gelu(y) }
        return y
    }
}

/// Consecutive rows of a batch and the updates they add to a layer, each with its weight.
public struct RowGroup {
    public let rows: Range<Int>
    public let updates: [(update: any LayerUpdate, scale: Float)]
    public init(rows: Range<Int>, updates: [(update: any LayerUpdate, scale: Float)]) { self.rows = rows; self.updates = updates }
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
