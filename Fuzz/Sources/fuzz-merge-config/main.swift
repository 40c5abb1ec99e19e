import Foundation
import FuzzDriver
import GraftMerging

// mergekit YAML: any bytes as a merge config, parsed and checked as `graft merge` does before it opens a
// model (YAML, keys, methods and their parameters, per-model and gradient values, model paths).
fuzz { bytes in
    _ = try? MergeConfig.parse(String(decoding: bytes, as: UTF8.self), configDirectory: scratch, source: "fuzz.yml")
}
