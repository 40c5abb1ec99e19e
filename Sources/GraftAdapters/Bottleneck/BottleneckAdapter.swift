import Foundation
import GraftFormats
import GraftTensor

/// An AdapterHub `adapters` 1.3 bottleneck-adapter folder: `adapter_config.json` (a `config` of BnConfig
/// keys, the adapter's `name`, `version` "adapters.…"), `adapter.safetensors` (per site
/// `….adapters.NAME.adapter_down.0.weight|bias`, `adapter_up.weight|bias`) and, for a classifier,
/// `model_head.safetensors` + `head_config.json`. The three configurations Graft runs — seqbn, houlsby,
/// parbn — are recognised from their keys; any other is an error naming the key.
public final class BottleneckAdapter: LoadedAdapter, @unchecked Sendable {
    public let path: String
    public let config: PEFTAdapterConfig
    public let recipeConfig: BottleneckConfig
    let sites: [(layer: Int, site: Sublayer, prefix: String, tensors: [String: Tensor])]
    public let savedTensors: [(String, Tensor)]

    /// The folder as a bottleneck adapter when its config is AdapterHub's (nil: not AdapterHub's).
    static func openIfAdapterHub(_ folder: String) throws -> BottleneckAdapter? {
        let configPath = (folder as NSString).appendingPathComponent("adapter_config.json")
        guard let data = FileManager.default.contents(atPath: configPath),
              let json = try? JSONValue.parse([UInt8](data)), json["config"]?.objectValue != nil,
              json["version"]?.stringValue?.hasPrefix("adapters.") == true else { return nil }
        return try BottleneckAdapter(path: folder, config: PEFTAdapterConfig(path: configPath, json: json, peftType: "BOTTLENECK"))
    }

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path
        self.config = config
        let json = config.json, c = json["config"]!, file = config.path
        func flag(_ k: String) -> Bool { c[k]?.boolValue ?? false }
        for (k, want) in [("ln_before", false), ("ln_after", false), ("use_gating", false), ("phm_layer", false), ("residual_before_ln", true),
                          ("adapter_residual_before_ln", false), ("original_ln_after", true), ("output_adapter", true)] where flag(k) != want {
            throw FormatError(file, "config.\(k)", "\(flag(k)) is not supported (Graft runs AdapterHub's seqbn, houlsby and parbn configurations)")
        }
        if let inv = c["inv_adapter"], inv != .null { throw FormatError(file, "config.inv_adapter", "invertible adapters are not supported") }
        let kind: BottleneckConfig.Kind
        switch (flag("is_parallel"), flag("mh_adapter"), flag("original_ln_before")) {
        case (true, false, false): kind = .parbn
        case (false, true, false): kind = .houlsby
        case (false, false, true): kind = .seqbn
        default: throw FormatError(file, "config", "is_parallel \(flag("is_parallel")), mh_adapter \(flag("mh_adapter")), original_ln_before \(flag("original_ln_before")) is not a configuration Graft runs (seqbn, houlsby, parbn)")
        }
        let llama = json["model_type"]?.stringValue == "llama"
        var recipe = BottleneckConfig(kind: kind, llama: llama)
        recipe.reductionFactor = Int(c["reduction_factor"]?.doubleValue ?? 16)
        recipe.name = json["name"]?.stringValue ?? "task"
        let defaults = (kind == .houlsby ? "swish" : "relu", kind == .parbn ? 4.0 : 1.0)
        guard (c["non_linearity"]?.stringValue ?? defaults.0).lowercased() == defaults.0 else {
            throw FormatError(file, "config.non_linearity", "'\(c["non_linearity"]?.stringValue ?? "")' is not \(defaults.0), the \(kind.rawValue) configuration's")
        }
        guard (c["scaling"]?.doubleValue ?? defaults.1) == defaults.1 else {
            throw FormatError(file, "config.scaling", "\(c["scaling"]?.doubleValue ?? 0) is not \(defaults.1), the \(kind.rawValue) configuration's")
        }
        let weightsPath = (path as NSString).appendingPathComponent("adapter.safetensors")
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            throw FormatError(path, nil, "missing adapter.safetensors (AdapterHub's pytorch_adapter.bin is not read: save with use_safetensors=True)")
        }
        let weights = try SafetensorsFile(path: weightsPath)
        var found: [String: (layer: Int, site: Sublayer, tensors: [String: Tensor])] = [:]
        let marker = ".adapters.\(recipe.name)."
        for info in weights.tensors {
            guard let r = info.name.range(of: marker) else { throw FormatError(weightsPath, info.name, "is not a tensor of adapter '\(recipe.name)'") }
            let prefix = String(info.name[..<r.upperBound]), suffix = String(info.name[r.upperBound...])
            guard BottleneckUpdate.suffixes.contains(suffix) else { throw FormatError(weightsPath, info.name, "unsupported bottleneck tensor '\(suffix)'") }
            let parts = prefix.split(separator: ".")
            guard let li = parts.firstIndex(where: { $0 == "layer" || $0 == "layers" }), li + 1 < parts.count, let layer = Int(parts[li + 1]) else {
                throw FormatError(weightsPath, info.name, "names no layer")
            }
            let site: Sublayer = prefix.contains("attention.output.adapters") || prefix.contains("attention_adapters") ? .attention : .feedForward
            found[prefix, default: (layer, site, [:])].tensors[suffix] = try weights.tensor(info.name)
        }
        let hidden = Int(json["hidden_size"]?.intValue ?? 0)
        for (prefix, s) in found {
            for suffix in BottleneckUpdate.suffixes where s.tensors[suffix] == nil { throw FormatError(weightsPath, prefix + suffix, "is missing") }
            let d = s.tensors["adapter_down.0.weight"]!, u = s.tensors["adapter_up.weight"]!
            guard d.shape.count == 2, u.shape == [d.shape[1], d.shape[0]], s.tensors["adapter_down.0.bias"]!.shape == [d.shape[0]],
                  s.tensors["adapter_up.bias"]!.shape == [d.shape[1]], hidden == 0 || d.shape[1] == hidden else {
                throw FormatError(weightsPath, prefix, "down \(d.shape) and up \(u.shape) do not form a bottleneck of width \(hidden)")
            }
        }
        guard !found.isEmpty else { throw FormatError(weightsPath, nil, "holds no adapter tensors") }
        recipe.layers = Array(Set(found.values.map(\.layer))).sorted()
        recipeConfig = recipe
        sites = found.map { ($0.value.layer, $0.value.site, $0.key, $0.value.tensors) }.sorted { ($0.layer, $0.site.rawValue) < ($1.layer, $1.site.rawValue) }
        let head = (path as NSString).appendingPathComponent("model_head.safetensors")
        if FileManager.default.fileExists(atPath: head) {
            let f = try SafetensorsFile(path: head)
            savedTensors = try f.tensors.map { ($0.name, try f.tensor($0.name)) }
        } else {
            savedTensors = []
        }
    }

    public var method: String { "bottleneck" }
    public var moduleNames: [String] { [] }
    public func layerUpdates(dropout: Float) -> [(module: String, update: any LayerUpdate)] { [] }

    public func sublayerUpdates() -> [SublayerSiteUpdate] {
        let inputs = Dictionary(uniqueKeysWithValues: recipeConfig.sites.map { ($0.0, $0.1) })
        return sites.compactMap { s in
            guard let input = inputs[s.site] else { return nil }
            func copy(_ k: String) -> FloatBuffer { FloatBuffer(FloatBuffer(s.tensors[k]!).array) }
            let d = s.tensors["adapter_down.0.weight"]!
            let u = BottleneckUpdate(down: copy("adapter_down.0.weight"), downBias: copy("adapter_down.0.bias"), up: copy("adapter_up.weight"),
                                     upBias: copy("adapter_up.bias"), hidden: d.shape[1], bottleneck: d.shape[0], input: input,
                                     activation: recipeConfig.activation, scaling: recipeConfig.scaling)
            return SublayerSiteUpdate(layer: s.layer, site: s.site, prefix: s.prefix, update: u)
        }
    }

    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        throw LoRAError("\(path): a bottleneck adapter is a small nonlinear network between sublayers, not a change of weights: it cannot be folded into the model (serve it unfused: graft eval/generate --adapter)")
    }

    public func recipe(dropout: Double) throws -> any AdapterRecipe { recipeConfig }

    public var settingsSummary: String {
        "bottleneck adapter (\(recipeConfig.kind.rawValue), reduction factor \(recipeConfig.reductionFactor)) at \(sites.count) sites"
    }
}

