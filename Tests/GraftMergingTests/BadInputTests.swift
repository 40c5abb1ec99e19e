import Foundation
import GraftFormats
import GraftTensor
@testable import GraftMerging
import XCTest
import GraftTestSupport

/// Each kind of bad input is a clear error naming what is wrong, and leaves no output folder.
final class BadInputTests: XCTestCase {
    var tmp: String!
    var fixtures: String { referenceRoot + "/merge/models" }

    override func setUpWithError() throws { tmp = try temporaryDirectory(self) }

    /// Writes `yaml` and runs it; asserts it fails mentioning every string in `mentions`, with no output left.
    func assertMergeFails(_ yaml: String, mentions: [String], options: MergeOptions = MergeOptions(),
                          file: StaticString = #filePath, line: UInt = #line) {
        let cfg = tmp + "/config.yml", out = tmp + "/out"
        FileManager.default.createFile(atPath: cfg, contents: Data(yaml.utf8))
        XCTAssertThrowsError(try merge(config: cfg, workDir: tmp, out: out, options: options), file: file, line: line) { e in
            let msg = "\(e)"
            for m in mentions { XCTAssertTrue(msg.contains(m), "expected '\(m)' in: \(msg)", file: file, line: line) }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "output folder left behind", file: file, line: line)
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: tmp))?.filter { $0.contains("partial") } ?? []
        XCTAssertEqual(leftovers, [], "partial output left behind", file: file, line: line)
    }

    func ties(_ models: [String], base: String? = nil, extra: String = "", density: String = "0.5") -> String {
        "merge_method: ties\nbase_model: \(base ?? fixtures + "/base")\n\(extra)models:\n"
            + models.map { "- model: \($0)\n  parameters:\n    weight: 1.0\n    density: \(density)\n" }.joined()
    }

    /// A copy of the fixture base model with `edit` applied to its tensor list.
    func variant(_ name: String, _ edit: (inout [(String, Tensor)]) -> Void) throws -> String {
        var t = try tensors(of: fixtures + "/task1")
        edit(&t)
        let dir = tmp + "/" + name
        try writeModel(dir, t, configFrom: fixtures + "/task1")
        return dir
    }

    func testMissingModel() {
        assertMergeFails(ties([fixtures + "/task1", "no/such/model"]), mentions: ["no/such/model", "not found"])
    }

    func testTensorMissingFromOneModel() throws {
        let m = try variant("short") { $0.removeAll { $0.0 == "lm_head.weight" } }
        assertMergeFails(ties([fixtures + "/task1", m]), mentions: ["lm_head.weight", "missing from", m])
    }

    func testExtraTensorInOneModel() throws {
        let m = try variant("long") { $0.append(("extra.weight", Tensor(shape: [2], values: [1, 2]))) }
        assertMergeFails(ties([m]), mentions: ["extra.weight", "missing from"])
    }

    func testShapeMismatchNamesBothModelsAndShapes() throws {
        let m = try variant("wide") { t in
            let i = t.firstIndex { $0.0 == "model.norm.weight" }!
            t[i] = ("model.norm.weight", Tensor(shape: [65], values: [Float](repeating: 1, count: 65)))
        }
        assertMergeFails(ties([fixtures + "/task1", m]), mentions: ["model.norm.weight", "[64]", "[65]", m])
    }

    func testUnsupportedDType() throws {
        let dir = tmp + "/fp8"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let header = #"{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#
        let bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8) + [1, 2, 3, 4]
        FileManager.default.createFile(atPath: dir + "/model.safetensors", contents: Data(bytes))
        assertMergeFails(ties([dir]), mentions: ["F8_E4M3", "unsupported dtype", dir])
    }

    func testCorruptSafetensors() throws {
        let dir = tmp + "/corrupt"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let good = [UInt8](FileManager.default.contents(atPath: fixtures + "/task1/model.safetensors")!)
        FileManager.default.createFile(atPath: dir + "/model.safetensors", contents: Data(good.prefix(good.count / 2)))
        assertMergeFails(ties([dir]), mentions: [dir + "/model.safetensors", "outside"])
        var garbage = good
        for i in 8..<40 { garbage[i] = 0x7B }
        FileManager.default.createFile(atPath: dir + "/model.safetensors", contents: Data(garbage))
        assertMergeFails(ties([dir]), mentions: ["not valid JSON"])
    }

    func testUnknownMethodListsValidOnes() {
        assertMergeFails("merge_method: tiess\nmodels:\n- model: \(fixtures)/task1\n", mentions: ["tiess", "ties", "task_arithmetic", "slerp"])
    }

    func testUnknownParameterListsValidOnes() {
        assertMergeFails(ties([fixtures + "/task1"], extra: "parameters:\n  densty: 0.5\n"),
                         mentions: ["densty", "valid:", "density", "weight"])
    }

    func testMissingRequiredParameter() {
        assertMergeFails("merge_method: task_arithmetic\nbase_model: \(fixtures)/base\nmodels:\n- model: \(fixtures)/task1\n",
                         mentions: ["weight", "missing required"])
    }

    func testDensityOutsideUnitInterval() {
        assertMergeFails(ties([fixtures + "/task1"], density: "1.5"), mentions: ["density", "(0, 1]"])
        assertMergeFails(ties([fixtures + "/task1"], density: "0"), mentions: ["density", "(0, 1]"])
        // A gradient that leaves the interval on some layer is caught too.
        assertMergeFails(ties([fixtures + "/task1"], density: "[0.5, -0.2]"), mentions: ["density", "outside"])
    }

    func testNonFiniteInputsAreRefusedUnlessAllowed() throws {
        let m = try variant("nan") { t in
            let i = t.firstIndex { $0.0 == "model.layers.1.mlp.up_proj.weight" }!
            var v = t[i].1.floats(); v[17] = .nan
            t[i] = (t[i].0, Tensor(shape: t[i].1.shape, values: v))
        }
        assertMergeFails(ties([fixtures + "/task2", m]), mentions: ["non-finite", "model.layers.1.mlp.up_proj.weight", "--allow-nonfinite"])
        var o = MergeOptions()
        o.allowNonFinite = true
        let cfg = tmp + "/ok.yml"
        FileManager.default.createFile(atPath: cfg, contents: Data(ties([fixtures + "/task2", m]).utf8))
        XCTAssertNoThrow(try merge(config: cfg, workDir: tmp, out: tmp + "/allowed", options: o))
    }

    func testInvalidYAMLAndUnknownKeys() {
        assertMergeFails("merge_method: [ties\n", mentions: ["invalid YAML"])
        assertMergeFails("merge_method: ties\nmodel: x\n", mentions: ["unknown key", "model", "valid keys"])
        assertMergeFails("merge_method: slerp\nslices: []\n", mentions: ["slices"])
    }

    /// Hostile YAML (Tests/Fixtures/hostile): a mapping used as a key, found by fuzz-merge-config, stopped
    /// the process inside Yams; aliases expanding aliases (420 bytes, ten levels of ten) ran for minutes.
    /// Both are refused with a message, and so is a duplicated key.
    func testHostileYAMLIsRefused() throws {
        let hostile = projectRoot + "/Tests/Fixtures/hostile"
        let crash = try Data(contentsOf: URL(fileURLWithPath: hostile + "/mapping-as-key.yml"))
        // The fuzzer fed the bytes decoded as UTF-8 with replacement characters; graft refuses non-UTF-8 first.
        assertMergeFails(String(decoding: crash, as: UTF8.self), mentions: ["mapping key must be a plain value"])
        assertMergeFails(try String(contentsOfFile: hostile + "/billion-laughs.yml", encoding: .utf8), mentions: ["alias references"])
        assertMergeFails(try String(contentsOfFile: hostile + "/alias-bomb-syntax-error.yml", encoding: .utf8), mentions: ["alias references"])
        assertMergeFails("merge_method: ties\nmerge_method: linear\n", mentions: ["duplicated key"])
        assertMergeFails("merge_method: ties\nmodels: " + String(repeating: "[", count: 100_000) + "\n", mentions: ["invalid YAML", "nesting"])
    }

    func testSlerpTakesExactlyTwoModels() {
        assertMergeFails("merge_method: slerp\nbase_model: \(fixtures)/task1\nparameters:\n  t: 0.5\nmodels:\n- model: \(fixtures)/task2\n- model: \(fixtures)/task3\n",
                         mentions: ["at most 1"])
    }

    func testExistingOutputIsNotOverwrittenWithoutForce() throws {
        let out = tmp + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: out + "/keep", contents: Data())
        let cfg = tmp + "/c.yml"
        FileManager.default.createFile(atPath: cfg, contents: Data(ties([fixtures + "/task1"]).utf8))
        XCTAssertThrowsError(try merge(config: cfg, workDir: tmp, out: out)) { XCTAssertTrue("\($0)".contains("--force")) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/keep"))
        var o = MergeOptions()
        o.overwrite = true
        try merge(config: cfg, workDir: tmp, out: out, options: o)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/keep"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/model.safetensors"))
    }
}
