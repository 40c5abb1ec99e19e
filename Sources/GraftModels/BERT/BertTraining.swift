import Foundation
import GraftTensor

/// BERT's training pass: `forwardTraining` keeps every activation the backward pass needs (the
/// "tape"), `backward` walks the layers in reverse, accumulating into the gradients of the trainable
/// linear layers (`Linear.gradients`). Base weights are frozen: only input gradients flow, and the
/// walk stops at the lowest layer that has something to train.
extension BertModel {
    struct LayerTape {
        let x: FloatBuffer
        let q: Linear.Saved, k: Linear.Saved, v: Linear.Saved
        let qOut: FloatBuffer, kOut: FloatBuffer, vOut: FloatBuffer, attention: SelfAttention.Saved
        let attnOut: Linear.Saved, attnNorm: LayerNorm.Saved
        let up: Linear.Saved, preGelu: FloatBuffer, down: Linear.Saved, outNorm: LayerNorm.Saved
        /// Dropout scales on the attention output and the feed-forward output (nil without dropout).
        let attnDrop: FloatBuffer?, outDrop: FloatBuffer?
        /// Only each sequence's first position was computed past the keys and values (the last layer
        /// of a [CLS] classifier).
        let firstOnly: Bool
        /// What the sublayer updates (bottleneck adapters) kept, after attention and after the feed-forward block.
        var attnAdapter: AnyObject? = nil, outAdapter: AnyObject? = nil
    }

    /// Activations of one training forward pass.
    public struct Tape: @unchecked Sendable {
        let layers: [LayerTape]
        /// `length` and `lengths` count the prompt's virtual tokens, which come first in every sequence.
        public let batch: Int, length: Int, lengths: [Int]
        /// Virtual tokens ahead of each sequence's tokens (prompt tuning; 0 without).
        public let prompt: Int
        /// The embedding LayerNorm's input and dropout, kept when a prompt trains (its gradient passes them).
        let embedding: (norm: LayerNorm.Saved, drop: FloatBuffer?)?
    }

    /// Training products with the frozen weights in bf16 (float32 accumulation): about twice the
    /// multiply-adds per instruction on CPUs with AVX512-BF16, inputs rounded to 8 mantissa bits.
    public mutating func enableBF16() { updateEveryLinear { $0.enableBF16() } }

    /// Prepares the products with the frozen weights for training (and, `backward: false`, for
    /// evaluation through `forwardTraining`): bf16, or float32 over weights packed once where that
    /// measured faster than BLAS (`Linear.packForTraining`).
    public mutating func packForTraining(bf16: Bool, backward: Bool = true) {
        updateEveryLinear { $0.packForTraining(bf16: bf16, backward: backward) }
    }

    /// Whether any layer (or the virtual tokens) has something to train (else backward below the head is
    /// skipped: a linear probe).
    public var hasTrainableLayers: Bool { trainsVirtualTokens || layers.indices.contains(where: isTrainable) }

    var trainsVirtualTokens: Bool { virtualTokens?.isTraining ?? false }

    /// Whether layer `i` holds a linear layer with gradients attached.
    func isTrainable(_ i: Int) -> Bool {
        let l = layers[i]
        return [l.query, l.key, l.value, l.attnOut, l.up, l.down].contains { $0.trains } || sublayerUpdates.trains(layer: i)
    }

