import Foundation
import GraftTensor

/// Llama's training pass: `forwardTraining` keeps the activations the backward pass needs, `backward`
/// walks the layers in reverse into the gradients of the trainable linear layers (`Linear.gradients`),
/// stopping at the lowest layer with something to train. `causalLMLoss` runs forward, the language-
/// model head on the positions that have a target only, cross-entropy, and backward.
extension LlamaModel {
    struct LayerTape {
        let x: FloatBuffer, rstd1: [Float], normed1: FloatBuffer
        let q: Linear.Saved, k: Linear.Saved, v: Linear.Saved
        let qRot: FloatBuffer, kRot: FloatBuffer, vOut: FloatBuffer, attention: SelfAttention.Saved
        let o: Linear.Saved
        let x2: FloatBuffer, rstd2: [Float]
        let gate: Linear.Saved, up: Linear.Saved, gateOut: FloatBuffer, upOut: FloatBuffer, down: Linear.Saved
        /// What the sublayer updates (bottleneck adapters) kept, after attention and after the MLP.
        var attnAdapter: AnyObject? = nil, outAdapter: AnyObject? = nil
    }

    public struct Tape: @unchecked Sendable {
        let layers: [LayerTape]
        let final: FloatBuffer, finalRstd: [Float]
        /// `length` and `lengths` count the prompt's virtual tokens, which come first in every sequence.
        public let batch: Int, length: Int, lengths: [Int]
        /// Virtual tokens ahead of each sequence's tokens (prompt tuning; 0 without).
        public let prompt: Int
    }

    /// Training products with the frozen weights (and the language-model head) in bf16, float32
    /// accumulation: about twice the multiply-adds per instruction on CPUs with AVX512-BF16.
    public mutating func enableBF16() {
        updateEveryLinear { $0.enableBF16() }
        let h = config.hidden, v = config.vocab
        lmHeadBF16 = (BF16Matrix(lmHead.values.baseAddress!, k: h, n: v, transposed: true),
                      BF16Matrix(lmHead.values.baseAddress!, k: v, n: h, transposed: false))
    }

    var trainsVirtualTokens: Bool { virtualTokens?.isTraining ?? false }

    func isTrainable(_ i: Int) -> Bool {
        let l = layers[i]
        return [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].contains { $0.trains } || sublayerUpdates.trains(layer: i)
    }

    var attention: SelfAttention { SelfAttention(heads: config.heads, kvHeads: config.kvHeads, headDim: config.headDim, causal: true) }

    /// Rotates positions `from`, `from` + 1, … of every sequence.
    private func rotate(_ x: FloatBuffer, heads: Int, batch b: Int, length t: Int, from: Int, inverse: Bool) {
        let w = heads * config.headDim, p = x.mutable.baseAddress!
        for s in 0..<b { for i in 0..<t { rope.apply(p + (s * t + i) * w, heads: heads, position: from + i, inverse: inverse) } }
    }

    /// Layer `i`'s prefix keys and values, when a prefix is attached.
    func prefixKeysValues(layer i: Int) -> SelfAttention.Prefix? {
        guard let vt = virtualTokens, vt.placement == .keysValues else { return nil }
        let kvw = config.kvHeads * config.headDim
        return SelfAttention.Prefix(keys: vt.keysValues(layer: i, value: false, kvWidth: kvw), values: vt.keysValues(layer: i, value: true, kvWidth: kvw),
                                    count: vt.count, stride: vt.width)
    }

    /// The first position of the tokens (after a prefix, as after a KV cache of its length).
    var firstPosition: Int { virtualTokens?.placement == .keysValues ? virtualTokens!.count : 0 }

