import Foundation

/// An HF PEFT `adapter_config.json` (the LoRA fields Graft reads).
public struct PEFTAdapterConfig: Sendable {
    public let path: String
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

    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(path, nil, "cannot read") }
        let json: JSONValue
        do { json = try JSONValue.parse([UInt8](data)) } catch { throw FormatError(path, nil, "invalid JSON: \(error)") }
        guard json.objectValue != nil else { throw FormatError(path, nil, "not a JSON object") }
        peftType = json["peft_type"]?.stringValue ?? "LORA"
        taskType = json["task_type"]?.stringValue
        guard let rv = json["r"]?.intValue, rv > 0 else { throw FormatError(path, "r", "missing or not a positive integer") }
        r = Int(rv)
        loraAlpha = json["lora_alpha"]?.doubleValue ?? Double(rv)
        useRSLoRA = json["use_rslora"]?.boolValue ?? false
        useDoRA = json["use_dora"]?.boolValue ?? false
        fanInFanOut = json["fan_in_fan_out"]?.boolValue ?? false
        switch json["target_modules"] {
        case let .array(a)?: targetModules = a.compactMap(\.stringValue)
        case let .string(s)?: targetModules = [s]
        default: targetModules = []
        }
        modulesToSave = json["modules_to_save"]?.arrayValue?.compactMap(\.stringValue) ?? []
        var rp: [String: Int] = [:]
        for (k, v) in json["rank_pattern"]?.objectValue ?? [] { if let i = v.intValue { rp[k] = Int(i) } }
        rankPattern = rp
        var ap: [String: Double] = [:]
        for (k, v) in json["alpha_pattern"]?.objectValue ?? [] { if let d = v.doubleValue { ap[k] = d } }
        alphaPattern = ap
        baseModelNameOrPath = json["base_model_name_or_path"]?.stringValue
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
