import Foundation
import GraftFormats
@testable import GraftMerging
import XCTest
import GraftTestSupport

/// `graft merge` on every mergekit config of the reference set equals mergekit's output:
/// max |diff| ≤ 1e-6 for float32 tensors; DARE (random) methods by statistics, since RNGs differ.
final class MergekitParityTests: XCTestCase {
    func testEveryConfigMatchesMergekit() throws {
        let root = referenceRoot + "/merge"
        let configs = try FileManager.default.contentsOfDirectory(atPath: root + "/configs").filter { $0.hasSuffix(".yml") }.sorted()
        XCTAssertGreaterThanOrEqual(configs.count, 5, "reference set at \(root) holds too few configs")
        let tmp = try temporaryDirectory(self)
        for c in configs {
            let name = String(c.dropLast(4))
            let out = tmp + "/" + name
            try merge(config: "configs/\(c)", workDir: root, out: out)
            let mine = try Checkpoint(path: out), theirs = try Checkpoint(path: root + "/expected/" + name)
            if name.hasPrefix("dare") {
                try assertSameDAREStatistics(mine, theirs, base: try Checkpoint(path: root + "/models/base"), name: name)
            } else {
                let (d, where_) = try maxAbsDiff(mine, theirs)
                XCTAssertLessThanOrEqual(d, 1e-6, "\(name): max |diff| \(d) at \(where_)")
            }
            // config.json carries the dtype the config asked for.
            let cfg = try HFConfig(path: out + "/config.json")
            XCTAssertEqual(cfg.dtype, "float32", name)
        }
    }

    /// DARE draws random masks: compare the kept fraction and the L1 norm of each merged update.
    func assertSameDAREStatistics(_ mine: Checkpoint, _ theirs: Checkpoint, base: Checkpoint, name: String) throws {
        var checked = 0
        for n in theirs.names {
            let b = try base.tensor(n).floats()
            guard b.count >= 4096 else { continue }
            let x = try mine.tensor(n).floats(), y = try theirs.tensor(n).floats()
            let dx = zip(x, b).map { $0 - $1 }, dy = zip(y, b).map { $0 - $1 }
            let fx = Double(dx.filter { $0 != 0 }.count) / Double(b.count)
            let fy = Double(dy.filter { $0 != 0 }.count) / Double(b.count)
            XCTAssertEqual(fx, fy, accuracy: 0.03, "\(name) \(n): fraction of entries changed")
            let l1x = dx.reduce(0.0) { $0 + Double(abs($1)) }, l1y = dy.reduce(0.0) { $0 + Double(abs($1)) }
            XCTAssertEqual(l1x / l1y, 1, accuracy: 0.05, "\(name) \(n): L1 norm of the merged update")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 5)
    }

    func testDAREIsDeterministicForASeed() throws {
        let root = referenceRoot + "/merge"
        let tmp = try temporaryDirectory(self)
        var o = MergeOptions()
        o.seed = 42
        try merge(config: "configs/dare_ties.yml", workDir: root, out: tmp + "/a", options: o)
        try merge(config: "configs/dare_ties.yml", workDir: root, out: tmp + "/b", options: o)
        o.seed = 43
        try merge(config: "configs/dare_ties.yml", workDir: root, out: tmp + "/c", options: o)
        XCTAssertEqual(try maxAbsDiff(try Checkpoint(path: tmp + "/a"), try Checkpoint(path: tmp + "/b")).0, 0)
        XCTAssertGreaterThan(try maxAbsDiff(try Checkpoint(path: tmp + "/a"), try Checkpoint(path: tmp + "/c")).0, 0)
    }

    func testShardedOutputEqualsSingleFile() throws {
        let root = referenceRoot + "/merge"
        let tmp = try temporaryDirectory(self)
        var o = MergeOptions()
        o.maxShardBytes = 100_000
        try merge(config: "configs/ties.yml", workDir: root, out: tmp + "/sharded", options: o)
        let files = try FileManager.default.contentsOfDirectory(atPath: tmp + "/sharded")
        XCTAssertTrue(files.contains("model.safetensors.index.json"))
        XCTAssertGreaterThan(files.filter { $0.hasPrefix("model-0") }.count, 2)
        let (d, _) = try maxAbsDiff(try Checkpoint(path: tmp + "/sharded"), try Checkpoint(path: root + "/expected/ties"))
        XCTAssertLessThanOrEqual(d, 1e-6)
        XCTAssertTrue(files.contains("README.md") && files.contains("config.json"))
    }

    func testOutputDTypeConversion() throws {
        let root = referenceRoot + "/merge"
        let tmp = try temporaryDirectory(self)
        try String(contentsOfFile: root + "/configs/task_arithmetic.yml", encoding: .utf8)
            .replacingOccurrences(of: "dtype: float32", with: "dtype: float32\nout_dtype: bfloat16")
            .write(toFile: tmp + "/ta.yml", atomically: true, encoding: .utf8)
        try merge(config: tmp + "/ta.yml", workDir: root, out: tmp + "/bf16")
        let c = try Checkpoint(path: tmp + "/bf16")
        XCTAssertTrue(c.names.allSatisfy { c.info($0)?.dtype == .bf16 })
        XCTAssertEqual(try HFConfig(path: tmp + "/bf16/config.json").dtype, "bfloat16")
        let exact = try Checkpoint(path: root + "/expected/task_arithmetic")
        let (d, _) = try maxAbsDiff(c, exact)
        XCTAssertLessThan(d, 0.01)  // bf16 keeps 8 bits of mantissa
    }
}
