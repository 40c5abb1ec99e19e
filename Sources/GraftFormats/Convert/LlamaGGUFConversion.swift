import Foundation
import GraftTensor

/// Llama checkpoints between GGUF (llama.cpp) and HF folders (transformers): tensor names, the q/k row
/// permutation llama.cpp's converter applies, config.json ⇄ `llama.*` metadata, and the byte-level BPE
/// tokenizer (`tokenizer.json` ⇄ `tokenizer.ggml.*`).
public enum LlamaGGUFConversion {
    /// HF name for a GGUF tensor name, with whether its rows are rotary-permuted (q or k).
    static func hfName(_ g: String) -> (String, permute: String?)? {
        switch g {
        case "token_embd.weight": return ("model.embed_tokens.weight", nil)
        case "output_norm.weight": return ("model.norm.weight", nil)
        case "output.weight": return ("lm_head.weight", nil)
        default: break
        }
        let parts = g.split(separator: ".")
        guard parts.count == 4, parts[0] == "blk", let i = Int(parts[1]), parts[3] == "weight" else { return nil }
        let p = "model.layers.\(i)."
        switch parts[2] {
        case "attn_norm": return (p + "input_layernorm.weight", nil)
        case "ffn_norm": return (p + "post_attention_layernorm.weight", nil)
        case "attn_q": return (p + "self_attn.q_proj.weight", "q")
        case "attn_k": return (p + "self_attn.k_proj.weight", "k")
        case "attn_v": return (p + "self_attn.v_proj.weight", nil)
        case "attn_output": return (p + "self_attn.o_proj.weight", nil)
        case "ffn_gate": return (p + "mlp.gate_proj.weight", nil)
        case "ffn_up": return (p + "mlp.up_proj.weight", nil)
        case "ffn_down": return (p + "mlp.down_proj.weight", nil)
        default: return nil
        }
    }

    /// For each destination row of a q/k weight, the source row it comes from. GGUF stores the rotary
    /// pairs interleaved (row h·d + 2j + i), transformers as halves (row h·d + i·d/2 + j).
    public static func rotaryRowSources(heads: Int, rows: Int, toHF: Bool) -> [Int] {
        let d = rows / heads, half = d / 2
        var src = [Int](repeating: 0, count: rows)
        for h in 0..<heads { for i in 0..<2 { for j in 0..<half {
            let hf = h * d + i * half + j, gg = h * d + 2 * j + i
            if toHF { src[hf] = gg } else { src[gg] = hf }
        } } }
        return src
    }

    /// Copies `rows` rows of `rowBytes` bytes from `src` to `dst` in the rotary order (see `rotaryRowSources`).
    public static func permuteRotaryRows(_ src: UnsafeRawPointer, into dst: UnsafeMutableRawPointer, heads: Int, rows: Int,
                                         rowBytes: Int, toHF: Bool) {
        for (r, s) in rotaryRowSources(heads: heads, rows: rows, toHF: toHF).enumerated() {
            (dst + r * rowBytes).copyMemory(from: src + s * rowBytes, byteCount: rowBytes)
        }
    }

    /// A float q/k weight [rows × cols] in the other layout.
    public static func permuteRows(_ w: FloatBuffer, heads: Int, rows: Int, cols: Int, toHF: Bool) -> FloatBuffer {
        let out = FloatBuffer(count: w.count)
        permuteRotaryRows(UnsafeRawPointer(w.values.baseAddress!), into: UnsafeMutableRawPointer(out.mutable.baseAddress!),
                          heads: heads, rows: rows, rowBytes: cols * 4, toHF: toHF)
        return out
    }