    /// Hidden states after the final norm [batch·length × hidden] (sequences right-padded) and the tape.
    /// Positions run from 0; a prompt (`virtualTokens`, `.embeddings`) takes the first ones in every
    /// sequence (`length` counts it), a prefix puts the tokens at positions from its length on.
    public func forwardTraining(_ batch: [[Int]], rng: UnsafeMutablePointer<SeededRNG>?) throws -> (hidden: FloatBuffer, tape: Tape) {
        guard let longest = batch.map(\.count).max(), longest > 0 else { throw ModelError("empty batch") }
        let vt = virtualTokens, prompt = vt?.placement == .embeddings ? vt!.count : 0, start = firstPosition
        vt?.prepare()
        let t = prompt + longest
        guard start + t <= config.contextLength else {
            throw ModelError("sequence of \(longest) tokens\(vt.map { " after \($0.count) virtual tokens" } ?? "") exceeds the model's context of \(config.contextLength)")
        }
        for ids in batch { for id in ids where id < 0 || id >= config.vocab { throw ModelError("token id \(id) outside the vocabulary (\(config.vocab))") } }
        let b = batch.count, h = config.hidden, rows = b * t, lengths = batch.map { prompt + $0.count }
        var x = FloatBuffer(repeating: 0, count: rows * h)
        for (s, ids) in batch.enumerated() {
            if let vt, prompt > 0 { (x.mutable.baseAddress! + s * t * h).update(from: vt.values.values.baseAddress!, count: prompt * h) }
            for (i, id) in ids.enumerated() {
                (x.mutable.baseAddress! + (s * t + prompt + i) * h).update(from: embedding.values.baseAddress! + id * h, count: h)
            }
            if let vt, prompt > 0 { vt.addOffsets(to: x.mutable.baseAddress! + (s * t + prompt) * h, tokens: ids.count) }
        }
        let attn = attention
        var tapes: [LayerTape] = []
        for (li, layer) in layers.enumerated() {
            let (n1, r1) = layer.attnNorm.forwardTraining(x, rows: rows)
            let (q, qs) = layer.q.forwardTraining(n1, rows: rows, rng: rng)
            let (k, ks) = layer.k.forwardTraining(n1, rows: rows, rng: rng)
            let (v, vs) = layer.v.forwardTraining(n1, rows: rows, rng: rng)
            rotate(q, heads: config.heads, batch: b, length: t, from: start, inverse: false)
            rotate(k, heads: config.kvHeads, batch: b, length: t, from: start, inverse: false)
            let (ctx, att) = attn.forwardTraining(q: q, k: k, v: v, batch: b, length: t, lengths: lengths, prefix: prefixKeysValues(layer: li))
            let (o, os) = layer.o.forwardTraining(ctx, rows: rows, rng: rng)
            let attnAdapter = sublayerUpdates.apply(li, .attention, h: o, residual: x, rows: rows, norm: nil, keep: true)
            addInPlace(o, x)  // o ← x + attention: the residual stream after attention
            let x2 = o
            let (n2, r2) = layer.mlpNorm.forwardTraining(x2, rows: rows)
            let (g, gs) = layer.gate.forwardTraining(n2, rows: rows, rng: rng)
            let (u, us) = layer.up.forwardTraining(n2, rows: rows, rng: rng)
            let hmid = Activation.swiglu(gate: g, up: u)
            let (d, ds) = layer.down.forwardTraining(hmid, rows: rows, rng: rng)
            let outAdapter = sublayerUpdates.apply(li, .feedForward, h: d, residual: x2, rows: rows, norm: nil, keep: true)
            addInPlace(d, x2)
            tapes.append(LayerTape(x: x, rstd1: r1, normed1: n1, q: qs, k: ks, v: vs, qRot: q, kRot: k, vOut: v, attention: att, o: os,
                                   x2: x2, rstd2: r2, gate: gs, up: us, gateOut: g, upOut: u, down: ds, attnAdapter: attnAdapter, outAdapter: outAdapter))
            x = d
        }
        let (out, rf) = norm.forwardTraining(x, rows: rows)
        return (out, Tape(layers: tapes, final: x, finalRstd: rf, batch: b, length: t, lengths: lengths, prompt: prompt))
    }

    /// Backward from dL/d(hidden states after the final norm). Training virtual tokens' gradients reach
    /// them through every layer's attention (a prefix) or down to the embeddings (a prompt).
    public func backward(_ dHidden: FloatBuffer, tape: Tape) {
        let rows = tape.batch * tape.length, b = tape.batch, t = tape.length, h = config.hidden
        let vt = trainsVirtualTokens ? virtualTokens : nil, start = firstPosition, kvw = config.kvHeads * config.headDim
        guard let lowest = vt != nil ? 0 : (0..<layers.count).first(where: isTrainable) else { return }
        let attn = attention
        var dx = norm.backward(dHidden, input: tape.final, rstd: tape.finalRstd, rows: rows)
        for i in stride(from: layers.count - 1, through: lowest, by: -1) {
            let l = layers[i], s = tape.layers[i]
            // MLP: x_out = x2 + down(silu(gate(n2)) ⊙ up(n2)) (+ a sublayer update's term), n2 = norm(x2)
            let (dOut, dResidual2) = sublayerUpdates.backward(i, .feedForward, dx, saved: s.outAdapter, rows: rows, norm: nil)
            let dh = l.down.backward(dOut, saved: s.down, rows: rows)!
            let (dg, du) = Activation.swigluBackward(dh, gate: s.gateOut, up: s.upOut)
            let dn2 = l.gate.backward(dg, saved: s.gate, rows: rows)!
            addInPlace(dn2, l.up.backward(du, saved: s.up, rows: rows)!)
            let dx2 = l.mlpNorm.backward(dn2, input: s.x2, rstd: s.rstd2, rows: rows)
            addInPlace(dx2, dResidual2)
            // Attention: x2 = x + o(attn(rope(q(n1)), rope(k(n1)), v(n1))) (+ a sublayer update's term), n1 = norm(x)
            let (dAttn, dResidual1) = sublayerUpdates.backward(i, .attention, dx2, saved: s.attnAdapter, rows: rows, norm: nil)
            let dctx = l.o.backward(dAttn, saved: s.o, rows: rows)!
            let (dq, dk, dv, dPrefix) = attn.backward(dctx, q: s.qRot, k: s.kRot, v: s.vOut, saved: s.attention, batch: b, length: t,
                                                      lengths: tape.lengths, prefix: prefixKeysValues(layer: i))
            if let vt, let dPrefix {
                vt.accumulate(layer: i, value: false, kvWidth: kvw, dPrefix.dk)
                vt.accumulate(layer: i, value: true, kvWidth: kvw, dPrefix.dv)
            }
            rotate(dq, heads: config.heads, batch: b, length: t, from: start, inverse: true)
            rotate(dk, heads: config.kvHeads, batch: b, length: t, from: start, inverse: true)
            let needInput = i > lowest || (vt != nil && tape.prompt > 0)  // a training prompt needs layer 0's input gradient
            let dq1 = l.q.backward(dq, saved: s.q, rows: rows, needInput: needInput)
            let dk1 = l.k.backward(dk, saved: s.k, rows: rows, needInput: needInput)
            let dv1 = l.v.backward(dv, saved: s.v, rows: rows, needInput: needInput)
            guard needInput, let dq1, let dk1, let dv1 else { break }
            addInPlace(dq1, dk1); addInPlace(dq1, dv1)
            let dxn = l.attnNorm.backward(dq1, input: s.x, rstd: s.rstd1, rows: rows)
            addInPlace(dxn, dResidual1)
            dx = dxn
        }
        // A training prompt: the embeddings' gradient at its rows, summed over the batch (and at the
        // tokens' rows for its offsets); a derived prompt passes them to its source.
        if let vt, tape.prompt > 0, let g = vt.gradient {
            let gp = g.mutable, dv = dx.values
            for s in 0..<b {
                for j in 0..<(tape.prompt * h) { gp[j] += dv[s * t * h + j] }
                vt.accumulateOffsets(from: dv.baseAddress! + (s * t + tape.prompt) * h, tokens: tape.lengths[s] - tape.prompt)
            }
            vt.finishBackward()
        }
    }