    /// Last hidden states [batch·length × hidden] (right-padded to the longest sequence) and the tape.
    /// With a prompt attached (`virtualTokens`, `.embeddings`) each sequence starts with its rows, and
    /// `length` counts them; with a prefix the tokens take positions from the prefix's length on, as
    /// after a KV cache (transformers' BertEmbeddings). `rng` draws LoRA dropout masks. With `firstTokenOnly` the output is [batch × hidden], the first
    /// position of each sequence: the last layer then computes only that query and its feed-forward
    /// (the same values, a sixth less work for a 6-layer classifier).
    public func forwardTraining(_ batch: [[Int]], rng: UnsafeMutablePointer<SeededRNG>?, firstTokenOnly: Bool = false) throws
        -> (hidden: FloatBuffer, tape: Tape) {
        guard let longest = batch.map(\.count).max(), longest > 0 else { throw ModelError("empty batch") }
        let vt = virtualTokens
        vt?.prepare()
        let prompt = vt?.placement == .embeddings ? vt!.count : 0, prefix = vt?.placement == .keysValues ? vt!.count : 0
        let t = prompt + longest
        guard t + prefix <= config.maxPositions else {
            throw ModelError("sequence of \(longest) tokens\(vt.map { " after \($0.count) virtual tokens" } ?? "") exceeds the model's \(config.maxPositions) positions")
        }
        for ids in batch { for id in ids where id < 0 || id >= words.count { throw ModelError("token id \(id) outside the vocabulary (\(words.count))") } }
        let b = batch.count, h = config.hidden, rows = b * t
        let lengths = batch.map { prompt + $0.count }
        var x = FloatBuffer(count: rows * h)
        let zeros = [Int](repeating: 0, count: prompt)
        words.gather(batch.flatMap { zeros + $0 + [Int](repeating: 0, count: longest - $0.count) }, into: x, accumulate: false)
        if let vt, prompt > 0 {
            for s in 0..<b {
                (x.mutable.baseAddress! + s * t * h).update(from: vt.values.values.baseAddress!, count: prompt * h)
                vt.addOffsets(to: x.mutable.baseAddress! + (s * t + prompt) * h, tokens: batch[s].count)
            }
        }
        positions.gather((0..<b).flatMap { _ in Array(prefix..<(prefix + t)) }, into: x, accumulate: true)
        tokenTypes.gather([Int](repeating: 0, count: rows), into: x, accumulate: true)
        // transformers' train-mode dropout, drawn only when a generator is given.
        let (pHidden, pAttn) = rng == nil ? (Float(0), Float(0)) : trainingDropout
        func seed() -> UInt64 { rng?.pointee.next() ?? 0 }
        var embedding: (norm: LayerNorm.Saved, drop: FloatBuffer?)? = nil
        if prompt > 0 && vt!.isTraining {
            let (y, saved) = embNorm.forwardTraining(x, rows: rows)
            x = y
            embedding = (saved, Dropout.apply(x, p: pHidden, seed: seed()))
        } else {
            embNorm.forward(x, rows: rows)
            _ = Dropout.apply(x, p: pHidden, seed: seed())
        }
        let attention = SelfAttention(heads: config.heads, kvHeads: config.heads, headDim: h / config.heads, causal: false)
        let tokens = multipliesPadding ? nil : TokenRows(lengths: lengths, length: t)
        var tapes: [LayerTape] = []
        for (i, layer) in layers.enumerated() {
            let firstOnly = firstTokenOnly && i == layers.count - 1
            let xq = firstOnly ? firstTokens(x, batch: b, length: t) : x, qRows = firstOnly ? b : rows
            let qTokens = firstOnly ? nil : tokens  // the first rows are tokens
            let (q, qs) = layer.query.forwardTraining(xq, rows: qRows, rng: rng, tokens: qTokens)
            let (k, ks) = layer.key.forwardTraining(x, rows: rows, rng: rng, tokens: tokens)
            let (v, vs) = layer.value.forwardTraining(x, rows: rows, rng: rng, tokens: tokens)
            let (ctx, att) = attention.forwardTraining(q: q, k: k, v: v, batch: b, length: t, lengths: lengths,
                                                       queries: firstOnly ? 1 : nil, prefix: prefixKeysValues(layer: i),
                                                       dropout: pAttn, seed: seed())
            let (ao, aos) = layer.attnOut.forwardTraining(ctx, rows: qRows, rng: rng, tokens: qTokens)
            let attnDrop = Dropout.apply(ao, p: pHidden, seed: seed())
            let attnAdapter = sublayerUpdates.apply(i, .attention, h: ao, residual: xq, rows: qRows, norm: layer.attnNorm.frozen, keep: true)
            addInPlace(ao, xq)
            let (a, ans) = layer.attnNorm.forwardTraining(ao, rows: qRows)
            let (pre, ups) = layer.up.forwardTraining(a, rows: qRows, rng: rng, tokens: qTokens)
            let u = FloatBuffer(count: pre.count)
            Activation.gelu(pre, into: u)
            let (d, ds) = layer.down.forwardTraining(u, rows: qRows, rng: rng, tokens: qTokens)
            let outDrop = Dropout.apply(d, p: pHidden, seed: seed())
            let outAdapter = sublayerUpdates.apply(i, .feedForward, h: d, residual: a, rows: qRows, norm: layer.outNorm.frozen, keep: true)
            addInPlace(d, a)
            let (out, ons) = layer.outNorm.forwardTraining(d, rows: qRows)
            tapes.append(LayerTape(x: x, q: qs, k: ks, v: vs, qOut: q, kOut: k, vOut: v, attention: att, attnOut: aos,
                                   attnNorm: ans, up: ups, preGelu: pre, down: ds, outNorm: ons, attnDrop: attnDrop, outDrop: outDrop,
                                   firstOnly: firstOnly, attnAdapter: attnAdapter, outAdapter: outAdapter))
            x = out
        }
        return (x, Tape(layers: tapes, batch: b, length: t, lengths: lengths, prompt: prompt, embedding: embedding))
    }

