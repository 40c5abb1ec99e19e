import Foundation
import GraftFormats
import GraftTensor

/// An adapter folder's `adapter_model.safetensors`, sorted the way every method's reader needs it: the
/// per-module tensors by suffix (`ia3_l` → module path → tensor, the `base_model.model.` prefix removed),
/// tensors with exact names (VeRA's `base_model.vera_A`), and the rest as `modules_to_save` tensors under
/// their model names. A tensor carrying the method's marker (`.ia3_`) with no known suffix is an error.
struct AdapterFile {
    let path: String
    private(set) var modules: [String: [String: Tensor]] = [:]
    private(set) var exact: [String: Tensor] = [:]
    private(set) var saved: [(String, Tensor)] = []

    init(folder: String, suffixes: [String], marker: String, exactNames: [String] = [], unsupported: String) throws {
        path = (folder as NSString).appendingPathComponent("adapter_model.safetensors")
        guard FileManager.default.fileExists(atPath: path) else {
            throw FormatError(folder, nil, "missing adapter_model.safetensors (adapter_model.bin is not supported)")
        }
        let file = try SafetensorsFile(path: path)
        tensors: for info in file.tensors {
            if exactNames.contains(info.name) { exact[info.name] = try file.tensor(info.name); continue }
            var name = info.name
            if name.hasPrefix(LoRAAdapter.prefix) { name.removeFirst(LoRAAdapter.prefix.count) }
            for s in suffixes where name.hasSuffix("." + s) {
                modules[s, default: [:]][String(name.dropLast(s.count + 1))] = try file.tensor(info.name)
                continue tensors
            }
            if name.contains(marker) { throw FormatError(path, info.name, unsupported) }
            saved.append((name.replacingOccurrences(of: ".modules_to_save.default", with: ""), try file.tensor(info.name)))
        }
    }

    /// Module path → tensor for one suffix.
    subscript(suffix: String) -> [String: Tensor] { modules[suffix] ?? [:] }

    /// The modules that have `first` and `second`; either alone is an error naming the module.
    func pairs(_ first: String, _ second: String) throws -> [String: (Tensor, Tensor)] {
        let a = self[first], b = self[second]
        for m in b.keys where a[m] == nil { throw FormatError(path, m, "has \(second) but no \(first)") }
        var out: [String: (Tensor, Tensor)] = [:]
        for (m, t) in a {
            guard let u = b[m] else { throw FormatError(path, m, "has \(first) but no \(second)") }
            out[m] = (t, u)
        }
        return out
    }
}

extension ModuleTargets {
    /// `target_modules` as an adapter's config stores it: a list of names, or one regular expression.
    init(config: PEFTAdapterConfig) {
        if case let .string(re)? = config.json["target_modules"] { self.init(names: [], regex: re) }
        else { self.init(names: config.targetModules) }
    }
}

/// W + ΔW, as a fold into the weight tensor.
func adding(_ delta: FloatBuffer) -> TensorFold {
    { w in
        let out = FloatBuffer(count: w.count), o = out.mutable, wv = w.values, dv = delta.values
        parallelFor(count: w.count) { r in for i in r { o[i] = wv[i] + dv[i] } }
        return out
    }
}

/// Each row of m [rows × n] times the vector l [n], into a new buffer.
func scaledRows(_ m: FloatBuffer, rows: Int, by l: FloatBuffer) -> FloatBuffer {
    let n = l.count, out = FloatBuffer(count: rows * n), o = out.mutable, mv = m.values, lv = l.values
    for r in 0..<rows { for j in 0..<n { o[r * n + j] = mv[r * n + j] * lv[j] } }
    return out
}