    /// One forward + backward of next-token prediction: `targets[s][i]` is the token position i of
    /// sequence s must predict (nil: no loss there). The head runs only on positions with a target.
    /// Gradients are of (summed loss) · `gradScale` (default 1/number of targets: the mean); returns
    /// the summed loss and the number of targets.
    public func causalLMLoss(_ batch: [[Int]], targets: [[Int?]], gradScale: Float? = nil,
                             rng: UnsafeMutablePointer<SeededRNG>?, backward runBackward: Bool = true) throws -> (sum: Double, count: Int) {
        let (hidden, tape) = try forwardTraining(batch, rng: rng)
        let h = config.hidden, t = tape.length
        var rows: [Int] = [], ys: [Int] = []
        for (s, tg) in targets.enumerated() {
            guard s < batch.count, tg.count <= batch[s].count else { throw ModelError("targets do not match the batch shape") }
            for (i, y) in tg.enumerated() {
                guard let y else { continue }
                guard y >= 0 && y < config.vocab else { throw ModelError("target id \(y) outside the vocabulary (\(config.vocab))") }
                rows.append(s * t + tape.prompt + i); ys.append(y)
            }
        }
        let gs = gradScale ?? 1 / Float(max(1, rows.count))
        let dHidden = FloatBuffer(repeating: 0, count: hidden.count)
        var sum = 0.0
        // The head in chunks of positions, so the logits never hold more than chunk × vocabulary floats.
        let chunk = 64
        var start = 0
        while start < rows.count {
            let n = min(chunk, rows.count - start)
            let xs = FloatBuffer(count: n * h)
            for j in 0..<n { (xs.mutable.baseAddress! + j * h).update(from: hidden.values.baseAddress! + rows[start + j] * h, count: h) }
            let logits = FloatBuffer(count: n * config.vocab)
            if let packed = lmHeadBF16?.forward {
                packed.multiply(xs.values.baseAddress!, m: n, into: logits.mutable.baseAddress!)
            } else {
                Linalg.gemmParallel(m: n, n: config.vocab, k: h, a: xs.values.baseAddress!, b: lmHead.values.baseAddress!, transB: true,
                                    c: logits.mutable.baseAddress!)
            }
            let (s, _, dl) = Loss.crossEntropy(logits, classes: config.vocab, targets: ys[start..<(start + n)].map { $0 }, gradScale: gs)
            sum += s
            if runBackward {
                let dxs = FloatBuffer(count: n * h)
                if let packed = lmHeadBF16?.backward {
                    packed.multiply(dl.values.baseAddress!, m: n, into: dxs.mutable.baseAddress!)
                } else {
                    Linalg.gemmParallel(m: n, n: h, k: config.vocab, a: dl.values.baseAddress!, b: lmHead.values.baseAddress!, c: dxs.mutable.baseAddress!)
                }
                for j in 0..<n { (dHidden.mutable.baseAddress! + rows[start + j] * h).update(from: dxs.values.baseAddress! + j * h, count: h) }
            }
            start += n
        }
        if runBackward { backward(dHidden, tape: tape) }
        return (sum, rows.count)
    }
}
