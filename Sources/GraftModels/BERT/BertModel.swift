import Foundation
import GraftFormats
import GraftTensor

/// A BERT encoder (post-LayerNorm, GELU), as transformers' `BertModel`: embeddings (word + position +
/// token type, LayerNorm), then layers of self-attention and feed-forward, each followed by a residual
/// add and LayerNorm. Batched with padding masks.
public struct BertModel: Sendable, AdaptableModel {
    public struct Config: Sendable {
        public let hidden: Int, layers: Int, heads: Int, intermediate: Int, maxPositions: Int, eps: Float
        /// transformers' dropout rates (hidden_dropout_prob, attention_probs_dropout_prob), used in training.
        public var hiddenDropout: Float = 0, attentionDropout: Float = 0
    }

    struct Layer: Sendable {
        var query: Linear, key: Linear, value: Linear, attnOut: Linear
        let attnNorm: LayerNorm
        var up: Linear, down: Linear
        let outNorm: LayerNorm
        /// Query, key and value weights packed as one [hidden → 3·hidden] product with their biases
        /// (`packForInference`); dropped whenever one of the three is edited.
        var qkv: (matrix: F32Matrix, bias: FloatBuffer)?
    }

    public let config: Config
    /// Dropout in training passes (forwardTraining with a generator), as transformers' train mode:
    /// after the embeddings, on the attention probabilities, and on each sublayer's output before its
    /// residual sum. Defaults to 0 (off); training sets it from the config unless told otherwise.
    public var trainingDropout: (hidden: Float, attention: Float) = (0, 0)
    /// Whether the training pass multiplies padding rows by the frozen weights too (`TokenRows`): off,
    /// the default, skips them with the same results to the bit; on is for the test that shows it.
    public var multipliesPadding = false
    let words: Embedding, positions: Embedding, tokenTypes: Embedding
    let embNorm: LayerNorm
    var layers: [Layer]
    /// `pooler.dense` (tanh of it on the first token feeds a classification head), when the checkpoint has it.
    public var pooler: Linear?
    /// Prompt or prefix vectors every pass puts ahead of the tokens (`VirtualTokens`), when attached.
    public var virtualTokens: VirtualTokens?
    /// Bottleneck adapters after attention and after the feed-forward block (`SublayerUpdate`).
    public var sublayerUpdates = SublayerUpdates()

