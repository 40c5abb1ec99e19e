import Foundation
import XCTest

/// The `graft` binary: exit codes, messages on stderr, nothing written on failure.
final class CLITests: XCTestCase {
    var graft: String {
        // The test bundle sits in (or is) the build products folder that holds the executable.
        let b = Bundle(for: CLITests.self).bundleURL
        return [b.appendingPathComponent("graft"), b.deletingLastPathComponent().appendingPathComponent("graft")]
            .map(\.path).first { FileManager.default.isExecutableFile(atPath: $0) } ?? b.path + "/graft"
    }

    func run(_ args: [String], cwd: String? = nil) throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: graft)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func testMergeSucceedsAndFailsCleanly() throws {
        let tmp = try temporaryDirectory(self)
        let root = referenceRoot + "/merge"
        let (ok, _, okErr) = try run(["merge", "configs/ties.yml", tmp + "/ties"], cwd: root)
        XCTAssertEqual(ok, 0, okErr)
        XCTAssertTrue(okErr.contains("wrote 21 tensors"), okErr)
        let (code, _, err) = try run(["merge", "configs/nope.yml", tmp + "/x"], cwd: root)
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(err.contains("configs/nope.yml"), err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/x"))
        let (dry, _, dryErr) = try run(["merge", "--dry-run", "configs/breadcrumbs.yml", tmp + "/y"], cwd: root)
        XCTAssertEqual(dry, 0, dryErr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/y"))
    }

    func testInspectJSON() throws {
        let (code, out, err) = try run(["inspect", "--json", referenceRoot + "/merge/models/base"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("\"architecture\": \"LlamaForCausalLM\""), out)
        XCTAssertTrue(out.contains("\"model.norm.weight\""))
        let (bad, _, badErr) = try run(["inspect", "/no/such/file.safetensors"])
        XCTAssertNotEqual(bad, 0)
        XCTAssertTrue(badErr.contains("/no/such/file.safetensors"))
    }

    func testListMethods() throws {
        let (code, out, _) = try run(["merge", "--list-methods"])
        XCTAssertEqual(code, 0)
        for m in ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
                  "slerp", "model_stock", "pcb", "tsv", "opcm"] {
            XCTAssertTrue(out.contains("\n\(m)\n") || out.hasPrefix("\(m)\n"), m)
        }
    }
}
