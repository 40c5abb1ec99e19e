import Foundation
import FuzzDriver
import GraftAdapters
import GraftFormats

// adapter_config.json: any bytes as the config of an adapter folder (with an empty weights file), opened
// as Graft opens adapters — every method's reader gets its config fields.
let weights: [UInt8] = Array("{}".utf8)
fuzz { bytes in
    let dir = scratch + "/adapter"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    _ = file(named: "adapter/adapter_config.json", bytes)
    var header = [UInt8](repeating: 0, count: 8)
    header[0] = UInt8(weights.count)
    FileManager.default.createFile(atPath: dir + "/adapter_model.safetensors", contents: Data(header + weights))
    _ = try? AdapterMethods.open(dir)
}
