import Foundation
import GraftFormats
import GraftTensor

/// How to build a new (IA)³ adapter, with PEFT's `IA3Config` meanings: the target modules, and which
/// of them are feed-forward layers (their input is scaled, not their output).
public struct IA3Config: AdapterRecipe, Equatable {
    public var targets: ModuleTargets
    /// Feed-forward modules by PEFT's rule: the module path ends with one of these strings.
    public var feedforward: [String]

    public init(targets: ModuleTargets, feedforward: [String]) {
        self.targets = targets; self.feedforward = feedforward
    }

    /// PEFT's defaults for the architectures Graft runs (`TRANSFORMERS_MODELS_TO_IA3_*_MAPPING`): BERT
    /// keys, values and both output projections; Llama keys, values and the down projection.
    public static func defaults(llama: Bool) -> IA3Config {
        llama ? IA3Config(targets: ModuleTargets(names: ["k_proj", "v_proj", "down_proj"]), feedforward: ["down_proj"])
              : IA3Config(targets: ModuleTargets(names: ["key", "value", "output.dense"]), feedforward: ["output.dense"])
    }

    static let info = AdapterMethodInfo(
        name: "ia3", summary: "learned vectors rescale keys, values and feed-forward inputs (Liu et al. 2022, T-Few)",
        peftType: "IA3", fusable: true,
        options: [("feedforward", "target modules whose input is scaled, not their output (PEFT's feedforward_modules; default output.dense for BERT, down_proj for Llama)")],
        recipe: { s in
            let d = defaults(llama: s.llama), targets = s.targets ?? d.targets
            // The default feed-forward modules that are among the chosen targets (a regex takes them all).
            let ff = d.feedforward.filter { targets.regex != nil || targets.names.contains($0) }
            return IA3Config(targets: targets, feedforward: s.list("feedforward") ?? ff)
        })

    public var method: String { "ia3" }
    public var label: String { "IA³" }

    /// Whether the module at `path` is a feed-forward one (PEFT: `path.endswith(entry)` for some entry).
    public func isFeedforward(_ path: String) -> Bool { feedforward.contains { path.hasSuffix($0) } }

    public func validate() throws {
        if targets.layers != nil {
            throw LoRAError("IA³ has no layers_to_transform in PEFT's format: choose layers with a target regex (re:…) instead")
        }
        // PEFT's IA3Config requires feedforward_modules ⊆ target_modules when both are lists.
        if targets.regex == nil, targets.names != ["all-linear"] {
            for f in feedforward where !targets.names.contains(f) {
                throw LoRAError("IA³ feed-forward module '\(f)' is not among the target modules (\(targets.names.joined(separator: ", ")))")
            }
        }
    }

    /// l = ones (PEFT's `init_ia3_weights`): the adapter starts as the identity.
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        let ff = isFeedforward(module)
        return IA3Update(scaling: FloatBuffer(repeating: 1, count: ff ? inFeatures : outFeatures), feedforward: ff)
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        .object([
            ("auto_mapping", .null), ("base_model_name_or_path", .string(baseModel)), ("exclude_modules", .null),
            ("fan_in_fan_out", .bool(false)), ("feedforward_modules", .array(feedforward.map { .string($0) })),
            ("inference_mode", .bool(true)), ("init_ia3_weights", .bool(true)),
            ("modules_to_save", modulesToSave.isEmpty ? .null : .array(modulesToSave.map { .string($0) })),
            ("peft_type", .string("IA3")), ("revision", .null), ("target_modules", targets.json), ("task_type", .string(taskType)),
        ])
    }
}
