import Foundation
import GraftAdapters
import GraftFormats
import GraftTensor

/// `merge_and_unload`: folds an HF PEFT adapter into its base model — LoRA's W' = W + scaling · B·A for
/// every targeted module (scaling α/r, or α/√r with rsLoRA), DoRA's rescaled rows, IA³'s scaled rows
/// or columns — and adds the adapter's `modules_to_save`
/// tensors (e.g. a classifier head). When the adapter's module paths carry a task-model prefix that the
/// base checkpoint lacks (PEFT on BertForSequenceClassification names `bert.encoder…` for a BertModel
/// checkpoint's `encoder…`), every base tensor gets that prefix, so the output loads as the task model.
/// Source: HF PEFT `LoraModel.merge_and_unload` (peft/tuners/lora/layer.py, `get_delta_weight`).
public enum Fuse {
    public struct Summary: Sendable {
        public let fusedModules: Int
        public let savedTensors: Int
        public let outputPath: String
    }

    public static func run(model modelPath: String, adapter adapterPath: String, to outPath: String,
                           dtype: DType? = nil, options: MergeOptions = MergeOptions(),
                           progress: ((StreamProgress) -> Void)? = nil) throws -> Summary {
        let base = try Checkpoint(path: modelPath)
        let adapter = try AdapterMethods.open(adapterPath)
        let prefix = adapter.namePrefix(relativeTo: base.names)
        let target = try adapter.folds(in: base)
        let saved = adapter.savedTensors
        let savedNames = Set(saved.map(\.0))
        var specs: [TensorSpec] = []
        for n in base.names where !savedNames.contains(prefix + n) {
            let i = base.info(n)!
            specs.append(TensorSpec(name: prefix + n, dtype: i.dtype.isFloatingPoint ? (dtype ?? i.dtype) : i.dtype, shape: i.shape))
        }
        for (n, t) in saved { specs.append(TensorSpec(name: n, dtype: dtype ?? t.dtype, shape: t.shape)) }

        let out = try OutputDirectory(outPath, overwrite: options.overwrite, inputs: [modelPath, adapterPath])
        do {
            let writer = try ShardedSafetensorsWriter(directory: out.tempPath, specs: specs, maxShardBytes: options.maxShardBytes)
            let total = specs.reduce(0) { $0 + $1.byteCount }
            var done = 0, k = 0
            func report(_ name: String, _ bytes: Int) {
                k += 1; done += bytes
                progress?(StreamProgress(tensorsDone: k, tensorsTotal: specs.count, bytesDone: done, bytesTotal: total, current: name))
            }
            for n in base.names where !savedNames.contains(prefix + n) {
                let t = try base.tensor(n)
                let outDType = t.dtype.isFloatingPoint ? (dtype ?? t.dtype) : t.dtype
                if let fold = target[n] {
                    try writer.write(prefix + n, tensor: fold(FloatBuffer(t)).tensor(shape: t.shape, dtype: outDType))
                } else {
                    try writer.write(prefix + n, tensor: t.dtype.isFloatingPoint ? t.converted(to: outDType) : t)
                }
                base.releasePages(n)
                report(prefix + n, t.byteCount)
            }
            for (n, t) in saved {
                try writer.write(n, tensor: t.converted(to: dtype ?? t.dtype))
                report(n, t.byteCount)
            }
            try writer.finish()
            try MergeOutput.writeConfig(from: base, dtype: dtype, to: out) { cfg in
                guard let task = adapter.config.taskType, task == "SEQ_CLS",
                      let head = saved.first(where: { $0.0.hasSuffix("classifier.weight") || $0.0.hasSuffix("score.weight") }),
                      var o = cfg.json.objectValue else { return }
                // The fused model is the task model: name its class and label count.
                let arch = cfg.architectures.first ?? ""
                let stem = arch.hasSuffix("Model") ? String(arch.dropLast(5)) : arch.components(separatedBy: "For").first ?? arch
                let labels = head.1.shape[0]
                o.removeAll { ["architectures", "id2label", "label2id"].contains($0.0) }
                o.insert(("architectures", .array([.string(stem + "ForSequenceClassification")])), at: 0)
                o.append(("id2label", .object((0..<labels).map { ("\($0)", .string("LABEL_\($0)")) })))
                o.append(("label2id", .object((0..<labels).map { ("LABEL_\($0)", .int(Int64($0))) })))
                cfg.json = .object(o)
            }
            if options.copyTokenizer { try MergeOutput.copyTokenizer(from: base.directory, to: out) }
            let card = "---\ntags:\n- graft\n- \(adapter.method)\n- fused\n---\n# Fused model\n\n`graft fuse`: base `\(modelPath)` with adapter `\(adapterPath)` folded in (\(adapter.settingsSummary)); \(adapter.moduleNames.count) module(s) updated, \(saved.count) saved tensor(s) added.\n"
            try MergeOutput.writeModelCard(card, to: out)
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
        return Summary(fusedModules: adapter.moduleNames.count, savedTensors: saved.count, outputPath: out.finalPath)
    }
}
