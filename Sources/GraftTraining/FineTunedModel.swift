import Foundation
import GraftFormats
import GraftTensor

/// What full fine-tuning writes: the changed model as an HF folder. Every tensor of the base under the
/// base's own name (the trained weights and biases replaced), a classification head as `classifier.*`
/// beside them, and the base's other files (tokenizer, configuration; a classifier's config.json names
/// `BertForSequenceClassification` and its labels). transformers loads it as the task model; `graft merge`
/// takes it as a fine-tune of the base (the names line up), and Graft's commands run it as a model.
/// A GGUF base becomes an HF Llama folder (float32), as `graft convert` writes one.
enum FineTunedModel {
    static func write(_ adapter: TrainableAdapter, base modelPath: String, into dir: String, labels: [String]?) throws {
        var changed: [String: FloatBuffer] = [:]  // by module path + .weight / .bias
        for t in adapter.trainedWeights {
            changed[t.path + ".weight"] = t.weight
            if let b = t.bias { changed[t.path + ".bias"] = b }
        }
        if modelPath.hasSuffix(".gguf") {
            let g = try GGUFFile(path: modelPath)
            var used = Set<String>()
            try LlamaGGUFConversion.ggufToHF(g, into: dir, dtype: .f32, maxShardBytes: 5_000_000_000, replacing: { name in
                guard let v = changed[name] else { return nil }
                used.insert(name)
                return v
            })
            if let missed = Set(changed.keys).subtracting(used).sorted().first {
                throw TrainingError("\(modelPath): trained tensor '\(missed)' has no place in the converted model")
            }
            return
        }
        let base = try Checkpoint(path: modelPath)
        // The base may name its tensors with a task-model prefix (`bert.`): match module paths by dotted suffix.
        var replace: [String: FloatBuffer] = [:]
        for (n, v) in changed {
            guard let full = base.names.first(where: { $0 == n || $0.hasSuffix("." + n) }) else {
                throw TrainingError("\(modelPath): no tensor '\(n)' to write the trained values into")
            }
            replace[full] = v
        }
        let head = adapter.saved.map { (name: $0.name, value: $0.value, shape: $0.shape) }
        var specs = base.names.map { n -> TensorSpec in
            let i = base.info(n)!
            return TensorSpec(name: n, dtype: i.dtype, shape: i.shape)
        }
        specs += head.map { TensorSpec(name: $0.name, dtype: .f32, shape: $0.shape) }
        let writer = try ShardedSafetensorsWriter(directory: dir, specs: specs, maxShardBytes: 5_000_000_000)
        for n in base.names {
            let t = try base.tensor(n)
            try writer.write(n, tensor: replace[n].map { $0.tensor(shape: t.shape, dtype: t.dtype) } ?? t)
            base.releasePages(n)
        }
        for h in head { try writer.write(h.name, tensor: h.value.tensor(shape: h.shape)) }
        try writer.finish()
        // The base's other files: tokenizer, configuration, sentence-transformers' modules (not its weights or model card).
        let fm = FileManager.default
        for f in try fm.contentsOfDirectory(atPath: modelPath) where !f.hasSuffix(".safetensors") && !f.hasSuffix(".bin")
            && !f.hasSuffix(".index.json") && f != "README.md" && !f.hasPrefix(".") && !fm.fileExists(atPath: dir + "/" + f) {
            try fm.copyItem(atPath: modelPath + "/" + f, toPath: dir + "/" + f)
        }
        if let labels, case .object(var fields)? = try base.config()?.json {
            let set: [(String, JSONValue)] = [
                ("architectures", .array([.string("BertForSequenceClassification")])),
                ("id2label", .object(labels.enumerated().map { (String($0.offset), .string($0.element)) })),
                ("label2id", .object(labels.enumerated().map { ($0.element, .int(Int64($0.offset))) })),
            ]
            for (k, v) in set {
                if let i = fields.firstIndex(where: { $0.0 == k }) { fields[i].1 = v } else { fields.append((k, v)) }
            }
            try FileBytes.write(Data((JSONValue.object(fields).serialized(pretty: true) + "\n").utf8), to: dir + "/config.json")
        }
    }
}
