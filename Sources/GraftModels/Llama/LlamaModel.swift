import Foundation
import GraftFormats
import GraftTensor

/// A Llama decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, optionally tied embeddings),
/// as transformers' `LlamaForCausalLM`, loaded from a GGUF file (dequantised to float32, q/k rows
/// un-permuted to transformers' layout) or an HF safetensors folder.
public struct LlamaModel: Sendable, AdaptableModel {
    public struct Config: Sendable {
        public let vocab: Int, hidden: Int, layers: Int, heads: Int, kvHeads: Int, intermediate: Int
        public let ropeTheta: Double, ropeScale: Double, eps: Float, contextLength: Int
        public var headDim: Int { hidden / heads }
    }

    struct Layer: Sendable {
        let attnNorm: RMSNorm, mlpNorm: RMSNorm
        var q: Linear, k: Linear, v: Linear, o: Linear, gate: Linear, up: Linear, down: Linear
    }

    public let config: Config
    let embedding: FloatBuffer  // [vocab × hidden]
    var layers: [Layer]
    let norm: RMSNorm
    let lmHead: FloatBuffer  // [vocab × hidden] (the embedding when tied)
    var lmHeadQuantized: QuantizedMatrix?
    /// The head packed in bf16 for training (forward x·Eᵀ, backward d·E), when enabled.
    var lmHeadBF16: (forward: BF16Matrix, backward: BF16Matrix)?
    let rope: RoPE
    /// Prompt or prefix vectors every pass puts ahead of the tokens (`VirtualTokens`), when attached.
    public var virtualTokens: VirtualTokens?
    /// Bottleneck adapters after attention and after the MLP (`SublayerUpdate`).
    public var sublayerUpdates = SublayerUpdates()

    public static let supportedArchitectures = ["llama (GGUF)", "LlamaForCausalLM (HF folder)"]

    // MARK: - Loading

