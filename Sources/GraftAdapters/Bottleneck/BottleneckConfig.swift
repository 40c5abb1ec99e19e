import Foundation
import GraftFormats
import GraftTensor

/// One bottleneck adapter of a model: at layer `layer`'s `site`, saved under `prefix` + a suffix.
public struct SublayerSiteUpdate: @unchecked Sendable {
    public let layer: Int, site: Sublayer
    /// The tensor-name prefix in the adapter file (`bert.encoder.layer.3.output.adapters.task.`).
    public let prefix: String
    public let update: any SublayerUpdate
    public init(layer: Int, site: Sublayer, prefix: String, update: any SublayerUpdate) {
        self.layer = layer; self.site = site; self.prefix = prefix; self.update = update
    }
}

/// How to build new bottleneck adapters, with AdapterHub `adapters` 1.3's configurations: `seqbn`
/// (Pfeiffer: serial, after the feed-forward block, on its norm of h + r, ReLU), `houlsby` (serial after
/// attention and after the feed-forward block, on h, swish), `parbn` (He et al.: parallel to the
/// feed-forward block, on its input, ReLU, scaling 4); bottleneck width hidden / `reductionFactor`.
/// Saved and read in AdapterHub's folder format (`adapter_config.json`, `adapter.safetensors`, the
/// classifier as `model_head.safetensors` + `head_config.json`).
public struct BottleneckConfig: AdapterRecipe, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case seqbn, houlsby, parbn }

    public var kind: Kind
    public var reductionFactor: Int = 16
    /// Only these layers (nil: every layer; AdapterHub's `leave_out` is the complement).
    public var layers: [Int]? = nil
    /// Llama (else BERT): where the tensors are named.
    public var llama: Bool
    /// AdapterHub's adapter name.
    public var name = "task"

    public init(kind: Kind, llama: Bool) { self.kind = kind; self.llama = llama }

    static let info = AdapterMethodInfo(
        name: "bottleneck", summary: "small bottleneck networks between the sublayers, serial (Houlsby, Pfeiffer) or parallel (He et al.); AdapterHub's format",
        peftType: "", fusable: false,
        options: [("bottleneck", "seqbn (serial after the feed-forward block, default), houlsby (serial after attention and the feed-forward block) or parbn (parallel)"),
                  ("reduction-factor", "bottleneck width = hidden / this (default 16)")],
        recipe: { s in
            var c = BottleneckConfig(kind: .seqbn, llama: s.llama)
            if let k = s.values["bottleneck"] {
                guard let v = Kind(rawValue: k.lowercased()) else { throw LoRAError("--bottleneck: '\(k)' is not seqbn, houlsby or parbn") }
                c.kind = v
            }
            c.reductionFactor = try s.int("reduction-factor") ?? c.reductionFactor
            if let t = s.targets {
                guard t.names.isEmpty && t.regex == nil else {
                    throw LoRAError("bottleneck adapters sit between sublayers, not on named linear layers: choose layers with --layers only")
                }
                c.layers = t.layers
            }
            return c
        }, writes: "output: an AdapterHub adapter folder (adapter_config.json, adapter.safetensors; AdapterHub's load_adapter reads it)")

    public var method: String { "bottleneck" }
    public var label: String { "bottleneck (\(kind.rawValue), ÷\(reductionFactor))" }
    public var targets: ModuleTargets { ModuleTargets(names: []) }
    public var addsSublayerUpdates: Bool { true }
    public var savedNamePrefix: String { "" }

    public func validate() throws {
        guard reductionFactor > 0 else { throw LoRAError("--reduction-factor must be positive (got \(reductionFactor))") }
        if let layers, layers.isEmpty || layers.contains(where: { $0 < 0 }) { throw LoRAError("--layers: give layer indices ≥ 0") }
    }

    /// The sites a kind uses and how each reads its input.
    var sites: [(Sublayer, BottleneckUpdate.Input)] {
        switch kind {
        case .seqbn: [(.feedForward, .normedSum)]
        case .houlsby: [(.attention, .output), (.feedForward, .output)]
        case .parbn: [(.feedForward, .residual)]
        }
    }
    var activation: BottleneckUpdate.Activation { kind == .houlsby ? .swish : .relu }
    var scaling: Float { kind == .parbn ? 4 : 1 }

    /// The tensor-name prefix of a site, as AdapterHub names it.
    func prefix(layer i: Int, site: Sublayer) -> String {
        if llama { return "model.layers.\(i).\(site == .attention ? "attention_adapters" : "output_adapters").adapters.\(name)." }
        return "bert.encoder.layer.\(i).\(site == .attention ? "attention.output" : "output").adapters.\(name)."
    }

    /// AdapterHub's initialisation: `bert` (SeqBn, Houlsby: every weight N(0, 0.02), biases 0) or
    /// `mam_adapter` (ParBn: W_down Kaiming-uniform, the rest 0, so the model starts unchanged).
    public func makeSublayerUpdates(layers count: Int, hidden: Int, seed: UInt64) throws -> [SublayerSiteUpdate] {
        let m = hidden / reductionFactor
        guard m > 0 else { throw LoRAError("--reduction-factor \(reductionFactor) leaves no bottleneck of a \(hidden)-wide model") }
        if let bad = layers?.first(where: { $0 >= count }) { throw LoRAError("--layers: the model has \(count) layers, no layer \(bad)") }
        return (layers ?? Array(0..<count)).flatMap { i in
            sites.map { site, input in
                var rng = SeededRNG(seed: seed, key: "bottleneck/\(i)/\(site.rawValue)")
                let down: FloatBuffer, up: FloatBuffer
                if kind == .parbn {
                    let bound = 1 / Float(hidden).squareRoot()
                    down = FloatBuffer((0..<(m * hidden)).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound })
                    up = FloatBuffer(repeating: 0, count: hidden * m)
                } else {
                    down = FloatBuffer((0..<(m * hidden)).map { _ in 0.02 * rng.nextNormal() })
                    up = FloatBuffer((0..<(hidden * m)).map { _ in 0.02 * rng.nextNormal() })
                }
                let u = BottleneckUpdate(down: down, downBias: FloatBuffer(repeating: 0, count: m), up: up, upBias: FloatBuffer(repeating: 0, count: hidden),
                                         hidden: hidden, bottleneck: m, input: input, activation: activation, scaling: scaling)
                return SublayerSiteUpdate(layer: i, site: site, prefix: prefix(layer: i, site: site), update: u)
            }
        }
    }

    /// AdapterHub's `adapter_config.json` (its BnConfig keys, as `save_adapter` writes them); the model's
    /// layer count is needed for `leave_out`.
    public func adapterHubConfig(layerCount: Int, hidden: Int, baseModel: String) -> JSONValue {
        let leaveOut = layers.map { l in (0..<layerCount).filter { !l.contains($0) } } ?? []
        let config: [(String, JSONValue)] = [
            ("adapter_residual_before_ln", .bool(false)), ("cross_adapter", .bool(false)), ("dropout", .double(0)),
            ("factorized_phm_W", .bool(true)), ("factorized_phm_rule", .bool(false)), ("hypercomplex_nonlinearity", .string("glorot-uniform")),
            ("init_weights", .string(kind == .parbn ? "mam_adapter" : "bert")), ("init_weights_seed", .null), ("inv_adapter", .null),
            ("inv_adapter_reduction_factor", .null), ("is_parallel", .bool(kind == .parbn)), ("learn_phm", .bool(true)),
            ("leave_out", .array(leaveOut.map { .int(Int64($0)) })), ("ln_after", .bool(false)), ("ln_before", .bool(false)),
            ("mh_adapter", .bool(kind == .houlsby)), ("non_linearity", .string(kind == .houlsby ? "swish" : "relu")),
            ("original_ln_after", .bool(true)), ("original_ln_before", .bool(kind == .seqbn)), ("output_adapter", .bool(true)),
            ("phm_bias", .bool(true)), ("phm_c_init", .string("normal")), ("phm_dim", .int(4)), ("phm_init_range", .double(0.0001)),
            ("phm_layer", .bool(false)), ("phm_rank", .int(1)), ("reduction_factor", .int(Int64(reductionFactor))),
            ("residual_before_ln", .bool(true)), ("scaling", .double(Double(scaling))), ("shared_W_phm", .bool(false)),
            ("shared_phm_rule", .bool(true)), ("stochastic_depth", .double(0)), ("use_gating", .bool(false)),
        ]
        return .object([
            ("config", .object(config)), ("hidden_size", .int(Int64(hidden))),
            ("model_class", .string(llama ? "LlamaForCausalLM" : "BertForSequenceClassification")), ("model_name", .string(baseModel)),
            ("model_type", .string(llama ? "llama" : "bert")), ("name", .string(name)), ("version", .string("adapters.1.3.0")),
        ])
    }

    /// Not a PEFT adapter: the folder's config is written by `writeAdapter`, which knows the model.
    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        .object([("graft_method", .string(method)), ("kind", .string(kind.rawValue)), ("reduction_factor", .int(Int64(reductionFactor))),
                 ("layers", layers.map { .array($0.map { .int(Int64($0)) }) } ?? .null), ("base_model", .string(baseModel))])
    }
}
