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

    public func makeCache() -> KVCache { KVCache(layers: config.layers) }

    /// Runs `tokens` after the cached positions (batched prefill when several), appends their keys and
    /// values to the cache, and returns logits for every new position (`allLogits`) or the last only.
    /// Virtual tokens go first into an empty cache: a prefix as cached keys and values, a prompt as the
    /// first positions' embeddings (no logits returned for them).
    public func forward(_ tokens: [Int], cache: inout KVCache, allLogits: Bool = false) throws -> [[Float]] {
        guard !tokens.isEmpty else { return [] }
        let dh = config.headDim, nh = config.heads, nkv = config.kvHeads, group = nh / nkv
        let kvw = nkv * dh, h = config.hidden
        var lead = 0  // prompt rows ahead of the tokens
        if cache.count == 0, let vt = virtualTokens {
            guard vt.count + tokens.count <= config.contextLength else {
                throw ModelError("\(tokens.count) tokens after \(vt.count) virtual tokens exceed the model's context of \(config.contextLength)")
            }
            if vt.placement == .keysValues {
                for li in 0..<layers.count {
                    let kp = vt.keysValues(layer: li, value: false, kvWidth: kvw), vp = vt.keysValues(layer: li, value: true, kvWidth: kvw)
                    for r in 0..<vt.count {
                        cache.keys[li] += UnsafeBufferPointer(start: kp + r * vt.width, count: kvw)
                        cache.values[li] += UnsafeBufferPointer(start: vp + r * vt.width, count: kvw)
                    }
                }
                cache.advance(by: vt.count)
            } else {
                lead = vt.count
            }
        }
        let t = lead + tokens.count, past = cache.count
        guard past + t <= config.contextLength else {
            throw ModelError("\(past + t) tokens exceed the model's context of \(config.contextLength)")
        }
        for id in tokens where id < 0 || id >= config.vocab { throw ModelError("token id \(id) outside the vocabulary (\(config.vocab))") }
        let x = FloatBuffer(count: t * h)
        if let vt = virtualTokens, lead > 0 { x.mutable.baseAddress!.update(from: vt.values.values.baseAddress!, count: lead * h) }
        for (r, id) in tokens.enumerated() {
            (x.mutable.baseAddress! + (lead + r) * h).update(from: embedding.values.baseAddress! + id * h, count: h)
        }
        // A prompt's offsets: the tokens' index after it is their position minus its length.
        if let vt = virtualTokens, vt.placement == .embeddings, past + lead >= vt.count {
            vt.addOffsets(to: x.mutable.baseAddress! + lead * h, tokens: tokens.count, first: past + lead - vt.count)
        }
        let normed = FloatBuffer(count: t * h)
        for (li, layer) in layers.enumerated() {
            layer.attnNorm.forward(x, rows: t, into: normed)
            let q = layer.q.forward(normed, rows: t), k = layer.k.forward(normed, rows: t), v = layer.v.forward(normed, rows: t)
            for r in 0..<t {
                rope.apply(q.mutable.baseAddress! + r * h, heads: nh, position: past + r)
                rope.apply(k.mutable.baseAddress! + r * kvw, heads: nkv, position: past + r)
            }
            cache.keys[li] += k.values
            cache.values[li] += v.values
            let total = past + t
            let ctx = FloatBuffer(count: t * h)
            let scale = 1 / Float(dh).squareRoot()
            let qp = q.values.baseAddress!, cp = ctx.mutable.baseAddress!
            cache.keys[li].withUnsafeBufferPointer { kb in
                cache.values[li].withUnsafeBufferPointer { vb in
                    let kp = kb.baseAddress!, vp = vb.baseAddress!
                    let work = UncheckedSendable((qp, kp, vp, cp))
                    let attend = { (head: Int) in
                        let (qp, kp, vp, cp) = work.value
                        let g = head / group
                        let scores = UnsafeMutablePointer<Float>.allocate(capacity: t * total)
                        defer { scores.deallocate() }
                        Linalg.gemm(m: t, n: total, k: dh, alpha: scale, a: qp + head * dh, lda: h,
                                    b: kp + g * dh, ldb: kvw, transB: true, c: scores, ldc: total)
                        for r in 0..<t { for c in (past + r + 1)..<max(total, past + r + 1) { scores[r * total + c] = -.infinity } }
                        Activation.softmaxRows(scores, rows: t, width: total)
                        Linalg.gemm(m: t, n: dh, k: total, a: scores, lda: total, b: vp + g * dh, ldb: kvw,
                                    c: cp + head * dh, ldc: h)
                    }
                    if t == 1 {
                        // A decode step: the heads split over the spinning fork–join pool (a GCD hand-off
                        // would cost more than the step's few hundred thousand multiply-adds).
                        forkJoinRanges(count: nh) { hr in for head in hr { attend(head) } }
                    } else {
                        parallelEach(nh, attend)
                    }
                }
            }
            let o = layer.o.forward(ctx, rows: t)
            _ = sublayerUpdates.apply(li, .attention, h: o, residual: x, rows: t, norm: nil, keep: false)
            addInPlace(x, o)
            layer.mlpNorm.forward(x, rows: t, into: normed)
            let gate = layer.gate.forward(normed, rows: t), up = layer.up.forward(normed, rows: t)
            let gv = gate.mutable, uv = up.values
            parallelFor(count: gv.count, minChunk: 1 << 14) { r in
                for i in r { let a = gv[i]; gv[i] = a / (1 + exp(-a)) * uv[i] }
            }
            let down = layer.down.forward(gate, rows: t)
            _ = sublayerUpdates.apply(li, .feedForward, h: down, residual: x, rows: t, norm: nil, keep: false)
            addInPlace(x, down)
        }
        cache.advance(by: t)
        let rows = allLogits ? Array(lead..<t) : [t - 1]
        let last = FloatBuffer(count: rows.count * h)
        for (k, r) in rows.enumerated() { (last.mutable.baseAddress! + k * h).update(from: x.values.baseAddress! + r * h, count: h) }
        norm.forward(last, rows: rows.count, into: last)
        let logits = FloatBuffer(count: rows.count * config.vocab)
        if let q = lmHeadQuantized, rows.count == 1 {
            if decodeArithmetic == .int8 { q.matvecInt8(last.values.baseAddress!, into: logits.mutable.baseAddress!) }
            else { q.matvec(last.values.baseAddress!, into: logits.mutable.baseAddress!) }
        } else {
            Linalg.gemm(m: rows.count, n: config.vocab, k: h, a: last.values.baseAddress!, b: lmHead.values.baseAddress!, transB: true,
                        c: logits.mutable.baseAddress!)
        }
        return (0..<rows.count).map { Array(logits.values[($0 * config.vocab)..<(($0 + 1) * config.vocab)]) }
    }
}