    public init(gguf g: GGUFFile) throws {
        let arch = g["general.architecture"]?.string ?? "?"
        guard arch == "llama" else {
            throw ModelError("\(g.path): architecture '\(arch)' is not supported (supported: \(Self.supportedArchitectures.joined(separator: ", ")))")
        }
        func int(_ k: String) throws -> Int {
            guard let v = g["llama." + k]?.int, v > 0 else { throw ModelError("\(g.path): metadata llama.\(k) missing or invalid") }
            return v
        }
        let hidden = try int("embedding_length"), heads = try int("attention.head_count")
        let kvHeads = g["llama.attention.head_count_kv"]?.int ?? heads
        guard let emb = g.info("token_embd.weight"), emb.shape.count == 2, emb.shape[1] == hidden else {
            throw ModelError("\(g.path): tensor token_embd.weight missing or not [vocab, \(hidden)]")
        }
        var scale = 1.0
        if let t = g["llama.rope.scaling.type"]?.string, t != "none" {
            guard t == "linear", let f = g["llama.rope.scaling.factor"]?.double else {
                throw ModelError("\(g.path): rope scaling '\(t)' is not supported (none, linear)")
            }
            scale = f
        }
        let cfg = Config(vocab: emb.shape[0], hidden: hidden, layers: try int("block_count"), heads: heads, kvHeads: kvHeads,
                         intermediate: try int("feed_forward_length"), ropeTheta: g["llama.rope.freq_base"]?.double ?? 10000,
                         ropeScale: scale, eps: Float(g["llama.attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
                         contextLength: g["llama.context_length"]?.int ?? 2048)
        guard hidden % heads == 0, heads % kvHeads == 0 else { throw ModelError("\(g.path): head counts do not divide the hidden size") }
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer {
            guard let i = g.info(name) else { throw ModelError("\(g.path): missing tensor '\(name)'") }
            guard i.shape == shape else { throw ModelError("\(g.path): tensor '\(name)' has shape \(i.shape), expected \(shape)") }
            return try g.floats(name)
        }
        let dh = cfg.headDim
        func linear(_ name: String, _ inF: Int, _ outF: Int, unpermuteHeads: Int? = nil) throws -> Linear {
            var w = try tensor(name, [outF, inF])
            if let h = unpermuteHeads { w = LlamaGGUFConversion.permuteRows(w, heads: h, rows: outF, cols: inF, toHF: true) }
            var l = Linear(weight: w, bias: nil, inFeatures: inF, outFeatures: outF)
            l.quantized = try Self.quantized(g, name, rows: outF, cols: inF, unpermuteHeads: unpermuteHeads)
            return l
        }
        let layers = try (0..<cfg.layers).map { i -> Layer in
            let p = "blk.\(i)."
            return Layer(attnNorm: RMSNorm(weight: try tensor(p + "attn_norm.weight", [hidden]), eps: cfg.eps),
                         mlpNorm: RMSNorm(weight: try tensor(p + "ffn_norm.weight", [hidden]), eps: cfg.eps),
                         q: try linear(p + "attn_q.weight", hidden, hidden, unpermuteHeads: heads),
                         k: try linear(p + "attn_k.weight", hidden, kvHeads * dh, unpermuteHeads: kvHeads),
                         v: try linear(p + "attn_v.weight", hidden, kvHeads * dh),
                         o: try linear(p + "attn_output.weight", hidden, hidden),
                         gate: try linear(p + "ffn_gate.weight", hidden, cfg.intermediate),
                         up: try linear(p + "ffn_up.weight", hidden, cfg.intermediate),
                         down: try linear(p + "ffn_down.weight", cfg.intermediate, hidden))
        }
        let embedding = try tensor("token_embd.weight", [cfg.vocab, hidden])
        let headName = g.info("output.weight") != nil ? "output.weight" : "token_embd.weight"
        let head = headName == "output.weight" ? try tensor(headName, [cfg.vocab, hidden]) : embedding
        self.init(config: cfg, embedding: embedding, layers: layers,
                  norm: RMSNorm(weight: try tensor("output_norm.weight", [hidden]), eps: cfg.eps), lmHead: head)
        lmHeadQuantized = try Self.quantized(g, headName, rows: cfg.vocab, cols: hidden, unpermuteHeads: nil)
    }

    /// The tensor's stored blocks as a `QuantizedMatrix` when a matrix–vector kernel exists for its type
    /// (rows re-ordered like the float weight for q/k).
    static func quantized(_ g: GGUFFile, _ name: String, rows: Int, cols: Int, unpermuteHeads: Int?) throws -> QuantizedMatrix? {
        guard let info = g.info(name) else { return nil }
        let format: QuantizedMatrix.Format
        switch info.type {
        case .q8_0: format = .q8_0
        case .q4_0: format = .q4_0
        case .q4_1: format = .q4_1
        case .f16: format = .f16
        case .bf16: format = .bf16
        default: return nil
        }
        guard format == .f16 || format == .bf16 || cols % 32 == 0 else { return nil }
        let raw = try g.rawBytes(name)
        guard let h = unpermuteHeads else { return QuantizedMatrix(format: format, rows: rows, cols: cols, data: raw.baseAddress!, owner: g) }
        let storage = Storage(allocating: raw.count)
        LlamaGGUFConversion.permuteRotaryRows(raw.baseAddress!, into: storage.mutableBytes.baseAddress!, heads: h, rows: rows,
                                              rowBytes: raw.count / rows, toHF: true)
        return QuantizedMatrix(format: format, rows: rows, cols: cols, data: UnsafeRawPointer(storage.mutableBytes.baseAddress!), owner: storage)
    }

    /// Loads `LlamaForCausalLM` weights from an HF folder (safetensors + config.json).
    public init(checkpoint c: Checkpoint) throws {
        guard let cfgFile = try c.config() else { throw ModelError("\(c.path): no config.json") }
        let j = cfgFile.json
        let arch = cfgFile.architectures.first ?? cfgFile.modelType ?? "?"
        guard arch == "LlamaForCausalLM" || cfgFile.modelType == "llama" else {
            throw ModelError("\(c.path): architecture '\(arch)' is not supported (supported: \(Self.supportedArchitectures.joined(separator: ", ")))")
        }
        func int(_ k: String) throws -> Int {
            guard let v = j[k]?.intValue, v > 0 else { throw ModelError("\(c.path)/config.json: missing or invalid '\(k)'") }
            return Int(v)
        }
        var scale = 1.0
        if let rs = j["rope_scaling"], rs != .null {
            guard rs["type"]?.stringValue == "linear" || rs["rope_type"]?.stringValue == "linear", let f = rs["factor"]?.doubleValue else {
                throw ModelError("\(c.path)/config.json: rope_scaling \(rs.serialized()) is not supported (linear only)")
            }
            scale = f
        }
        let heads = try int("num_attention_heads")
        let cfg = Config(vocab: try int("vocab_size"), hidden: try int("hidden_size"), layers: try int("num_hidden_layers"), heads: heads,
                         kvHeads: Int(j["num_key_value_heads"]?.intValue ?? Int64(heads)), intermediate: try int("intermediate_size"),
                         ropeTheta: j["rope_theta"]?.doubleValue ?? 10000, ropeScale: scale,
                         eps: Float(j["rms_norm_eps"]?.doubleValue ?? 1e-6), contextLength: Int(j["max_position_embeddings"]?.intValue ?? 2048))
        let h = cfg.hidden, dh = cfg.headDim
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer {
            guard let i = c.info(name) else { throw ModelError("\(c.path): missing tensor '\(name)'") }
            guard i.shape == shape, i.dtype.isFloatingPoint else { throw ModelError("\(c.path): tensor '\(name)' is \(i.dtype.rawValue) \(i.shape), expected float \(shape)") }
            return FloatBuffer(try c.tensor(name))
        }
        func linear(_ name: String, _ inF: Int, _ outF: Int) throws -> Linear {
            Linear(weight: try tensor(name + ".weight", [outF, inF]), bias: nil, inFeatures: inF, outFeatures: outF)
        }
        let layers = try (0..<cfg.layers).map { i -> Layer in
            let p = "model.layers.\(i)."
            return Layer(attnNorm: RMSNorm(weight: try tensor(p + "input_layernorm.weight", [h]), eps: cfg.eps),
                         mlpNorm: RMSNorm(weight: try tensor(p + "post_attention_layernorm.weight", [h]), eps: cfg.eps),
                         q: try linear(p + "self_attn.q_proj", h, cfg.heads * dh), k: try linear(p + "self_attn.k_proj", h, cfg.kvHeads * dh),
                         v: try linear(p + "self_attn.v_proj", h, cfg.kvHeads * dh), o: try linear(p + "self_attn.o_proj", cfg.heads * dh, h),
                         gate: try linear(p + "mlp.gate_proj", h, cfg.intermediate), up: try linear(p + "mlp.up_proj", h, cfg.intermediate),
                         down: try linear(p + "mlp.down_proj", cfg.intermediate, h))
        }
        let emb = try tensor("model.embed_tokens.weight", [cfg.vocab, h])
        let head = c.info("lm_head.weight") != nil ? try tensor("lm_head.weight", [cfg.vocab, h]) : emb
        self.init(config: cfg, embedding: emb, layers: layers, norm: RMSNorm(weight: try tensor("model.norm.weight", [h]), eps: cfg.eps), lmHead: head)
    }

    init(config: Config, embedding: FloatBuffer, layers: [Layer], norm: RMSNorm, lmHead: FloatBuffer) {
        self.config = config; self.embedding = embedding; self.layers = layers; self.norm = norm; self.lmHead = lmHead
        rope = RoPE(headDim: config.headDim, theta: config.ropeTheta, scale: config.ropeScale)
    }

    /// How decode steps multiply by block-quantised weights: `.float` (activations stay float32: decode
    /// equals prefill to float rounding) or `.int8` (activations quantised to 8 bits per block and
    /// integer dot products, as llama.cpp: faster, logits within ~1e-2).
    public enum DecodeArithmetic: Sendable { case float, int8 }

    public var decodeArithmetic: DecodeArithmetic = .float {
        didSet {
            let on = decodeArithmetic == .int8
            updateEveryLinear { $0.int8Activations = on }
        }
    }

    /// The head packed for float32 products of several rows (`packForBatches`).
    var lmHeadPacked: F32Matrix?

    /// Packs every linear layer's weight and the head once for float32 products of several rows (a
    /// server's batched decode steps): BLAS would repack the whole weight on every call, which costs more
    /// than the product itself at a few rows. One or two rows keep the stored blocks' matrix–vector
    /// products. Costs a second float32 copy of the weights.
    public mutating func packForBatches() {
        updateEveryLinear { $0.packForInference(algorithm: .classical) }
        lmHeadPacked = F32Matrix(lmHead.values.baseAddress!, k: config.hidden, n: config.vocab, transposed: true, algorithm: .classical)
    }

    public var virtualTokenLayout: VirtualTokens.Layout {
        VirtualTokens.Layout(hidden: config.hidden, layers: config.layers, heads: config.heads, kvWidth: config.kvHeads * config.headDim, kvHeads: config.kvHeads,
                             contextLength: config.contextLength, vocabulary: config.vocab)
    }

    public func wordEmbeddings(_ ids: [Int]) throws -> FloatBuffer {
        let h = config.hidden, out = FloatBuffer(count: ids.count * h)
        for (r, id) in ids.enumerated() {
            guard id >= 0 && id < config.vocab else { throw ModelError("token id \(id) outside the vocabulary (\(config.vocab))") }
            (out.mutable.baseAddress! + r * h).update(from: embedding.values.baseAddress! + id * h, count: h)
        }
        return out
    }

    /// The module paths of the linear layers, as PEFT names them (`model.layers.3.self_attn.q_proj`).
    public var linearModuleNames: [String] {
        (0..<layers.count).flatMap { i in
            ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
             "mlp.down_proj"].map { "model.layers.\(i).\($0)" }
        }
    }

    /// Edits the linear layer at a module path (`model.layers.3.self_attn.q_proj`); false if none.
    public mutating func updateLinear(_ module: String, _ edit: (inout Linear) throws -> Void) rethrows -> Bool {
        let parts = module.split(separator: ".")
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let i = Int(parts[2]), i >= 0, i < layers.count else {
            return false
        }
        switch parts.dropFirst(3).joined(separator: ".") {
        case "self_attn.q_proj": try edit(&layers[i].q)
        case "self_attn.k_proj": try edit(&layers[i].k)
        case "self_attn.v_proj": try edit(&layers[i].v)
        case "self_attn.o_proj": try edit(&layers[i].o)
        case "mlp.gate_proj": try edit(&layers[i].gate)
        case "mlp.up_proj": try edit(&layers[i].up)
        case "mlp.down_proj": try edit(&layers[i].down)
        default: return false
        }
        return true
    }

    // MARK: - Forward

    /// Keys and values of the positions seen so far, per layer.
    public struct KVCache: Sendable {
        var keys: [[Float]]
        var values: [[Float]]
        public private(set) var count = 0

        public init(layers: Int) {
            keys = [[Float]](repeating: [], count: layers)
            values = [[Float]](repeating: [], count: layers)
        }

        mutating func advance(by n: Int) { count += n }
    }

    /// An empty cache; with `positions`, room for that many allocated up front (a server's memory bound
    /// then holds exactly).
    public func makeCache(reserving positions: Int = 0) -> KVCache {
        var c = KVCache(layers: config.layers)
        let width = positions * config.kvHeads * config.headDim
        if width > 0 { for i in 0..<config.layers { c.keys[i].reserveCapacity(width); c.values[i].reserveCapacity(width) } }
        return c
    }

    /// Bytes the cache holds per position: keys and values of every layer, in float32.
    public var cacheBytesPerPosition: Int { config.layers * 2 * config.kvHeads * config.headDim * 4 }

    /// One sequence of a batched pass: its new tokens, its cache, and the adapters only its rows add.
    public struct BatchSequence: Sendable {
        public var tokens: [Int]
        public var cache: KVCache
        public var adapters: AdapterMix
        /// Logits for every new position, or the last only.
        public var allLogits: Bool
        public init(tokens: [Int], cache: KVCache, adapters: AdapterMix = .none, allLogits: Bool = false) {
            self.tokens = tokens; self.cache = cache; self.adapters = adapters; self.allLogits = allLogits
        }
    }

    /// Runs `tokens` after the cached positions (batched prefill when several), appends their keys and
    /// values to the cache, and returns logits for every new position (`allLogits`) or the last only.
    /// Virtual tokens go first into an empty cache: a prefix as cached keys and values, a prompt as the
    /// first positions' embeddings (no logits returned for them).
    public func forward(_ tokens: [Int], cache: inout KVCache, allLogits: Bool = false) throws -> [[Float]] {
        guard !tokens.isEmpty else { return [] }
        var batch = [BatchSequence(tokens: tokens, cache: KVCache(layers: 0), allLogits: allLogits)]
        swap(&batch[0].cache, &cache)  // moved, not copied: the cache's arrays grow in place
        defer { swap(&batch[0].cache, &cache) }
        return try forward(batch: &batch)[0]
    }

    /// One pass over several sequences at once (`graft serve`'s continuous batching: prefills and decode
    /// steps together): every linear layer multiplies all their rows at once, each sequence's adapters
    /// add their updates on its own rows (`Linear.forward(_:rows:groups:)`), and each attends over its
    /// own cache. A sequence's logits equal those of `forward` on it alone, to float rounding.
    /// Sequences with the same adapters should be adjacent: they then share one group per layer.
    public func forward(batch: inout [BatchSequence]) throws -> [[[Float]]] {
        guard !batch.isEmpty else { return [] }
        let dh = config.headDim, nh = config.heads, nkv = config.kvHeads, group = nh / nkv
        let kvw = nkv * dh, h = config.hidden
        // Each sequence's rows: its prompt rows (`lead`, virtual tokens into an empty cache), then its tokens.
        var leads = [Int](repeating: 0, count: batch.count), starts: [Int] = [], total = 0
        // Each sequence's virtual tokens: its adapters' (a prompt or prefix adapter's), else the model's.
        let prompts = try batch.map { seq -> VirtualTokens? in
            guard let own = try seq.adapters.virtualTokens() else { return virtualTokens }
            guard virtualTokens == nil else { throw ModelError("a sequence brings virtual tokens to a model that has some attached") }
            if let why = own.mismatch(virtualTokenLayout) { throw ModelError("the sequence's virtual tokens do not fit: \(why)") }
            return own
        }
        for s in batch.indices {
            guard !batch[s].tokens.isEmpty else { throw ModelError("a sequence of the batch has no tokens") }
            if batch[s].cache.count == 0, let vt = prompts[s] {
                guard vt.count + batch[s].tokens.count <= config.contextLength else {
                    throw ModelError("\(batch[s].tokens.count) tokens after \(vt.count) virtual tokens exceed the model's context of \(config.contextLength)")
                }
                if vt.placement == .keysValues {
                    for li in 0..<layers.count {
                        let kp = vt.keysValues(layer: li, value: false, kvWidth: kvw), vp = vt.keysValues(layer: li, value: true, kvWidth: kvw)
                        for r in 0..<vt.count {
                            batch[s].cache.keys[li] += UnsafeBufferPointer(start: kp + r * vt.width, count: kvw)
                            batch[s].cache.values[li] += UnsafeBufferPointer(start: vp + r * vt.width, count: kvw)
                        }
                    }
                    batch[s].cache.advance(by: vt.count)
                } else {
                    leads[s] = vt.count
                }
            }
            let t = leads[s] + batch[s].tokens.count
            guard batch[s].cache.count + t <= config.contextLength else {
                throw ModelError("\(batch[s].cache.count + t) tokens exceed the model's context of \(config.contextLength)")
            }
            for id in batch[s].tokens where id < 0 || id >= config.vocab { throw ModelError("token id \(id) outside the vocabulary (\(config.vocab))") }
            starts.append(total)
            total += t
        }
        let pasts = batch.map(\.cache.count)
        func rows(_ s: Int) -> Range<Int> { starts[s]..<(starts[s] + leads[s] + batch[s].tokens.count) }
        let x = FloatBuffer(count: total * h)
        for s in batch.indices {
            let base = x.mutable.baseAddress! + starts[s] * h
            if let vt = prompts[s], leads[s] > 0 { base.update(from: vt.values.values.baseAddress!, count: leads[s] * h) }
            for (r, id) in batch[s].tokens.enumerated() {
                (base + (leads[s] + r) * h).update(from: embedding.values.baseAddress! + id * h, count: h)
            }
            // A prompt's offsets: the tokens' index after it is their position minus its length.
            if let vt = prompts[s], vt.placement == .embeddings, pasts[s] + leads[s] >= vt.count {
                vt.addOffsets(to: base + leads[s] * h, tokens: batch[s].tokens.count, first: pasts[s] + leads[s] - vt.count)
            }
        }
        // Row groups of adjacent sequences with the same adapters.
        var spans: [(rows: Range<Int>, mix: AdapterMix)] = []
        for s in batch.indices where !batch[s].adapters.parts.isEmpty {
            if let last = spans.last, last.rows.upperBound == rows(s).lowerBound, last.mix.key == batch[s].adapters.key {
                spans[spans.count - 1].rows = last.rows.lowerBound..<rows(s).upperBound
            } else {
                spans.append((rows(s), batch[s].adapters))
            }
        }
        func linear(_ l: Linear, _ li: Int, _ name: String, _ input: FloatBuffer) -> FloatBuffer {
            guard !spans.isEmpty else { return l.forward(input, rows: total) }
            let module = "model.layers.\(li).\(name)"
            return l.forward(input, rows: total, groups: spans.map { RowGroup(rows: $0.rows, updates: $0.mix.updates(module)) })
        }
        // A sublayer's output h gets the model's update there (on every row) and each row group's own
        // (bottleneck adapters of its sequences), all computed from the same h and residual x.
        let sublayerSpans = spans.filter { $0.mix.hasSublayers }
        func sublayers(_ li: Int, _ site: Sublayer, h: FloatBuffer, residual x: FloatBuffer) {
            let terms = sublayerSpans.compactMap { span in
                span.mix.sublayerTerm(li, site, h: h, residual: x, rows: span.rows, width: h.count / total).map { (span.rows, $0) }
            }
            _ = sublayerUpdates.apply(li, site, h: h, residual: x, rows: total, norm: nil, keep: false)
            let width = h.count / total, hv = h.mutable
            for (rows, term) in terms {
                let tv = term.values, start = rows.lowerBound * width
                for i in 0..<tv.count { hv[start + i] += tv[i] }
            }
        }
        let decodeOnly = rows(0).count == 1 && batch.indices.allSatisfy { rows($0).count == 1 }
        let normed = FloatBuffer(count: total * h)
        for (li, layer) in layers.enumerated() {
            layer.attnNorm.forward(x, rows: total, into: normed)
            let q = linear(layer.q, li, "self_attn.q_proj", normed), k = linear(layer.k, li, "self_attn.k_proj", normed)
            let v = linear(layer.v, li, "self_attn.v_proj", normed)
            let ctx = FloatBuffer(count: total * h)
            let scale = 1 / Float(dh).squareRoot()
            for s in batch.indices {
                let rs = rows(s), past = pasts[s]
                for r in rs {
                    rope.apply(q.mutable.baseAddress! + r * h, heads: nh, position: past + r - rs.lowerBound)
                    rope.apply(k.mutable.baseAddress! + r * kvw, heads: nkv, position: past + r - rs.lowerBound)
                }
                withExtendedLifetime((k, v)) {
                    batch[s].cache.keys[li] += UnsafeBufferPointer(start: k.values.baseAddress! + rs.lowerBound * kvw, count: rs.count * kvw)
                    batch[s].cache.values[li] += UnsafeBufferPointer(start: v.values.baseAddress! + rs.lowerBound * kvw, count: rs.count * kvw)
                }
            }
            // Every (sequence, head) attends over its own cache.
            let caches = UncheckedSendable(batch.map { ($0.cache.keys[li], $0.cache.values[li]) })
            let spansOfRows = batch.indices.map { (rows($0), pasts[$0]) }
            let work = UncheckedSendable((q.values.baseAddress!, ctx.mutable.baseAddress!))
            let attend = { (item: Int) in
                let (s, head) = item.quotientAndRemainder(dividingBy: nh)
                let (qp, cp) = work.value
                let (rs, past) = spansOfRows[s], t = rs.count, all = past + t
                let g = head / group
                caches.value[s].0.withUnsafeBufferPointer { kb in
                    caches.value[s].1.withUnsafeBufferPointer { vb in
                        let scores = UnsafeMutablePointer<Float>.allocate(capacity: t * all)
                        defer { scores.deallocate() }
                        Linalg.gemm(m: t, n: all, k: dh, alpha: scale, a: qp + rs.lowerBound * h + head * dh, lda: h,
                                    b: kb.baseAddress! + g * dh, ldb: kvw, transB: true, c: scores, ldc: all)
                        for r in 0..<t { for c in (past + r + 1)..<max(all, past + r + 1) { scores[r * all + c] = -.infinity } }
                        Activation.softmaxRows(scores, rows: t, width: all)
                        Linalg.gemm(m: t, n: dh, k: all, a: scores, lda: all, b: vb.baseAddress! + g * dh, ldb: kvw,
                                    c: cp + rs.lowerBound * h + head * dh, ldc: h)
                    }
                }
            }
            withExtendedLifetime(q) {
                if decodeOnly {
                    // Decode steps: the heads split over the spinning fork–join pool (a GCD hand-off would
                    // cost more than a step's few hundred thousand multiply-adds).
                    forkJoinRanges(count: batch.count * nh) { hr in for item in hr { attend(item) } }
                } else {
                    parallelEach(batch.count * nh, attend)
                }
            }
            let o = linear(layer.o, li, "self_attn.o_proj", ctx)
            sublayers(li, .attention, h: o, residual: x)
            addInPlace(x, o)
            layer.mlpNorm.forward(x, rows: total, into: normed)
            let gate = linear(layer.gate, li, "mlp.gate_proj", normed), up = linear(layer.up, li, "mlp.up_proj", normed)
            let gv = gate.mutable, uv = up.values
            parallelFor(count: gv.count, minChunk: 1 << 14) { r in
                for i in r { let a = gv[i]; gv[i] = a / (1 + exp(-a)) * uv[i] }
            }
            let down = linear(layer.down, li, "mlp.down_proj", gate)
            sublayers(li, .feedForward, h: down, residual: x)
            addInPlace(x, down)
        }
        var picked: [(seq: Int, row: Int)] = []
        for s in batch.indices {
            let rs = rows(s)
            batch[s].cache.advance(by: rs.count)
            if batch[s].allLogits { picked += (rs.lowerBound + leads[s]..<rs.upperBound).map { (s, $0) } } else { picked.append((s, rs.upperBound - 1)) }
        }
        let last = FloatBuffer(count: picked.count * h)
        withExtendedLifetime(x) {
            for (i, p) in picked.enumerated() { (last.mutable.baseAddress! + i * h).update(from: x.values.baseAddress! + p.row * h, count: h) }
        }
        norm.forward(last, rows: picked.count, into: last)
        let logits = FloatBuffer(count: picked.count * config.vocab)
        if let q = lmHeadQuantized, picked.count == 1 {
            if decodeArithmetic == .int8 { q.matvecInt8(last.values.baseAddress!, into: logits.mutable.baseAddress!) }
            else { q.matvec(last.values.baseAddress!, into: logits.mutable.baseAddress!) }
        } else if let p = lmHeadPacked {
            p.multiply(last.values.baseAddress!, m: picked.count, into: logits.mutable.baseAddress!)
        } else {
            Linalg.gemm(m: picked.count, n: config.vocab, k: h, a: last.values.baseAddress!, b: lmHead.values.baseAddress!, transB: true,
                        c: logits.mutable.baseAddress!)
        }
        var out = [[[Float]]](repeating: [], count: batch.count)
        withExtendedLifetime(logits) {
            for (i, p) in picked.enumerated() { out[p.seq].append(Array(logits.values[(i * config.vocab)..<((i + 1) * config.vocab)])) }
        }
        return out
    }
}
