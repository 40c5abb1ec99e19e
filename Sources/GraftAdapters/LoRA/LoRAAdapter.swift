import Foundation
import GraftFormats
import GraftTensor

/// An HF PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`), read for
/// applying to base weights: ΔW = scaling · B · A per target module, and the `modules_to_save`
/// tensors (e.g. a classification head) that replace or extend the base model's.
public final class LoRAAdapter: LoadedAdapter, @unchecked Sendable {
    public struct Module: Sendable {
        /// Module path as PEFT names it, without the `base_model.model.` prefix.
        public let name: String
        public let a: Tensor  // [r, in]
        public let b: Tensor  // [out, r]
        public let scaling: Double
        /// DoRA's magnitude vector m [out] (nil for plain LoRA).
        public let magnitude: Tensor?
    }

    public let path: String
    public let config: PEFTAdapterConfig
    public let modules: [String: Module]
    /// Full tensors saved in the adapter, by their name in the model (no PEFT prefix, no
    /// `modules_to_save.default` infix).
    public let savedTensors: [(String, Tensor)]

    public static let prefix = "base_model.model."

    /// Reads a LoRA or DoRA folder; another method's folder is an error naming its type (`AdapterMethods.open`
    /// reads any method's).
    public convenience init(path: String) throws {
        let configPath = (path as NSString).appendingPathComponent("adapter_config.json")
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw FormatError(path, nil, "not a PEFT adapter folder (no adapter_config.json)")
        }
        let config = try PEFTAdapterConfig(path: configPath)
        guard config.peftType == "LORA" else {
            throw FormatError(configPath, "peft_type", "'\(config.peftType)' is not a LoRA adapter (only LORA is read here)")
        }
        try self.init(path: path, config: config)
    }

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path
        self.config = config
        let configPath = config.path
        let f = try AdapterFile(folder: path, suffixes: ["lora_A.weight", "lora_B.weight", "lora_magnitude_vector", "lora_magnitude_vector.weight"],
                                marker: ".lora_", unsupported: "unsupported LoRA tensor (bias or embedding LoRA is not supported yet)")
        let weights = f.path
        let a = f["lora_A.weight"], b = f["lora_B.weight"], mag = f["lora_magnitude_vector"].merging(f["lora_magnitude_vector.weight"]) { x, _ in x }
        let saved = f.saved
        var mods: [String: Module] = [:]
        for (name, at) in a {
            guard let bt = b[name] else { throw FormatError(weights, name, "has lora_A but no lora_B") }
            guard at.shape.count == 2, bt.shape.count == 2, at.shape[0] == bt.shape[1] else {
                throw FormatError(weights, name, "lora_A \(at.shape) and lora_B \(bt.shape) do not form a low-rank pair")
            }
            guard at.dtype.isFloatingPoint, bt.dtype.isFloatingPoint else { throw FormatError(weights, name, "LoRA tensors must be floating point") }
            let m = mag[name]
            if let m { guard m.shape == [bt.shape[0]], m.dtype.isFloatingPoint else { throw FormatError(weights, name, "lora_magnitude_vector \(m.shape) does not fit lora_B \(bt.shape)") } }
            if m != nil && config.fanInFanOut { throw FormatError(configPath, "fan_in_fan_out", "DoRA with fan_in_fan_out is not supported") }
            if config.useDoRA && m == nil { throw FormatError(weights, name, "use_dora is set but the module has no lora_magnitude_vector") }
            mods[name] = Module(name: name, a: at, b: bt, scaling: config.scaling(module: name), magnitude: m)
        }
        for name in mag.keys where a[name] == nil { throw FormatError(weights, name, "has lora_magnitude_vector but no lora_A") }
        for name in b.keys where a[name] == nil { throw FormatError(weights, name, "has lora_B but no lora_A") }
        guard !mods.isEmpty || !saved.isEmpty else { throw FormatError(weights, nil, "holds no LoRA or saved tensors") }
        modules = mods
        savedTensors = saved
    }

    /// ΔW = scaling · B·A as a row-major [out × in] matrix (transposed for fan_in_fan_out layers).
    public func delta(_ m: Module) -> FloatBuffer {
        let r = m.a.shape[0], inF = m.a.shape[1], outF = m.b.shape[0]
        let a = FloatBuffer(m.a), b = FloatBuffer(m.b)
        let out = FloatBuffer(count: outF * inF)
        Linalg.gemm(m: outF, n: inF, k: r, alpha: Float(m.scaling), a: b.values.baseAddress!, b: a.values.baseAddress!,
                    c: out.mutable.baseAddress!)
        if config.fanInFanOut {
            let t = FloatBuffer(count: outF * inF)
            let src = out.values, dst = t.mutable
            for i in 0..<outF { for j in 0..<inF { dst[j * outF + i] = src[i * inF + j] } }
            return t
        }
        return out
    }

    /// Which tensor of `checkpoint` each module updates (tensor name → module). Every module must find
    /// a weight of the shape its ΔW has; otherwise the error names the module and what the model has.
    public func targets(in checkpoint: Checkpoint) throws -> [String: Module] {
        var target: [String: Module] = [:]
        for n in checkpoint.names { if let m = module(forTensor: n) { target[n] = m } }
        let hit = Set(target.values.map(\.name))
        let known = checkpoint.names.filter { $0.hasSuffix(".weight") }.map { String($0.dropLast(7)) }
        for name in modules.keys.sorted() where !hit.contains(name) {
            throw LoRAError("\(path): module '\(name)' is not in \(checkpoint.path) (modules there include: \(known.prefix(8).joined(separator: ", "))…)")
        }
        for (n, m) in target.sorted(by: { $0.key < $1.key }) {
            let shape = checkpoint.info(n)!.shape
            let want = config.fanInFanOut ? [m.a.shape[1], m.b.shape[0]] : [m.b.shape[0], m.a.shape[1]]
            guard shape == want else {
                throw LoRAError("\(path): module '\(m.name)' gives a \(want) update but \(checkpoint.path) has '\(n)' of shape \(shape) (adapter for a different base?)")
            }
        }
        return target
    }

    /// The module's weight after the update: W + ΔW, or for DoRA m ⊙ (W + ΔW) / ‖W + ΔW‖ (row norms),
    /// as PEFT's merge_and_unload.
    public func updated(_ w: FloatBuffer, _ m: Module) -> FloatBuffer {
        let d = delta(m)
        let out = FloatBuffer(count: w.count)
        let (o, wv, dv) = (out.mutable, w.values, d.values)
        parallelFor(count: w.count) { r in for j in r { o[j] = wv[j] + dv[j] } }
        if let mt = m.magnitude {
            let mag = FloatBuffer(mt), rows = m.b.shape[0], cols = w.count / rows
            for r in 0..<rows {
                var ss: Float = 0
                for j in 0..<cols { ss += o[r * cols + j] * o[r * cols + j] }
                let f = mag[r] / ss.squareRoot()
                for j in 0..<cols { o[r * cols + j] *= f }
            }
        }
        return out
    }

    /// Finds the adapter module for a base tensor named `tensorName` (e.g. `encoder.layer.0.attention.self.query.weight`).
    /// PEFT module paths may carry the task model's prefix (`bert.`, `model.`) that a bare base checkpoint
    /// lacks, so a module matches when its path equals the tensor's module path or ends with "." + it.
    public func module(forTensor tensorName: String) -> Module? {
        guard tensorName.hasSuffix(".weight") else { return nil }
        let path = String(tensorName.dropLast(".weight".count))
        if let m = modules[path] { return m }
        return modules.first { $0.key.hasSuffix("." + path) }?.value
    }
}