    /// Loads weights named as `BertModel` (optionally under a `bert.` prefix) from a checkpoint folder.
    public init(checkpoint: Checkpoint) throws {
        guard let cfg = try checkpoint.config() else { throw ModelError("\(checkpoint.path): no config.json") }
        func int(_ k: String) throws -> Int {
            guard let v = cfg.json[k]?.intValue, v > 0 else { throw ModelError("\(checkpoint.path)/config.json: missing or invalid '\(k)'") }
            return Int(v)
        }
        var config = Config(hidden: try int("hidden_size"), layers: try int("num_hidden_layers"), heads: try int("num_attention_heads"),
                        intermediate: try int("intermediate_size"), maxPositions: try int("max_position_embeddings"),
                        eps: Float(cfg.json["layer_norm_eps"]?.doubleValue ?? 1e-12))
        config.hiddenDropout = Float(cfg.json["hidden_dropout_prob"]?.doubleValue ?? 0.1)
        config.attentionDropout = Float(cfg.json["attention_probs_dropout_prob"]?.doubleValue ?? 0.1)
        guard config.hidden % config.heads == 0 else { throw ModelError("\(checkpoint.path): hidden_size not divisible by num_attention_heads") }
        let prefix = checkpoint.info("embeddings.word_embeddings.weight") != nil ? "" : "bert."
        let h = config.hidden
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer {
            let full = prefix + name
            guard let info = checkpoint.info(full) else { throw ModelError("\(checkpoint.path): missing tensor '\(full)'") }
            guard info.shape == shape else { throw ModelError("\(checkpoint.path): tensor '\(full)' has shape \(info.shape), expected \(shape)") }
            guard info.dtype.isFloatingPoint else { throw ModelError("\(checkpoint.path): tensor '\(full)' is \(info.dtype.rawValue), expected a float type") }
            return FloatBuffer(try checkpoint.tensor(full))
        }
        func linear(_ name: String, _ inF: Int, _ outF: Int) throws -> Linear {
            Linear(weight: try tensor(name + ".weight", [outF, inF]), bias: try tensor(name + ".bias", [outF]), inFeatures: inF, outFeatures: outF)
        }
        func norm(_ name: String) throws -> LayerNorm {
            LayerNorm(gamma: try tensor(name + ".weight", [h]), beta: try tensor(name + ".bias", [h]), eps: config.eps)
        }
        guard let wInfo = checkpoint.info(prefix + "embeddings.word_embeddings.weight"), wInfo.shape.count == 2 else {
            throw ModelError("\(checkpoint.path): missing tensor 'embeddings.word_embeddings.weight'")
        }
        let words = Embedding(table: try tensor("embeddings.word_embeddings.weight", [wInfo.shape[0], h]), width: h)
        let positions = Embedding(table: try tensor("embeddings.position_embeddings.weight", [config.maxPositions, h]), width: h)
        let tt = checkpoint.info(prefix + "embeddings.token_type_embeddings.weight")?.shape.first ?? 2
        let tokenTypes = Embedding(table: try tensor("embeddings.token_type_embeddings.weight", [tt, h]), width: h)
        let embNorm = try norm("embeddings.LayerNorm")
        let layers = try (0..<config.layers).map { i in
            let p = "encoder.layer.\(i)."
            return Layer(query: try linear(p + "attention.self.query", h, h), key: try linear(p + "attention.self.key", h, h),
                         value: try linear(p + "attention.self.value", h, h), attnOut: try linear(p + "attention.output.dense", h, h),
                         attnNorm: try norm(p + "attention.output.LayerNorm"),
                         up: try linear(p + "intermediate.dense", h, config.intermediate),
                         down: try linear(p + "output.dense", config.intermediate, h), outNorm: try norm(p + "output.LayerNorm"))
        }
        self.config = config
        self.words = words; self.positions = positions; self.tokenTypes = tokenTypes
        self.embNorm = embNorm; self.layers = layers
        pooler = checkpoint.info(prefix + "pooler.dense.weight") != nil ? try linear("pooler.dense", h, h) : nil
    }

    /// The module paths of the linear layers, as PEFT names them in a BertModel: every layer's six,
    /// then `pooler.dense` when the checkpoint has it (PEFT's `dense` target includes it).
    public var linearModuleNames: [String] {
        (0..<layers.count).flatMap { i in
            ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense"].map { "encoder.layer.\(i).\($0)" }
        } + (pooler == nil ? [] : ["pooler.dense"])
    }

    /// Edits the linear layer at a module path (`encoder.layer.3.attention.self.query`, `pooler.dense`); false if none.
    public mutating func updateLinear(_ module: String, _ edit: (inout Linear) throws -> Void) rethrows -> Bool {
        if module == "pooler.dense", pooler != nil { try edit(&pooler!); return true }
        let parts = module.split(separator: ".")
        guard parts.count >= 4, parts[0] == "encoder", parts[1] == "layer", let i = Int(parts[2]), i >= 0, i < layers.count else {
            return false
        }
        switch parts.dropFirst(3).joined(separator: ".") {
        case "attention.self.query": try edit(&layers[i].query); layers[i].qkv = nil
        case "attention.self.key": try edit(&layers[i].key); layers[i].qkv = nil
        case "attention.self.value": try edit(&layers[i].value); layers[i].qkv = nil
        case "attention.output.dense": try edit(&layers[i].attnOut)
        case "intermediate.dense": try edit(&layers[i].up)
        case "output.dense": try edit(&layers[i].down)
        default: return false
        }
        return true
    }

    /// tanh(pooler(h[first token])) — BERT's pooled output.
    public func pooledOutput(_ hidden: FloatBuffer) throws -> FloatBuffer {
        let first = FloatBuffer(count: config.hidden)
        first.mutable.baseAddress!.update(from: hidden.values.baseAddress!, count: config.hidden)
        return try pool(first, rows: 1)
    }

