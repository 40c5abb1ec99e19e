import Foundation
import GraftTensor

/// A model's weights on disk: one safetensors file, or an HF folder holding `model.safetensors`,
/// a sharded set with `model.safetensors.index.json`, or other `*.safetensors` files.
public final class Checkpoint: @unchecked Sendable {
    /// The path the user gave.
    public let path: String
    /// The folder (for config.json, tokenizer files), nil when a bare file was given.
    public let directory: String?
    public let files: [SafetensorsFile]
    /// Tensor names in file order.
    public let names: [String]
    private let location: [String: Int]

    public init(path: String) throws {
        self.path = path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw FormatError(path, nil, "no such file or directory")
        }
        var paths: [String] = []
        if isDir.boolValue {
            directory = path
            let indexPath = (path as NSString).appendingPathComponent("model.safetensors.index.json")
            let single = (path as NSString).appendingPathComponent("model.safetensors")
            if FileManager.default.fileExists(atPath: indexPath) {
                paths = try Self.shards(fromIndex: indexPath, folder: path)
            } else if FileManager.default.fileExists(atPath: single) {
                paths = [single]
            } else {
                let all = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                paths = all.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix("adapter_") }.sorted()
                    .map { (path as NSString).appendingPathComponent($0) }
                guard !paths.isEmpty else {
                    throw FormatError(path, nil, "folder holds no model.safetensors, model.safetensors.index.json or *.safetensors file")
                }
            }
        } else {
            directory = nil
            paths = [path]
        }
        files = try paths.map { try SafetensorsFile(path: $0) }
        var loc: [String: Int] = [:]
        var order: [String] = []
        for (i, f) in files.enumerated() {
            for t in f.tensors {
                if let j = loc[t.name] {
                    throw FormatError(f.path, t.name, "tensor also present in \(files[j].path)")
                }
                loc[t.name] = i
                order.append(t.name)
            }
        }
        location = loc
        names = order
    }

    private static func shards(fromIndex indexPath: String, folder: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: indexPath) else {
            throw FormatError(indexPath, nil, "cannot read")
        }
        let json: JSONValue
        do { json = try JSONValue.parse([UInt8](data)) } catch { throw FormatError(indexPath, nil, "invalid JSON: \(error)") }
        guard let map = json["weight_map"]?.objectValue else { throw FormatError(indexPath, "weight_map", "missing or not an object") }
        var seen = Set<String>()
        var out: [String] = []
        for (name, v) in map {
            guard let f = v.stringValue, !f.contains("/"), f.hasSuffix(".safetensors") else {
                throw FormatError(indexPath, "weight_map.\(name)", "must name a .safetensors file in the same folder")
            }
            if seen.insert(f).inserted { out.append((folder as NSString).appendingPathComponent(f)) }
        }
        return out.sorted()
    }

    public func info(_ name: String) -> TensorInfo? { location[name].flatMap { files[$0].info(name) } }

    public func file(of name: String) -> SafetensorsFile? { location[name].map { files[$0] } }

    public func tensor(_ name: String) throws -> Tensor {
        guard let f = file(of: name) else { throw FormatError(path, name, "no such tensor") }
        return try f.tensor(name)
    }

    public func releasePages(_ name: String) { file(of: name)?.releasePages(name) }

    /// Total bytes of tensor data.
    public var dataBytes: Int { files.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.byteRange.count } } }

    /// The folder's `config.json`, if any.
    public func config() throws -> HFConfig? {
        guard let d = directory else { return nil }
        let p = (d as NSString).appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: p) else { return nil }
        return try HFConfig(path: p)
    }
}
