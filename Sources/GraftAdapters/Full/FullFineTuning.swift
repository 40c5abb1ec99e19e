import Foundation
import GraftFormats
import GraftTensor

/// Full fine-tuning of chosen weights: the targeted linear layers' weights and biases themselves train
/// (AdamW state for each), everything else stays frozen. The baseline every adapter method is measured
/// against, and the source of real task vectors for merging. Nothing is added to a layer, so there is no
/// `LayerUpdate`: training marks the layers (`Linear.trainWeights`), and the result is not an adapter
/// but the changed model, written as an HF folder of the base's own tensor names (the trained ones
/// replaced; a classifier head beside them), which transformers loads and `graft merge` takes as a
/// fine-tune of the base.
public struct FullFineTuningConfig: AdapterRecipe, Equatable {
    public var targets: ModuleTargets

    public init(targets: ModuleTargets) { self.targets = targets }

    static let info = AdapterMethodInfo(
        name: "full", summary: "the targeted layers' weights and biases train themselves (the baseline; default all linear layers); writes the changed model as an HF folder, not an adapter",
        peftType: "", fusable: false, options: [],
        recipe: { s in FullFineTuningConfig(targets: s.targets ?? ModuleTargets(names: ["all-linear"])) })

    public var method: String { "full" }
    public var label: String { "full fine-tuning" }
    public var trainsBaseWeights: Bool { true }

    public func validate() throws {
        if targets.isEmpty { throw LoRAError("full fine-tuning needs target modules (--targets; all-linear for every linear layer)") }
    }

    /// What checkpoints during training record (the run's settings; the trained tensors are saved by name).
    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        .object([("base_model_name_or_path", .string(baseModel)), ("modules_to_save", .array(modulesToSave.map { .string($0) })),
                 ("peft_type", .string("FULL")), ("target_modules", targets.json), ("task_type", .string(taskType))])
    }
}
