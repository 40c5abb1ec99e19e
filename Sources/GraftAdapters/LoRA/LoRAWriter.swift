import Foundation
import GraftFormats
import GraftTensor

/// Writes an adapter folder as HF PEFT does: `adapter_config.json` and `adapter_model.safetensors`
/// with PEFT's tensor names (`base_model.model.<module>.lora_A.weight`, `.lora_B.weight`,
/// `.lora_magnitude_vector` for DoRA, and full `modules_to_save` tensors such as `classifier.weight`).
public enum LoRAWriter {
    public struct ModuleTensors: Sendable {
        /// Module path in the PEFT task model (`bert.encoder.layer.0.attention.self.query`).
        public let module: String
        public let a: FloatBuffer, b: FloatBuffer, rank: Int, inFeatures: Int, outFeatures: Int
        public let magnitude: FloatBuffer?
        public init(module: String, a: FloatBuffer, b: FloatBuffer, rank: Int, inFeatures: Int, outFeatures: Int, magnitude: FloatBuffer?) {
            self.module = module; self.a = a; self.b = b; self.rank = rank; self.inFeatures = inFeatures
            self.outFeatures = outFeatures; self.magnitude = magnitude
        }
    }

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

    /// The tensors of the adapter file, by PEFT name.
    public static func tensors(_ modules: [ModuleTensors], saved: [(name: String, value: FloatBuffer, shape: [Int])]) -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        for m in modules.sorted(by: { $0.module < $1.module }) {
            let p = LoRAAdapter.prefix + m.module
            out.append((p + ".lora_A.weight", m.a.tensor(shape: [m.rank, m.inFeatures])))
            out.append((p + ".lora_B.weight", m.b.tensor(shape: [m.outFeatures, m.rank])))
            if let mag = m.magnitude { out.append((p + ".lora_magnitude_vector", mag.tensor(shape: [m.outFeatures]))) }
        }
        for s in saved { out.append((LoRAAdapter.prefix + s.name, s.value.tensor(shape: s.shape))) }
        return out
    }

    /// Writes the two files into `directory` (an existing folder, e.g. an `OutputDirectory`'s temp path).
    public static func write(to directory: String, config: JSONValue, tensors: [(String, Tensor)]) throws {
        let cfg = (directory as NSString).appendingPathComponent("adapter_config.json")
        guard FileManager.default.createFile(atPath: cfg, contents: Data((config.serialized(pretty: true) + "\n").utf8)) else {
            throw FormatError(cfg, nil, "cannot write")
        }
        try ShardedSafetensorsWriter.writeFile((directory as NSString).appendingPathComponent("adapter_model.safetensors"), tensors)
    }
}
