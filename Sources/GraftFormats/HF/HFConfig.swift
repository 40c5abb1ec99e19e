import Foundation
import GraftTensor

/// An HF `config.json`, kept as an ordered JSON object so it can be written back unchanged but for
/// the fields Graft updates.
public struct HFConfig: Sendable {
    public var json: JSONValue

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(path, nil, "cannot read") }
        do { json = try JSONValue.parse([UInt8](data)) } catch { throw FormatError(path, nil, "invalid JSON: \(error)") }
        guard json.objectValue != nil else { throw FormatError(path, nil, "not a JSON object") }
    }

    public init(json: JSONValue) { self.json = json }

    public var architectures: [String] { json["architectures"]?.arrayValue?.compactMap(\.stringValue) ?? [] }
    public var modelType: String? { json["model_type"]?.stringValue }
    public var numHiddenLayers: Int? { json["num_hidden_layers"]?.intValue.map(Int.init) }
    public var dtype: String? { json["torch_dtype"]?.stringValue ?? json["dtype"]?.stringValue }

    /// Sets the dtype field(s): `torch_dtype` (transformers ≤ 4) and `dtype` (transformers 5) where present,
    /// `torch_dtype` when neither is.
    public mutating func setDType(_ d: DType) {
        guard var o = json.objectValue else { return }
        var found = false
        for i in o.indices where o[i].0 == "torch_dtype" || o[i].0 == "dtype" {
            o[i].1 = .string(d.torchName); found = true
        }
        if !found { o.append(("torch_dtype", .string(d.torchName))) }
        json = .object(o)
    }

    public func write(to path: String) throws {
        try FileBytes.write(Data((json.serialized(pretty: true) + "\n").utf8), to: path)
    }
}
