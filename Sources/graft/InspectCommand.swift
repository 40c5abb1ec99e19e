import ArgumentParser
import Foundation
import GraftFormats
import GraftTensor

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List a model's tensors: names, dtypes, shapes, parameter count, architecture.",
        discussion: """
        PATH is a .safetensors file or a model folder (model.safetensors, a sharded set with
        model.safetensors.index.json, or a PEFT adapter folder). The whole header is validated: a corrupt
        or truncated file is reported with the file and tensor at fault.

        Examples:
          graft inspect ~/models/minilm
          graft inspect --json model.safetensors | jq '.parameters'
        """)

    @Argument(help: "A .safetensors file or a model folder.")
    var path: String

    @Flag(help: "Print machine-readable JSON instead of a table.")
    var json = false

    @Option(help: "List at most this many tensors in the table (0 = all).")
    var limit: Int = 0

    func run() throws {
        var isDir: ObjCBool = false
        let adapterWeights = (path as NSString).appendingPathComponent("adapter_model.safetensors")
        let file = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
            && FileManager.default.fileExists(atPath: adapterWeights)
            && !FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("model.safetensors"))
            ? adapterWeights : path
        let ckpt = try Checkpoint(path: file)
        let infos = ckpt.names.compactMap { ckpt.info($0) }
        let params = infos.reduce(0) { $0 + $1.count }
        var byDType: [DType: Int] = [:]
        for i in infos { byDType[i.dtype, default: 0] += i.count }
        let config = try? Checkpoint(path: path).config()
        let arch = config?.architectures.first ?? config?.modelType
        if json {
            let obj = JSONValue.object([
                ("path", .string(path)),
                ("files", .array(ckpt.files.map { .string($0.path) })),
                ("architecture", arch.map { .string($0) } ?? .null),
                ("model_type", config?.modelType.map { .string($0) } ?? .null),
                ("parameters", .int(Int64(params))),
                ("bytes", .int(Int64(ckpt.dataBytes))),
                ("dtypes", .object(byDType.sorted { $0.key.rawValue < $1.key.rawValue }.map { ($0.key.rawValue, .int(Int64($0.value))) })),
                ("tensors", .array(infos.map { .object([
                    ("name", .string($0.name)), ("dtype", .string($0.dtype.rawValue)),
                    ("shape", .array($0.shape.map { .int(Int64($0)) })),
                ]) })),
            ])
            print(obj.serialized(pretty: true))
            return
        }
        let nameWidth = min(72, infos.map(\.name.count).max() ?? 4)
        let shown = limit > 0 ? Array(infos.prefix(limit)) : infos
        for i in shown {
            let name = i.name.padding(toLength: max(nameWidth, i.name.count), withPad: " ", startingAt: 0)
            print("\(name)  \(i.dtype.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0))  \(i.shape)")
        }
        if shown.count < infos.count { print("… \(infos.count - shown.count) more (use --limit 0)") }
        print("")
        print("tensors:      \(infos.count) in \(ckpt.files.count) file(s), \(formatBytes(ckpt.dataBytes))")
        print("parameters:   \(params) (\(String(format: "%.1f", Double(params) / 1e6)) M)")
        print("dtypes:       " + byDType.sorted { $0.value > $1.value }.map { "\($0.key.rawValue) \($0.value)" }.joined(separator: ", "))
        if let arch { print("architecture: \(arch)\(config?.numHiddenLayers.map { ", \($0) layers" } ?? "")") }
    }
}
