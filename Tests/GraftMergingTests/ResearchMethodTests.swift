import Foundation
import GraftFormats
@testable import GraftMerging
import XCTest
import GraftTestSupport

/// PCB, TSV-M and OPCM against the authors' / FusionBench's code on the tiny Llama fixtures.
/// References: Tests/Fixtures/reference/research/expected/*/SOURCE.md, made by
/// scripts/reference/make-research-references.py (PCB: github.com/duguodong7/pcb-merging `PCB_merge`;
/// TSV-M: FusionBench 0.2.33 `compute_and_sum_svd_mem_reduction`; OPCM: FusionBench 0.2.33 `opcm.py`).
final class ResearchMethodTests: XCTestCase {
    /// The research references, from GRAFT_REFERENCE_DIR when it has them, else the committed copy.
    var root: String {
        FileManager.default.fileExists(atPath: referenceRoot + "/research") ? referenceRoot + "/research" : committedReferenceRoot + "/research"
    }

    /// PCB is elementwise: float32 agreement to 1e-6.
    func testPCBMatchesAuthorsCode() throws {
        let tmp = try temporaryDirectory(self)
        try merge(config: "configs/pcb.yml", workDir: root, out: tmp + "/pcb")
        let (d, n) = try maxAbsDiff(try Checkpoint(path: tmp + "/pcb"), try Checkpoint(path: root + "/expected/pcb"))
        XCTAssertLessThanOrEqual(d, 1e-6, "max |diff| \(d) at \(n)")
    }

    /// TSV-M goes through three float32 SVDs per matrix (LAPACK here, PyTorch's there): values of
    /// magnitude ≈ 0.5 agree to 5e-5 (measured 8e-6).
    func testTSVMatchesFusionBench() throws {
        let tmp = try temporaryDirectory(self)
        try merge(config: "configs/tsv.yml", workDir: root, out: tmp + "/tsv")
        let (d, n) = try maxAbsDiff(try Checkpoint(path: tmp + "/tsv"), try Checkpoint(path: root + "/expected/tsv"))
        XCTAssertLessThanOrEqual(d, 5e-5, "max |diff| \(d) at \(n)")
    }

    /// OPCM: one float32 SVD per linear weight per step; agreement to 5e-5 (measured 5e-6).
    func testContinualMergeMatchesFusionBench() throws {
        let tmp = try temporaryDirectory(self)
        try inDirectory(root) {
            let plan = try ContinualMerge.Plan(config: try MergeConfig.load(path: "configs/opcm.yml"))
            _ = try ContinualMerge.run(plan, to: tmp + "/opcm", statePath: nil)
        }
        let (d, n) = try maxAbsDiff(try Checkpoint(path: tmp + "/opcm"), try Checkpoint(path: root + "/expected/opcm"))
        XCTAssertLessThanOrEqual(d, 5e-5, "max |diff| \(d) at \(n)")
    }

    /// Adding models one run at a time through a kept state equals merging them in one run.
    func testContinualStateAddsModelsIncrementally() throws {
        let tmp = try temporaryDirectory(self)
        let full = try String(contentsOfFile: root + "/configs/opcm.yml", encoding: .utf8)
        let firstTwo = full.replacingOccurrences(of: "- model: ../merge/models/task3\n", with: "")
        XCTAssertNotEqual(full, firstTwo)
        try inDirectory(root) {
            let two = try ContinualMerge.Plan(config: try MergeConfig.parse(firstTwo, configDirectory: root))
            _ = try ContinualMerge.run(two, to: tmp + "/two", statePath: tmp + "/state")
            let state = try String(contentsOfFile: tmp + "/state/continual_state.json", encoding: .utf8)
            XCTAssertTrue(state.contains("task2") && !state.contains("task3"))
            let three = try ContinualMerge.Plan(config: try MergeConfig.load(path: "configs/opcm.yml"))
            _ = try ContinualMerge.run(three, to: tmp + "/three", statePath: tmp + "/state")
        }
        let (d, _) = try maxAbsDiff(try Checkpoint(path: tmp + "/three"), try Checkpoint(path: root + "/expected/opcm"))
        XCTAssertLessThanOrEqual(d, 5e-5)
        // A state built on other models is refused.
        try inDirectory(root) {
            let other = full.replacingOccurrences(of: "- model: ../merge/models/task1\n", with: "")
            let plan = try ContinualMerge.Plan(config: try MergeConfig.parse(other, configDirectory: root))
            XCTAssertThrowsError(try ContinualMerge.run(plan, to: tmp + "/bad", statePath: tmp + "/state")) {
                XCTAssertTrue("\($0)".contains("must start with these"), "\($0)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/bad"))
    }

    /// OPCM's `lambda` scales the merged update in the written model: θ(λ) − θ₀ = λ·(θ(1) − θ₀).
    func testContinualLambdaScalesTheMergedUpdate() throws {
        let tmp = try temporaryDirectory(self)
        let full = try String(contentsOfFile: root + "/configs/opcm.yml", encoding: .utf8)
        let scaled = full.replacingOccurrences(of: "  alpha: 0.5\n", with: "  alpha: 0.5\n  lambda: 2.5\n")
        XCTAssertNotEqual(full, scaled)
        try inDirectory(root) {
            _ = try ContinualMerge.run(try ContinualMerge.Plan(config: try MergeConfig.load(path: "configs/opcm.yml")), to: tmp + "/one", statePath: nil)
            _ = try ContinualMerge.run(try ContinualMerge.Plan(config: try MergeConfig.parse(scaled, configDirectory: root)), to: tmp + "/scaled", statePath: nil)
        }
        let base = try Checkpoint(path: root + "/../merge/models/base"), one = try Checkpoint(path: tmp + "/one"), two = try Checkpoint(path: tmp + "/scaled")
        var worst: Float = 0
        for n in base.names {
            let b = try base.tensor(n).floats(), x = try one.tensor(n).floats(), y = try two.tensor(n).floats()
            for i in b.indices { worst = max(worst, abs((y[i] - b[i]) - 2.5 * (x[i] - b[i]))) }
        }
        XCTAssertLessThanOrEqual(worst, 1e-5)
        XCTAssertTrue(try String(contentsOfFile: tmp + "/scaled/graft_merge_config.yml", encoding: .utf8).contains("lambda: 2.5"))
    }
}