    /// Layer `i`'s prefix keys and values, when a prefix is attached.
    func prefixKeysValues(layer i: Int) -> SelfAttention.Prefix? {
        guard let vt = virtualTokens, vt.placement == .keysValues else { return nil }
        let h = config.hidden
        return SelfAttention.Prefix(keys: vt.keysValues(layer: i, value: false, kvWidth: h), values: vt.keysValues(layer: i, value: true, kvWidth: h),
                                    count: vt.count, stride: vt.width)
    }

    /// Backward from dL/d(last hidden states): [batch·length × hidden], or [batch × hidden] when the
    /// forward pass ran with `firstTokenOnly`. Training virtual tokens' gradients reach them through every
    /// layer's attention (a prefix) or down to the embeddings (a prompt).
    public func backward(_ dHidden: FloatBuffer, tape: Tape) {
        let rows = tape.batch * tape.length, h = config.hidden
        let vt = trainsVirtualTokens ? virtualTokens : nil
        guard let lowest = vt != nil ? 0 : (0..<layers.count).first(where: isTrainable) else { return }
        let attention = SelfAttention(heads: config.heads, kvHeads: config.heads, headDim: h / config.heads, causal: false)
        var dx = dHidden
        let tokens = multipliesPadding ? nil : TokenRows(lengths: tape.lengths, length: tape.length)
        for i in stride(from: layers.count - 1, through: lowest, by: -1) {
            let l = layers[i], s = tape.layers[i]
            let qRows = s.firstOnly ? tape.batch : rows, qTokens = s.firstOnly ? nil : tokens
            let (ds2h, ds2) = sublayerUpdates.backward(i, .feedForward, l.outNorm.backward(dx, saved: s.outNorm, rows: qRows), saved: s.outAdapter,
                                                       rows: qRows, norm: l.outNorm.frozen)
            let dd = FloatBuffer(ds2h.array)
            Dropout.backward(dd, scale: s.outDrop)
            let dg = l.down.backward(s.outDrop == nil ? ds2h : dd, saved: s.down, rows: qRows, tokens: qTokens)!
            Activation.geluBackward(dg, input: s.preGelu)
            let da = l.up.backward(dg, saved: s.up, rows: qRows, tokens: qTokens)!
            addInPlace(da, ds2)  // residual: a feeds both the MLP and the second sum
            let (ds1h, ds1) = sublayerUpdates.backward(i, .attention, l.attnNorm.backward(da, saved: s.attnNorm, rows: qRows), saved: s.attnAdapter,
                                                       rows: qRows, norm: l.attnNorm.frozen)
            let dao = FloatBuffer(ds1h.array)
            Dropout.backward(dao, scale: s.attnDrop)
            let dctx = l.attnOut.backward(s.attnDrop == nil ? ds1h : dao, saved: s.attnOut, rows: qRows, tokens: qTokens)!
            let (dq, dk, dv, dPrefix) = attention.backward(dctx, q: s.qOut, k: s.kOut, v: s.vOut, saved: s.attention, batch: tape.batch,
                                                           length: tape.length, lengths: tape.lengths, queries: s.firstOnly ? 1 : nil,
                                                           prefix: prefixKeysValues(layer: i))
            if let vt, let dPrefix {
                vt.accumulate(layer: i, value: false, kvWidth: h, dPrefix.dk)
                vt.accumulate(layer: i, value: true, kvWidth: h, dPrefix.dv)
            }
            let needInput = i > lowest || tape.embedding != nil  // a training prompt needs layer 0's input gradient
            let dxq = l.query.backward(dq, saved: s.q, rows: qRows, needInput: needInput, tokens: qTokens)
            let dxk = l.key.backward(dk, saved: s.k, rows: rows, needInput: needInput, tokens: tokens)
            let dxv = l.value.backward(dv, saved: s.v, rows: rows, needInput: needInput, tokens: tokens)
            guard needInput, let dxq, let dxk, let dxv else { break }
            addInPlace(dxk, dxv)
            if s.firstOnly {
                // The query and the residual reached only the first positions.
                let t = tape.length
                let kp = dxk.mutable, q = dxq.values, r = ds1.values
                for b in 0..<tape.batch { for j in 0..<h { kp[(b * t) * h + j] += q[b * h + j] + r[b * h + j] } }
            } else {
                addInPlace(dxk, dxq); addInPlace(dxk, ds1)
            }
            dx = dxk
        }
        // A training prompt: back through the embeddings' dropout and LayerNorm to its rows, summed over
        // the batch (and to its offsets, from the tokens' rows); a derived prompt passes them to its source.
        if let vt, let (norm, drop) = tape.embedding, let g = vt.gradient {
            Dropout.backward(dx, scale: drop)
            let de = embNorm.backward(dx, saved: norm, rows: rows)
            let gp = g.mutable, dv = de.values
            for s in 0..<tape.batch {
                for j in 0..<(tape.prompt * h) { gp[j] += dv[s * tape.length * h + j] }
                vt.accumulateOffsets(from: dv.baseAddress! + (s * tape.length + tape.prompt) * h, tokens: tape.lengths[s] - tape.prompt)
            }
            vt.finishBackward()
        }
    }

