import Foundation
import GraftFormats
import GraftTensor

/// An HF PEFT prompt-learning folder, `PROMPT_TUNING` or `PREFIX_TUNING`: one tensor `prompt_embeddings`
/// [num_virtual_tokens × width] (a prompt's embeddings, or a prefix's keys and values for every layer, as
/// `VirtualTokens` lays them out), plus `modules_to_save` tensors (a classifier) under their model names.
/// Nothing here changes a weight, so it cannot be folded or merged.
public final class VirtualTokenAdapter: LoadedAdapter, @unchecked Sendable {
    public let path: String
    public let config: PEFTAdapterConfig
    public let placement: VirtualTokens.Placement
    public let count: Int
    /// [count × width], as saved.
    public let embeddings: Tensor
    public let savedTensors: [(String, Tensor)]

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path
        self.config = config
        placement = config.peftType == "PREFIX_TUNING" ? .keysValues : .embeddings
        let f = try AdapterFile(folder: path, suffixes: [], marker: "prompt_embeddings", exactNames: ["prompt_embeddings"],
                                unsupported: "unsupported prompt-learning tensor")
        guard let e = f.exact["prompt_embeddings"] else { throw FormatError(f.path, "prompt_embeddings", "missing: a prompt-learning adapter stores its virtual tokens there") }
        guard e.dtype.isFloatingPoint, e.shape.count == 2, e.shape[0] > 0, e.shape[1] > 0 else {
            throw FormatError(f.path, "prompt_embeddings", "\(e.dtype.rawValue) \(e.shape) is not a [virtual tokens × width] float matrix")
        }
        let n = config.json["num_virtual_tokens"]?.intValue.map(Int.init)
        guard let n, n > 0 else { throw FormatError(config.path, "num_virtual_tokens", "missing or not a positive integer") }
        let submodules = Int(config.json["num_transformer_submodules"]?.intValue ?? 1)
        guard submodules == 1 else {
            throw FormatError(config.path, "num_transformer_submodules", "\(submodules): encoder–decoder prompts are not supported (Graft's models have one stack)")
        }
        guard e.shape[0] == n else {
            throw FormatError(f.path, "prompt_embeddings", "has \(e.shape[0]) rows but num_virtual_tokens is \(n)")
        }
        count = n
        embeddings = e
        savedTensors = f.saved
    }

    public var method: String { placement == .keysValues ? "prefix" : "prompt" }
    public var moduleNames: [String] { [] }
    public func layerUpdates(dropout: Float) -> [(module: String, update: any LayerUpdate)] { [] }

    public func virtualTokens() throws -> VirtualTokens? {
        VirtualTokens(placement: placement, count: count, width: embeddings.shape[1], values: FloatBuffer(FloatBuffer(embeddings).array))
    }

    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        throw LoRAError("\(path): \(method == "prefix" ? "prefix" : "prompt") tuning cannot be folded into the weights: its \(count) virtual tokens are extra inputs the model reads, not a change to any weight (serve it on the base model with the adapter instead)")
    }

    public func recipe(dropout: Double) throws -> any AdapterRecipe {
        if placement == .keysValues { return PrefixTuningConfig(virtualTokens: count) }
        let j = config.json
        var r = PromptTuningConfig(virtualTokens: count, initialisation: PromptTuningConfig.Initialisation(rawValue: j["prompt_tuning_init"]?.stringValue ?? "RANDOM") ?? .random,
                                   initText: j["prompt_tuning_init_text"]?.stringValue)
        r.tokenizerPath = j["tokenizer_name_or_path"]?.stringValue
        return r
    }

    public var settingsSummary: String { "\(method) tuning, \(count) virtual tokens" }

    /// The `adapter_config.json` of a prompt-learning method (PEFT 0.21's keys). The model's widths
    /// (`token_dim`, `num_layers`, `num_attention_heads`) are filled in by `withLayout` once the model is known.
    static func config(peftType: String, virtualTokens: Int, taskType: String, baseModel: String, modulesToSave: [String],
                       extra: [(String, JSONValue)]) -> JSONValue {
        .object(([
            ("auto_mapping", .null), ("base_model_name_or_path", .string(baseModel)), ("inference_mode", .bool(true)),
            ("modules_to_save", modulesToSave.isEmpty ? .null : .array(modulesToSave.map { .string($0) })),
            ("num_attention_heads", .null), ("num_layers", .null), ("num_transformer_submodules", .int(1)),
            ("num_virtual_tokens", .int(Int64(virtualTokens))), ("peft_type", .string(peftType)), ("revision", .null),
            ("task_type", .string(taskType)), ("token_dim", .null),
        ] + extra).sorted { $0.0 < $1.0 })
    }

    /// `config` with the model's widths PEFT records: for a prompt the hidden size and attention heads,
    /// for a prefix the key/value width and key/value heads (PEFT's rule for grouped-query attention).
    public static func withLayout(_ config: JSONValue, _ layout: VirtualTokens.Layout, placement: VirtualTokens.Placement) -> JSONValue {
        guard case let .object(fields) = config else { return config }
        let prefix = placement == .keysValues
        let values: [String: JSONValue] = [
            "token_dim": .int(Int64(prefix ? layout.kvWidth : layout.hidden)),
            "num_attention_heads": .int(Int64(prefix ? layout.kvHeads : layout.heads)),
            "num_layers": .int(Int64(layout.layers)),
        ]
        return .object(fields.map { k, v in (k, values[k] ?? (k == "encoder_hidden_size" && prefix ? .int(Int64(layout.kvWidth)) : v)) })
    }
}