    /// GGUF → HF folder (written into `dir`): model.safetensors in `dtype`, config.json, tokenizer.json,
    /// tokenizer_config.json. `replacing` gives new values for tensors by their HF name, already in
    /// transformers' layout (a fine-tune of the GGUF's weights).
    public static func ggufToHF(_ g: GGUFFile, into dir: String, dtype: DType, maxShardBytes: Int,
                                replacing: ((String) -> FloatBuffer?)? = nil, progress: ((Int, Int) -> Void)? = nil) throws {
        guard g["general.architecture"]?.string == "llama" else {
            throw FormatError(g.path, "general.architecture", "'\(g["general.architecture"]?.string ?? "?")' cannot be converted (supported: llama)")
        }
        func int(_ k: String) throws -> Int {
            guard let v = g["llama." + k]?.int else { throw FormatError(g.path, "llama." + k, "missing") }
            return v
        }
        let heads = try int("attention.head_count"), kvHeads = g["llama.attention.head_count_kv"]?.int ?? heads
        var items: [(String, GGUFTensorInfo, String?)] = []
        for t in g.tensors {
            guard let (name, perm) = hfName(t.name) else {
                throw FormatError(g.path, t.name, "tensor has no transformers equivalent in a Llama checkpoint")
            }
            items.append((name, t, perm))
        }
        let writer = try ShardedSafetensorsWriter(directory: dir, specs: items.map { TensorSpec(name: $0.0, dtype: dtype, shape: $0.1.shape) },
                                                  maxShardBytes: maxShardBytes)
        for (k, (name, info, perm)) in items.enumerated() {
            if let new = replacing?(name) {
                guard new.count == info.shape.reduce(1, *) else { throw FormatError(g.path, info.name, "replacement has \(new.count) values for shape \(info.shape)") }
                try writer.write(name, tensor: new.tensor(shape: info.shape, dtype: dtype))
                progress?(k + 1, items.count)
                continue
            }
            var w = try g.floats(info.name)
            if let perm {
                w = permuteRows(w, heads: perm == "q" ? heads : kvHeads, rows: info.shape[0], cols: info.shape[1], toHF: true)
            }
            try writer.write(name, tensor: w.tensor(shape: info.shape, dtype: dtype))
            progress?(k + 1, items.count)
        }
        try writer.finish()
        let hidden = try int("embedding_length")
        let vocab = g.info("token_embd.weight")?.shape.first ?? 0
        let config = JSONValue.object([
            ("architectures", .array([.string("LlamaForCausalLM")])), ("model_type", .string("llama")),
            ("hidden_size", .int(Int64(hidden))), ("intermediate_size", .int(Int64(try int("feed_forward_length")))),
            ("num_hidden_layers", .int(Int64(try int("block_count")))), ("num_attention_heads", .int(Int64(heads))),
            ("num_key_value_heads", .int(Int64(kvHeads))), ("vocab_size", .int(Int64(vocab))),
            ("max_position_embeddings", .int(Int64(g["llama.context_length"]?.int ?? 2048))),
            ("rms_norm_eps", .double(g["llama.attention.layer_norm_rms_epsilon"]?.double ?? 1e-5)),
            ("rope_theta", .double(g["llama.rope.freq_base"]?.double ?? 10000)),
            ("tie_word_embeddings", .bool(g.info("output.weight") == nil)), ("hidden_act", .string("silu")),
            ("bos_token_id", g["tokenizer.ggml.bos_token_id"]?.int.map { .int(Int64($0)) } ?? .null),
            ("eos_token_id", g["tokenizer.ggml.eos_token_id"]?.int.map { .int(Int64($0)) } ?? .null),
            ("torch_dtype", .string(dtype.torchName)),
        ])
        try FileBytes.write(Data((config.serialized(pretty: true) + "\n").utf8), to: dir + "/config.json")
        try writeTokenizer(g, into: dir)
    }

