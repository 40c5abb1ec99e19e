import Foundation
import GraftFormats
import GraftTensor

/// A model reference: a folder or safetensors file, optionally with an HF PEFT LoRA adapter applied
/// first (mergekit's `model+adapter` syntax).
public struct ModelReference: Sendable, Hashable, CustomStringConvertible {
    /// As written in the config (used in messages and the model card).
    public let name: String
    /// Resolved path of the model.
    public let path: String
    /// Resolved path of the LoRA adapter folder, if any.
    public let adapter: String?

    public var description: String { name }
}

/// One entry of `models:`.
public struct ModelEntry: Sendable {
    public let model: ModelReference
    public let parameters: [String: ParameterSetting]
}

/// A mergekit YAML merge configuration (the `models:` form; `slices:` is not supported yet).
public struct MergeConfig: Sendable {
    public var mergeMethod: String
    public var baseModel: ModelReference?
    public var models: [ModelEntry]
    public var parameters: [String: ParameterSetting]
    /// Compute/storage dtype named by `dtype`; output dtype `out_dtype` (defaults to `dtype`, then to the base's).
    public var dtype: DType?
    public var outDtype: DType?
    /// `tokenizer_source` / `tokenizer.source`: "base", "union" (unsupported), or a model path. nil: base.
    public var tokenizerSource: String?
    /// The YAML text as given, for the model card.
    public var text: String

    public static let knownKeys: Set<String> = [
        "merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
        "tokenizer_source", "tokenizer", "chat_template", "name",
    ]

    /// Reads and validates a config file. Relative model paths resolve against the working directory,
    /// then against the config file's folder (as mergekit does).
    public static func load(path: String) throws -> MergeConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MergeError.config("\(path): cannot read the config file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw MergeError.config("\(path): not UTF-8 text") }
        return try parse(text, configDirectory: (path as NSString).deletingLastPathComponent, source: path)
    }

    public static func parse(_ text: String, configDirectory: String, source: String = "config") throws -> MergeConfig {
        let any: Any?
        do { any = try YAMLValues.load(text, source: source) } catch let e as FormatError {
            throw MergeError.config(e.description)
        }
        guard let root = any as? [String: Any] else { throw MergeError.config("\(source): the top level must be a mapping") }
        if root["slices"] != nil {
            throw MergeError.config("\(source): `slices:` configs are not supported yet; list the models under `models:`")
        }
        let unknown = Set(root.keys).subtracting(knownKeys)
        guard unknown.isEmpty else {
            throw MergeError.config("\(source): unknown key(s) \(unknown.sorted().joined(separator: ", ")); valid keys: \(knownKeys.sorted().joined(separator: ", "))")
        }
        guard let method = root["merge_method"] as? String else { throw MergeError.config("\(source): missing `merge_method`") }
        let resolve = { (s: String, field: String) throws -> ModelReference in
            try resolveModel(s, field: field, configDirectory: configDirectory)
        }
        var base: ModelReference? = nil
        if let b = root["base_model"] {
            guard let s = b as? String else { throw MergeError.config("base_model: must be a path") }
            base = try resolve(s, "base_model")
        }
        var models: [ModelEntry] = []
        if let list = root["models"] {
            guard let list = list as? [Any] else { throw MergeError.config("models: must be a list") }
            for (i, item) in list.enumerated() {
                guard let d = item as? [String: Any] else { throw MergeError.config("models[\(i)]: must be a mapping with `model:`") }
                let extra = Set(d.keys).subtracting(["model", "parameters"])
                guard extra.isEmpty else { throw MergeError.config("models[\(i)]: unknown key(s) \(extra.sorted()) (expected model, parameters)") }
                guard let m = d["model"] as? String else { throw MergeError.config("models[\(i)]: missing `model:` path") }
                let ref = try resolve(m, "models[\(i)].model")
                models.append(ModelEntry(model: ref, parameters: try parseParameters(d["parameters"], path: "models[\(i)].parameters")))
            }
        }
        guard !models.isEmpty else { throw MergeError.config("\(source): `models:` lists no models") }
        func dtypeField(_ k: String) throws -> DType? {
            guard let v = root[k] else { return nil }
            guard let s = v as? String, let d = DType(userName: s), d != .f64 else {
                throw MergeError.config("\(k): unsupported dtype '\(v)' (use float32, float16 or bfloat16)")
            }
            return d
        }
        var tokenizerSource = root["tokenizer_source"] as? String
        if let t = root["tokenizer"] as? [String: Any], let s = t["source"] as? String { tokenizerSource = s }
        return MergeConfig(mergeMethod: method, baseModel: base, models: models,
                           parameters: try parseParameters(root["parameters"], path: "parameters"),
                           dtype: try dtypeField("dtype"), outDtype: try dtypeField("out_dtype"),
                           tokenizerSource: tokenizerSource, text: text)
    }

    static func parseParameters(_ any: Any?, path: String) throws -> [String: ParameterSetting] {
        guard let any else { return [:] }
        guard let d = any as? [String: Any] else { throw MergeError.config("\(path): must be a mapping of name: value") }
        var out: [String: ParameterSetting] = [:]
        for (k, v) in d { out[k] = try ParameterSetting.parse(v, path: "\(path).\(k)") }
        return out
    }

    /// `path` or `path+adapter`, each resolved against the working directory first, then the config's folder.
    public static func resolveModel(_ s: String, field: String, configDirectory: String) throws -> ModelReference {
        let fm = FileManager.default
        func locate(_ p: String) -> String? {
            let expanded = (p as NSString).expandingTildeInPath
            if expanded.hasPrefix("/") { return fm.fileExists(atPath: expanded) ? expanded : nil }
            let cwd = fm.currentDirectoryPath
            for dir in [cwd, configDirectory.isEmpty ? cwd : configDirectory] {
                let full = URL(fileURLWithPath: dir).appendingPathComponent(expanded).standardizedFileURL.path
                if fm.fileExists(atPath: full) { return full }
            }
            return nil
        }
        if let p = locate(s) { return ModelReference(name: s, path: p, adapter: nil) }
        if let plus = s.lastIndex(of: "+") {
            let m = String(s[..<plus]), a = String(s[s.index(after: plus)...])
            if let mp = locate(m) {
                guard let ap = locate(a) else { throw MergeError.input("\(field): adapter '\(a)' not found (looked in the working directory and next to the config)") }
                return ModelReference(name: s, path: mp, adapter: ap)
            }
        }
        throw MergeError.input("\(field): model '\(s)' not found (looked in the working directory and next to the config)")
    }
}