    /// tanh(pooler(x)) for `rows` first-token states [rows × hidden].
    public func pool(_ firstTokens: FloatBuffer, rows: Int) throws -> FloatBuffer {
        guard let pooler else { throw ModelError("this checkpoint has no pooler.dense weights") }
        let p = pooler.forward(firstTokens, rows: rows)
        let v = p.mutable
        for j in 0..<v.count { v[j] = tanh(v[j]) }
        return p
    }

    public var vocabularySize: Int { words.count }

    public var virtualTokenLayout: VirtualTokens.Layout {
        VirtualTokens.Layout(hidden: config.hidden, layers: config.layers, heads: config.heads, kvWidth: config.hidden, kvHeads: config.heads,
                             contextLength: config.maxPositions, vocabulary: vocabularySize)
    }

    public func wordEmbeddings(_ ids: [Int]) throws -> FloatBuffer {
        for id in ids where id < 0 || id >= words.count { throw ModelError("token id \(id) outside the vocabulary (\(words.count))") }
        let out = FloatBuffer(count: ids.count * config.hidden)
        words.gather(ids, into: out, accumulate: false)
        return out
    }

    /// Packs every linear layer's weight for float32 inference products (see `Linear.packForInference`);
    /// call after attaching adapters' updates, which stay separate. Training and bf16 paths ignore it.
    /// Query, key and value without low-rank updates become one product (x read once, one split over the
    /// cores instead of three).
    public mutating func packForInference(algorithm: F32Matrix.Algorithm = .automatic) {
        let h = config.hidden
        // Layers are packed in parallel (each is independent; packing and first-touching ~12 MB of panels
        // per MiniLM layer is most of `graft embed`'s start-up).
        layers.withUnsafeMutableBufferPointer { buf in
            let box = UncheckedSendable(buf)
            parallelEach(buf.count) { i in Self.pack(&box.value[i], hidden: h, algorithm: algorithm) }
        }
    }

    private static func pack(_ layer: inout Layer, hidden h: Int, algorithm: F32Matrix.Algorithm) {
        for path in [\Layer.attnOut, \Layer.up, \Layer.down] { layer[keyPath: path].packForInference(algorithm: algorithm) }
        let parts = [layer.query, layer.key, layer.value]
        if parts.allSatisfy({ $0.updates.isEmpty && $0.bf16 == nil }) {
            // [Wq; Wk; Wv] is the [3h × h] weight of x → (q, k, v) side by side.
            let w = FloatBuffer(count: 3 * h * h), b = FloatBuffer(repeating: 0, count: 3 * h)
            for (j, part) in parts.enumerated() {
                (w.mutable.baseAddress! + j * h * h).update(from: part.weight.values.baseAddress!, count: h * h)
                if let pb = part.bias { (b.mutable.baseAddress! + j * h).update(from: pb.values.baseAddress!, count: h) }
            }
            layer.qkv = (F32Matrix(w.values.baseAddress!, k: h, n: 3 * h, transposed: true, algorithm: algorithm), b)
        } else {
            for path in [\Layer.query, \Layer.key, \Layer.value] { layer[keyPath: path].packForInference(algorithm: algorithm) }
        }
    }