    static func writeTokenizer(_ g: GGUFFile, into dir: String) throws {
        guard g["tokenizer.ggml.model"]?.string == "gpt2" else {
            throw FormatError(g.path, "tokenizer.ggml.model", "only gpt2 (byte-level BPE) tokenizers can be converted so far")
        }
        let tokens = try g.strings("tokenizer.ggml.tokens"), merges = try g.strings("tokenizer.ggml.merges")
        let types = g["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        let digits = ["smollm", "starcoder", "refact", "qwen2"].contains(g["tokenizer.ggml.pre"]?.string ?? "")
        let added: [JSONValue] = types.enumerated().filter { $0.element == 3 || $0.element == 4 }.map { i, t in
            .object([("id", .int(Int64(i))), ("content", .string(tokens[i])), ("single_word", .bool(false)), ("lstrip", .bool(false)),
                     ("rstrip", .bool(false)), ("normalized", .bool(false)), ("special", .bool(t == 3))])
        }
        let byteLevel = JSONValue.object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("trim_offsets", .bool(true)), ("use_regex", .bool(true))])
        let pre: JSONValue = digits
            ? .object([("type", .string("Sequence")), ("pretokenizers", .array([.object([("type", .string("Digits")), ("individual_digits", .bool(true))]), byteLevel]))])
            : byteLevel
        let tok = JSONValue.object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null), ("added_tokens", .array(added)),
            ("normalizer", .null), ("pre_tokenizer", pre), ("post_processor", byteLevel), ("decoder", byteLevel),
            ("model", .object([("type", .string("BPE")), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", .null),
                               ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)),
                               ("vocab", .object(tokens.enumerated().map { ($0.element, .int(Int64($0.offset))) })),
                               ("merges", .array(merges.map { .string($0) }))])),
        ])
        try FileBytes.write(Data(tok.serialized().utf8), to: dir + "/tokenizer.json")
        func tokenName(_ key: String) -> JSONValue {
            guard let i = g[key]?.int, i >= 0, i < tokens.count else { return .null }
            return .string(tokens[i])
        }
        var cfg: [(String, JSONValue)] = [("tokenizer_class", .string("GPT2Tokenizer")), ("bos_token", tokenName("tokenizer.ggml.bos_token_id")),
                                          ("eos_token", tokenName("tokenizer.ggml.eos_token_id")), ("pad_token", tokenName("tokenizer.ggml.padding_token_id")),
                                          ("unk_token", tokenName("tokenizer.ggml.unknown_token_id")),
                                          ("add_bos_token", .bool(g["tokenizer.ggml.add_bos_token"]?.bool ?? false)),
                                          ("model_max_length", .int(Int64(g["llama.context_length"]?.int ?? 2048)))]
        if let t = g["tokenizer.chat_template"]?.string { cfg.append(("chat_template", .string(t))) }
        try FileBytes.write(Data((JSONValue.object(cfg).serialized(pretty: true) + "\n").utf8), to: dir + "/tokenizer_config.json")
    }

    /// HF Llama folder → GGUF file (F32, F16 or BF16 tensors) with the metadata llama.cpp reads.
    public static func hfToGGUF(folder: String, to path: String, type: GGMLType, progress: ((Int, Int) -> Void)? = nil) throws {
        let ck = try Checkpoint(path: folder)
        guard let cfg = try ck.config() else { throw FormatError(folder, nil, "no config.json") }
        let j = cfg.json
        guard cfg.architectures.first == "LlamaForCausalLM" || cfg.modelType == "llama" else {
            throw FormatError(folder + "/config.json", "architectures", "'\(cfg.architectures.first ?? "?")' cannot be converted (supported: LlamaForCausalLM)")
        }
        func int(_ k: String) throws -> Int {
            guard let v = j[k]?.intValue else { throw FormatError(folder + "/config.json", k, "missing") }
            return Int(v)
        }
        let heads = try int("num_attention_heads"), kvHeads = Int(j["num_key_value_heads"]?.intValue ?? Int64(heads))
        let hidden = try int("hidden_size")
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("general.name", .string((folder as NSString).lastPathComponent))
        w.set("general.alignment", .uint(32))
        w.set("llama.block_count", .uint(UInt64(try int("num_hidden_layers"))))
        w.set("llama.context_length", .uint(UInt64(Int(j["max_position_embeddings"]?.intValue ?? 2048))))
        w.set("llama.embedding_length", .uint(UInt64(hidden)))
        w.set("llama.feed_forward_length", .uint(UInt64(try int("intermediate_size"))))
        w.set("llama.attention.head_count", .uint(UInt64(heads)))
        w.set("llama.attention.head_count_kv", .uint(UInt64(kvHeads)))
        w.set("llama.rope.freq_base", .float(j["rope_theta"]?.doubleValue ?? 10000))
        w.set("llama.attention.layer_norm_rms_epsilon", .float(j["rms_norm_eps"]?.doubleValue ?? 1e-6))
        w.set("llama.rope.dimension_count", .uint(UInt64(hidden / heads)))
        w.set("llama.vocab_size", .uint(UInt64(try int("vocab_size"))))
        w.set("general.file_type", .uint(type == .f32 ? 0 : type == .f16 ? 1 : 32))
        try addTokenizer(folder: folder, to: &w)
        let reverse = Dictionary(uniqueKeysWithValues: (["token_embd.weight", "output_norm.weight", "output.weight"]
            + (0..<(try int("num_hidden_layers"))).flatMap { i in
                ["attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"].map { "blk.\(i).\($0).weight" }
            }).compactMap { g in hfName(g).map { ($0.0, (g, $0.permute)) } })
        for (k, name) in ck.names.enumerated() {
            guard let (gname, perm) = reverse[name] else {
                if name.hasSuffix("rotary_emb.inv_freq") { continue }
                throw FormatError(folder, name, "tensor has no llama.cpp equivalent")
            }
            let info = ck.info(name)!
            var v = FloatBuffer(try ck.tensor(name))
            if let perm { v = permuteRows(v, heads: perm == "q" ? heads : kvHeads, rows: info.shape[0], cols: info.shape[1], toHF: false) }
            // Norm weights stay F32, as llama.cpp's converter keeps 1-D tensors.
            try w.add(gname, shape: info.shape, values: v, type: info.shape.count == 1 ? .f32 : type)
            progress?(k + 1, ck.names.count)
        }
        try w.write(to: path)
    }

    static func addTokenizer(folder: String, to w: inout GGUFWriter) throws {
        let path = folder + "/tokenizer.json"
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(path, nil, "missing (needed for the GGUF vocabulary)") }
        let j: JSONValue
        do { j = try JSONValue.parse([UInt8](data)) } catch { throw FormatError(path, nil, "invalid JSON: \(error)") }
        guard j["model"]?["type"]?.stringValue == "BPE", let vocab = j["model"]?["vocab"]?.objectValue else {
            throw FormatError(path, "model.type", "only byte-level BPE tokenizers can be converted so far")
        }
        var tokens = [String](repeating: "", count: vocab.count)
        for (t, v) in vocab { if let i = v.intValue, i >= 0, Int(i) < tokens.count { tokens[Int(i)] = t } }
        var types = [GGUFValue](repeating: .int(1), count: tokens.count)
        for a in j["added_tokens"]?.arrayValue ?? [] {
            guard let i = a["id"]?.intValue, Int(i) < tokens.count else { continue }
            types[Int(i)] = .int(a["special"]?.boolValue == true ? 3 : 4)
        }
        let merges: [GGUFValue] = (j["model"]?["merges"]?.arrayValue ?? []).compactMap { m in
            if let s = m.stringValue { return .string(s) }
            if let p = m.arrayValue, p.count == 2, let a = p[0].stringValue, let b = p[1].stringValue { return .string(a + " " + b) }
            return nil
        }
        let preSteps = j["pre_tokenizer"]?["pretokenizers"]?.arrayValue ?? []
        let digits = preSteps.contains { $0["type"]?.stringValue == "Digits" }
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string(digits ? "smollm" : "gpt2"))
        w.set("tokenizer.ggml.tokens", .array(tokens.map { .string($0) }))
        w.set("tokenizer.ggml.token_type", .array(types))
        w.set("tokenizer.ggml.merges", .array(merges))
        var tc: JSONValue? = nil
        if let d = FileManager.default.contents(atPath: folder + "/tokenizer_config.json") { tc = try? JSONValue.parse([UInt8](d)) }
        func id(_ key: String) -> Int? { tc?[key]?.stringValue.flatMap { t in tokens.firstIndex(of: t) } }
        if let b = id("bos_token") { w.set("tokenizer.ggml.bos_token_id", .uint(UInt64(b))) }
        if let e = id("eos_token") { w.set("tokenizer.ggml.eos_token_id", .uint(UInt64(e))) }
        if let p = id("pad_token") { w.set("tokenizer.ggml.padding_token_id", .uint(UInt64(p))) }
        w.set("tokenizer.ggml.add_bos_token", .bool(tc?["add_bos_token"]?.boolValue ?? false))
        if let t = tc?["chat_template"]?.stringValue { w.set("tokenizer.chat_template", .string(t)) }
    }
}
