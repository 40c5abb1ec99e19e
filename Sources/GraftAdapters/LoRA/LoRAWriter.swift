import Foundation
import GraftFormats
import GraftTensor

/// Writes an adapter folder as HF PEFT does: `adapter_config.json` (LoRA's keys here; each method's recipe
/// gives its own) and `adapter_model.safetensors` with the tensors under their PEFT names.
public enum LoRAWriter {
    /// The `adapter_config.json` object PEFT 0.21 reads back for this configuration.
    public static func configJSON(_ c: LoRAConfig, taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        let targets = c.targets.json
        return .object([
            ("alpha_pattern", .object([])), ("base_model_name_or_path", .string(baseModel)), ("bias", .string("none")),
            ("fan_in_fan_out", .bool(false)), ("inference_mode", .bool(true)), ("init_lora_weights", .bool(true)),
            ("layers_pattern", .null),
            ("layers_to_transform", c.layersToTransform.map { .array($0.map { .int(Int64($0)) }) } ?? .null),
            ("lora_alpha", c.alpha == c.alpha.rounded() ? .int(Int64(c.alpha)) : .double(c.alpha)),
            ("lora_dropout", .double(c.dropout)),
            ("modules_to_save", modulesToSave.isEmpty ? .null : .array(modulesToSave.map { .string($0) })),
            ("peft_type", .string("LORA")), ("r", .int(Int64(c.rank))), ("rank_pattern", .object([])), ("revision", .null),
            ("target_modules", targets), ("task_type", .string(taskType)), ("use_dora", .bool(c.useDoRA)),
            ("use_rslora", .bool(c.useRSLoRA)),
        ])
    }

    /// Writes the two files into `directory` (an existing folder, e.g. an `OutputDirectory`'s temp path).
    public static func write(to directory: String, config: JSONValue, tensors: [(String, Tensor)]) throws {
        let cfg = (directory as NSString).appendingPathComponent("adapter_config.json")
        try FileBytes.write(config.serialized(pretty: true) + "\n", to: cfg)
        try ShardedSafetensorsWriter.writeFile((directory as NSString).appendingPathComponent("adapter_model.safetensors"), tensors)
    }
}