    /// Last hidden states for a batch of token-id sequences: one [length × hidden] buffer per sequence
    /// (the tokens' rows only when virtual tokens are attached; those run through `forwardTraining`).
    public func forward(_ batch: [[Int]]) throws -> [FloatBuffer] {
        guard let maxLen = batch.map(\.count).max(), maxLen > 0 else { return batch.map { _ in FloatBuffer(count: 0) } }
        if virtualTokens != nil || !sublayerUpdates.isEmpty {
            let (hidden, tape) = try forwardTraining(batch, rng: nil)
            let h = config.hidden
            return batch.enumerated().map { s, ids in
                let out = FloatBuffer(count: ids.count * h)
                out.mutable.baseAddress!.update(from: hidden.values.baseAddress! + (s * tape.length + tape.prompt) * h, count: ids.count * h)
                return out
            }
        }
        guard maxLen <= config.maxPositions else {
            throw ModelError("sequence of \(maxLen) tokens exceeds the model's \(config.maxPositions) positions")
        }
        for ids in batch { for id in ids where id < 0 || id >= words.count { throw ModelError("token id \(id) outside the vocabulary (\(words.count))") } }
        let b = batch.count, t = maxLen, h = config.hidden, rows = b * t
        // Embeddings (padded positions use id 0 and are masked out of attention).
        var x = FloatBuffer(count: rows * h)
        let padded = batch.flatMap { $0 + [Int](repeating: 0, count: t - $0.count) }
        words.gather(padded, into: x, accumulate: false)
        positions.gather((0..<b).flatMap { _ in Array(0..<t) }, into: x, accumulate: true)
        tokenTypes.gather([Int](repeating: 0, count: rows), into: x, accumulate: true)
        embNorm.forward(x, rows: rows)
        let lengths = batch.map(\.count)
        for layer in layers {
            let attn = attention(layer, x, batch: b, length: t, lengths: lengths)
            let a = layer.attnOut.forward(attn, rows: rows, residual: x)
            layer.attnNorm.forward(a, rows: rows)
            let u = layer.up.forward(a, rows: rows, residual: nil, activation: .gelu)
            let d = layer.down.forward(u, rows: rows, residual: a)
            layer.outNorm.forward(d, rows: rows)
            x = d
        }
        return (0..<b).map { i in
            let out = FloatBuffer(count: lengths[i] * h)
            out.mutable.baseAddress!.update(from: x.values.baseAddress! + i * t * h, count: lengths[i] * h)
            return out
        }
    }

    /// Multi-head self-attention context for every sequence of the batch (keys beyond a sequence's
    /// length are masked).
    private func attention(_ layer: Layer, _ x: FloatBuffer, batch b: Int, length t: Int, lengths: [Int]) -> FloatBuffer {
        let h = config.hidden, nh = config.heads, dh = h / nh
        // q, k, v: one [rows × 3h] product when packed together (row stride 3h), else three [rows × h].
        let q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, stride: Int, offsets: (Int, Int, Int)
        if let (matrix, bias) = layer.qkv {
            let y = FloatBuffer(count: b * t * 3 * h)
            matrix.multiply(x.values.baseAddress!, m: b * t, into: y.mutable.baseAddress!, bias: bias.values.baseAddress!)
            (q, k, v, stride, offsets) = (y, y, y, 3 * h, (0, h, 2 * h))
        } else {
            (q, k, v) = (layer.query.forward(x, rows: b * t), layer.key.forward(x, rows: b * t), layer.value.forward(x, rows: b * t))
            (stride, offsets) = (h, (0, 0, 0))
        }
        let ctx = FloatBuffer(count: b * t * h)
        for (s, len) in lengths.enumerated() where len < t {  // padding rows: zero (the heads write the rest)
            (ctx.mutable.baseAddress! + (s * t + len) * h).update(repeating: 0, count: (t - len) * h)
        }
        let scale = 1 / Float(dh).squareRoot()
        let qp = q.values.baseAddress! + offsets.0, kp = k.values.baseAddress! + offsets.1, vp = v.values.baseAddress! + offsets.2
        let cp = ctx.mutable.baseAddress!
        let work = UncheckedSendable((qp, kp, vp, cp))
        // One job per (sequence, head), split over the cores; each job's scores stay in its scratch.
        let scratchCount = Kernels.attentionScratchCount(length: t, headSize: dh)
        parallelFor(count: b * nh, minChunk: 1) { jobs in
            let (qp, kp, vp, cp) = work.value
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: scratchCount)
            defer { scratch.deallocate() }
            for job in jobs {
                let s = job / nh, head = job % nh
                let base = s * t * stride + head * dh
                var next: (q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, length: Int)?
                if job + 1 < jobs.upperBound {
                    let ns = (job + 1) / nh, nb = ns * t * stride + (job + 1) % nh * dh
                    next = (qp + nb, kp + nb, vp + nb, lengths[ns])
                }
                Kernels.attentionHead(length: lengths[s], headSize: dh, q: qp + base, k: kp + base, v: vp + base, stride: stride,
                                      scale: scale, out: cp + s * t * h + head * dh, outStride: h, scratch: scratch, next: next)
            }
        }
        return ctx
    }
}
