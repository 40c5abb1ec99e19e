import Foundation
import GraftFormats
@testable import GraftMerging
import XCTest
import GraftTestSupport

/// `graft fuse` equals PEFT's merge_and_unload of peft-minilm-seqcls on all-MiniLM-L6-v2 (to 1e-6).
final class FuseTests: XCTestCase {
    var minilm: String { graftHome + "/models/minilm" }

    func requireMiniLM() throws {
        guard FileManager.default.fileExists(atPath: minilm + "/model.safetensors") else {
            XCTFail("all-MiniLM-L6-v2 is not in \(minilm): run scripts/fetch-models (make test does)")
            throw XCTSkip("model missing")
        }
    }

    func testFuseMatchesPEFTMergeAndUnload() throws {
        try requireMiniLM()
        let tmp = try temporaryDirectory(self)
        let s = try Fuse.run(model: minilm, adapter: referenceRoot + "/models/peft-minilm-seqcls", to: tmp + "/fused")
        XCTAssertEqual(s.fusedModules, 12)
        XCTAssertEqual(s.savedTensors, 2)
        let mine = try Checkpoint(path: tmp + "/fused")
        let ref = try Checkpoint(path: referenceRoot + "/models/fuse-minilm/fused_subset.safetensors")
        var worst: Float = 0
        // The committed reference keeps the leading rows of each fused matrix (every module, every rank
        // component; the file stays under 1 MB); the shared fixture has them whole. Either compares as a prefix.
        for n in ref.names {
            guard let info = mine.info(n), let refInfo = ref.info(n) else { XCTFail("fused model lacks \(n)"); continue }
            XCTAssertEqual(Array(info.shape.dropFirst()), Array(refInfo.shape.dropFirst()), n)
            XCTAssertLessThanOrEqual(refInfo.shape.first ?? 0, info.shape.first ?? 0, n)
            let a = try mine.tensor(n).floats(), b = try ref.tensor(n).floats()
            for i in b.indices { worst = max(worst, abs(a[i] - b[i])) }
        }
        XCTAssertEqual(ref.names.count, 14, "12 fused modules and the classifier's weight and bias")
        XCTAssertLessThanOrEqual(worst, 1e-6)
        // Untargeted weights are copied unchanged, under the task model's prefix.
        let base = try Checkpoint(path: minilm)
        XCTAssertEqual(try mine.tensor("bert.encoder.layer.0.attention.self.key.weight").floats(),
                       try base.tensor("encoder.layer.0.attention.self.key.weight").floats())
        XCTAssertEqual(mine.names.count, base.names.count + 2)
        let cfg = try HFConfig(path: tmp + "/fused/config.json")
        XCTAssertEqual(cfg.architectures, ["BertForSequenceClassification"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: tmp + "/fused/tokenizer.json"))
    }

    /// (IA)³ folds as PEFT's merge: key and value rows (and their biases) scaled, both output.dense
    /// layers' columns scaled with their biases unchanged (fixture fuse-minilm-ia3, from PEFT 0.21's
    /// merge_and_unload of grad-minilm-ia3).
    func testIA3FuseMatchesPEFTMergeAndUnload() throws {
        try requireMiniLM()
        let tmp = try temporaryDirectory(self)
        let s = try Fuse.run(model: minilm, adapter: referenceRoot + "/models/grad-minilm-ia3", to: tmp + "/fused")
        XCTAssertEqual(s.fusedModules, 24)
        XCTAssertEqual(s.savedTensors, 2)
        let mine = try Checkpoint(path: tmp + "/fused")
        let ref = try Checkpoint(path: referenceRoot + "/models/fuse-minilm-ia3/fused_subset.safetensors")
        let base = try Checkpoint(path: minilm)
        XCTAssertEqual(ref.names.count, 50, "24 modules' weights and biases, the classifier's weight and bias")
        var worst: Float = 0, changedBiases = 0
        for n in ref.names {
            guard let info = mine.info(n), let refInfo = ref.info(n) else { XCTFail("fused model lacks \(n)"); continue }
            XCTAssertEqual(Array(info.shape.dropFirst()), Array(refInfo.shape.dropFirst()), n)
            let a = try mine.tensor(n).floats(), b = try ref.tensor(n).floats()
            for i in b.indices { worst = max(worst, abs(a[i] - b[i])) }
            if n.hasSuffix(".bias"), n.hasPrefix("bert."), try base.tensor(String(n.dropFirst(5))).floats() != b { changedBiases += 1 }
        }
        XCTAssertLessThanOrEqual(worst, 1e-6)
        XCTAssertEqual(changedBiases, 12, "key and value biases are scaled, feed-forward biases are not")
    }

    func testFuseRejectsAdapterForAnotherBase() throws {
        let tmp = try temporaryDirectory(self)
        // The tiny Llama of the merge fixtures has no BERT modules.
        XCTAssertThrowsError(try Fuse.run(model: referenceRoot + "/merge/models/base",
                                          adapter: referenceRoot + "/models/peft-minilm-seqcls", to: tmp + "/x")) {
            XCTAssertTrue("\($0)".contains("is not in"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/x"))
    }
}
