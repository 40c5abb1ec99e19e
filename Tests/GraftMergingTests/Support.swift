import Foundation
import GraftFormats
import GraftTensor
@testable import GraftMerging
import GraftTestSupport
import XCTest

/// Runs `body` with the working directory set to `dir` (mergekit configs resolve paths from there).
func inDirectory<T>(_ dir: String, _ body: () throws -> T) rethrows -> T {
    let old = FileManager.default.currentDirectoryPath
    FileManager.default.changeCurrentDirectoryPath(dir)
    defer { FileManager.default.changeCurrentDirectoryPath(old) }
    return try body()
}

/// Runs a merge config (paths relative to `workDir`) into `out`.
@discardableResult
func merge(config: String, workDir: String, out: String, options: MergeOptions = MergeOptions()) throws -> MergeSummary {
    try inDirectory(workDir) {
        let cfg = try MergeConfig.load(path: config)
        return try MergeExecutor.run(try MergePlan(config: cfg), to: out, options: options)
    }
}

/// Max |a − b| over every tensor, failing on differing names or shapes.
func maxAbsDiff(_ a: Checkpoint, _ b: Checkpoint, file: StaticString = #filePath, line: UInt = #line) throws -> (Float, String) {
    XCTAssertEqual(Set(a.names), Set(b.names), "tensor names differ", file: file, line: line)
    var worst: (Float, String) = (0, "")
    for n in b.names where a.info(n) != nil {
        let x = try a.tensor(n), y = try b.tensor(n)
        XCTAssertEqual(x.shape, y.shape, n, file: file, line: line)
        let xv = x.floats(), yv = y.floats()
        for i in xv.indices {
            let d = abs(xv[i] - yv[i])
            if !(d <= worst.0) { worst = (d, n) }
        }
    }
    return worst
}

/// Writes a model folder (model.safetensors + config.json copied from `configFrom`).
func writeModel(_ dir: String, _ tensors: [(String, Tensor)], configFrom: String? = nil) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try ShardedSafetensorsWriter.writeFile(dir + "/model.safetensors", tensors)
    if let c = configFrom { try FileManager.default.copyItem(atPath: c + "/config.json", toPath: dir + "/config.json") }
}

/// All tensors of a checkpoint, in order.
func tensors(of path: String) throws -> [(String, Tensor)] {
    let c = try Checkpoint(path: path)
    return try c.names.map { ($0, try c.tensor($0)) }
}