extension BottleneckConfig {
    /// AdapterHub's folder: `adapter_config.json`, `adapter.safetensors` (the adapter's tensors) and, with a
    /// classifier, `model_head.safetensors` + `head_config.json` (as `save_adapter(…, with_head=True)`).
    public func writeAdapter(to directory: String, config: JSONValue, tensors: [(String, Tensor)], layout: VirtualTokens.Layout, baseModel: String) throws {
        let cfg = adapterHubConfig(layerCount: layout.layers, hidden: layout.hidden, baseModel: baseModel)
        func write(_ name: String, _ json: JSONValue) throws {
            let p = (directory as NSString).appendingPathComponent(name)
            try FileBytes.write(json.serialized(pretty: true) + "\n", to: p)
        }
        try write("adapter_config.json", cfg)
        let head = tensors.filter { $0.0.hasPrefix("classifier.") }
        try ShardedSafetensorsWriter.writeFile((directory as NSString).appendingPathComponent("adapter.safetensors"), tensors.filter { !$0.0.hasPrefix("classifier.") })
        if let w = head.first(where: { $0.0 == "classifier.weight" })?.1 {
            let classes = w.shape[0]
            try ShardedSafetensorsWriter.writeFile((directory as NSString).appendingPathComponent("model_head.safetensors"), head)
            try write("head_config.json", .object([
                ("config", .null), ("hidden_size", .int(Int64(layout.hidden))),
                ("label2id", .object((0..<classes).map { ("LABEL_\($0)", .int(Int64($0))) })), ("model_class", .string("BertForSequenceClassification")),
                ("model_name", .string(baseModel)), ("model_type", .string("bert")), ("name", .null), ("num_labels", .int(Int64(classes))),
                ("version", .string("adapters.1.3.0")),
            ]))
        }
    }
}
