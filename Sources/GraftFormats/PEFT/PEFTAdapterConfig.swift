import Foundation

/// An HF PEFT `adapter_config.json`: the fields every method has, LoRA's, and the whole object for the
/// keys of other methods (`json`).
public struct PEFTAdapterConfig: Sendable {
    public let path: String
    public let json: JSONValue
    public let peftType: String
    public let taskType: String?
    public let r: Int
    public let loraAlpha: Double
    public let useRSLoRA: Bool
    public let useDoRA: Bool
    public let fanInFanOut: Bool
    public let targetModules: [String]
    public let modulesToSave: [String]
    public let rankPattern: [String: Int]
    public let alphaPattern: [String: Double]
    public let baseModelNameOrPath: String?

    /// The config of an adapter folder in another format (AdapterHub's bottleneck adapters): its JSON,
    /// and `peftType` the name Graft gives the method; no LoRA fields.
    public init(path: String, json: JSONValue, peftType: String) {
        self.path = path; self.json = json; self.peftType = peftType
        taskType = nil; r = 0; loraAlpha = 0; useRSLoRA = false; useDoRA = false; fanInFanOut = false
        targetModules = []; modulesToSave = []; rankPattern = [:]; alphaPattern = [:]
        baseModelNameOrPath = json["model_name"]?.stringValue
    }

    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(path, nil, "cannot read") }
        let json: JSONValue
        do { json = try JSONValue.parse([UInt8](data)) } catch { throw FormatError(path, nil, "invalid JSON: \(error)") }
        guard json.objectValue != nil else { throw FormatError(path, nil, "not a JSON object") }
        self.json = json
        peftType = json["peft_type"]?.stringValue ?? "LORA"
        taskType = json["task_type"]?.stringValue
        // r is LoRA's and its variants' (0 when a method has none; the methods that need it check it).
        let rv = json["r"]?.intValue ?? 0
        guard rv > 0 || (peftType != "LORA" && json["r"] == nil) else { throw FormatError(path, "r", "missing or not a positive integer") }
        r = Int(rv)
        loraAlpha = json["lora_alpha"]?.doubleValue ?? Double(rv)
        useRSLoRA = json["use_rslora"]?.boolValue ?? false
        useDoRA = json["use_dora"]?.boolValue ?? false
        fanInFanOut = json["fan_in_fan_out"]?.boolValue ?? false
        targetModules = Self.modules(json["target_modules"])
        modulesToSave = json["modules_to_save"]?.arrayValue?.compactMap(\.stringValue) ?? []
        var rp: [String: Int] = [:]
        for (k, v) in json["rank_pattern"]?.objectValue ?? [] { if let i = v.intValue { rp[k] = Int(i) } }
        rankPattern = rp
        var ap: [String: Double] = [:]
        for (k, v) in json["alpha_pattern"]?.objectValue ?? [] { if let d = v.doubleValue { ap[k] = d } }
        alphaPattern = ap
        baseModelNameOrPath = json["base_model_name_or_path"]?.stringValue
    }

    /// A list of module names as PEFT stores it: an array, or one string (a regular expression).
    public static func modules(_ v: JSONValue?) -> [String] {
        switch v {
        case let .array(a)?: a.compactMap(\.stringValue)
        case let .string(s)?: [s]
        default: []
        }
    }

    /// PEFT's scaling for `module`: α/r, or α/√r with rsLoRA; rank_pattern / alpha_pattern keys match
    /// the module name exactly or as a dotted suffix.
    public func scaling(module: String) -> Double {
        func pattern<T>(_ p: [String: T]) -> T? {
            p.first { module == $0.key || module.hasSuffix("." + $0.key) }?.value
        }
        let rank = Double(pattern(rankPattern) ?? r)
        let alpha = pattern(alphaPattern) ?? loraAlpha
        return useRSLoRA ? alpha / rank.squareRoot() : alpha / rank
    }
}