    /// The rows of the [CLS] (first) token of each sequence: [batch × hidden].
    func firstTokens(_ hidden: FloatBuffer, batch b: Int, length t: Int) -> FloatBuffer {
        let h = config.hidden, out = FloatBuffer(count: b * h)
        for s in 0..<b { (out.mutable.baseAddress! + s * h).update(from: hidden.values.baseAddress! + s * t * h, count: h) }
        return out
    }
}

/// Training pass of `BertForSequenceClassification`: logits = head(tanh(pooler(h[CLS]))).
extension BertForSequenceClassification {
    public struct Tape: @unchecked Sendable {
        let encoder: BertModel.Tape
        let pooler: Linear.Saved, pooled: FloatBuffer, head: Linear.Saved
        let poolDrop: FloatBuffer?
    }

    /// Logits [batch × classes] for token-id sequences (special tokens included).
    public func forwardTraining(_ ids: [[Int]], rng: UnsafeMutablePointer<SeededRNG>?) throws -> (logits: FloatBuffer, tape: Tape) {
        guard let pooler = encoder.pooler else { throw ModelError("this checkpoint has no pooler.dense weights") }
        let (cls, tape) = try encoder.forwardTraining(ids, rng: rng, firstTokenOnly: true)
        let (p, ps) = pooler.forwardTraining(cls, rows: tape.batch, rng: rng)
        let pv = p.mutable
        for i in 0..<pv.count { pv[i] = tanh(pv[i]) }
        // transformers' classifier dropout (hidden_dropout_prob) on the pooled output, in training.
        let dropped = FloatBuffer(p.array)
        let scale = Dropout.apply(dropped, p: rng == nil ? 0 : encoder.trainingDropout.hidden, seed: rng?.pointee.next() ?? 0)
        let (logits, hs) = head.forwardTraining(dropped, rows: tape.batch, rng: rng)
        return (logits, Tape(encoder: tape, pooler: ps, pooled: p, head: hs, poolDrop: scale))
    }

    /// Backward from dL/dlogits.
    public func backward(_ dLogits: FloatBuffer, tape: Tape) {
        let b = tape.encoder.batch
        let pooler = encoder.pooler!
        guard let dp = head.backward(dLogits, saved: tape.head, rows: b, needInput: encoder.hasTrainableLayers || pooler.trains) else { return }
        Dropout.backward(dp, scale: tape.poolDrop)
        let dpv = dp.mutable, pv = tape.pooled.values
        for i in 0..<dpv.count { dpv[i] *= 1 - pv[i] * pv[i] }
        guard let dcls = pooler.backward(dp, saved: tape.pooler, rows: b, needInput: encoder.hasTrainableLayers) else { return }
        encoder.backward(dcls, tape: tape.encoder)
    }
}
