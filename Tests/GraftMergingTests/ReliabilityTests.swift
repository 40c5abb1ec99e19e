#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import GraftTestSupport
import XCTest

/// Failures a writer must survive without leaving anything half-written (issue 17): a full disk, inputs
/// that change or shrink while they are read, output paths that would clobber an input or follow a link.
/// The kill-anywhere tests (SIGKILL at random moments) are `scripts/reliability/kill-anywhere`.
extension CLITests {
    /// A copy of the merge fixture (three fine-tunes of a tiny Llama) that a test may damage.
    func mergeFixtureCopy() throws -> String {
        let dir = try temporaryDirectory(self) + "/merge"
        try FileManager.default.copyItem(atPath: referenceRoot + "/merge", toPath: dir)
        return dir
    }

    /// `graft ARGS` with the file-size limit set to `kilobytes` (ulimit -f): a write past it fails with EFBIG.
    func runLimited(_ kilobytes: Int, _ args: [String], cwd: String? = nil) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "ulimit -f \(kilobytes) && exec \"$0\" \"$@\"", graft] + args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: e, as: UTF8.self))
    }

    /// Nothing at `output`, and no hidden partial of it beside it.
    func assertNothingWritten(_ output: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "\(output) was written", file: file, line: line)
        let parent = (output as NSString).deletingLastPathComponent, name = (output as NSString).lastPathComponent
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []).filter { $0.hasPrefix(".\(name).") }
        XCTAssertEqual(left, [], "partial output left beside \(output)", file: file, line: line)
    }

    func testDiskFullIsAClearErrorWithNothingLeftBehind() throws {
        let tmp = try temporaryDirectory(self)
        let merge = referenceRoot + "/merge"
        let rows = (0..<400).map { #"{"text": "row \#($0) with some words to fill the line", "label": "\#($0 % 2 == 0 ? "even" : "odd")"}"# }
        try write(rows.joined(separator: "\n") + "\n", to: tmp + "/rows.jsonl")
        let minilm = try fetchedModel("minilm"), smollm2 = try fetchedSmolLM2GGUF()
        let cases: [(name: String, limitKB: Int, args: [String])] = [
            ("merge", 100, ["merge", merge + "/configs/ties.yml", tmp + "/merged"]),
            ("fuse", 1000, ["fuse", "--model", minilm, "--adapter", referenceRoot + "/models/peft-minilm-seqcls", tmp + "/fused"]),
            ("convert to HF", 1000, ["convert", smollm2, tmp + "/hf"]),
            ("data prepare", 8, ["data", "prepare", "--input", tmp + "/rows.jsonl", "--output", tmp + "/prepared"]),
            ("train", 64, ["train", "--model", minilm, "--task", "classification", "--data", tmp + "/rows.jsonl", "--max-steps", "2",
                           "--batch-size", "4", "--max-length", "16", "--precision", "f32", "--output", tmp + "/adapter"]),
        ]
        for c in cases {
            let output = c.args.last!
            let (code, err) = try runLimited(c.limitKB, c.args, cwd: merge)
            XCTAssertEqual(code, 1, "\(c.name): \(err)")
            XCTAssertTrue(err.contains("File too large"), "\(c.name): \(err)")
            XCTAssertTrue(err.contains((output as NSString).lastPathComponent), "\(c.name) names the file it could not write: \(err)")
            XCTAssertFalse(err.contains("Fatal error") || err.contains("Stack dump"), "\(c.name) crashed: \(err)")
            assertNothingWritten(output)
        }
        // HF folder → GGUF file (a single file written beside its final name).
        let (made, _, madeErr) = try run(["convert", smollm2, tmp + "/smollm2-hf", "--dtype", "bfloat16"])
        XCTAssertEqual(made, 0, madeErr)
        let (code, err) = try runLimited(1000, ["convert", tmp + "/smollm2-hf", tmp + "/model.gguf"])
        XCTAssertEqual(code, 1, err)
        XCTAssertTrue(err.contains("File too large") && err.contains("model.gguf"), err)
        assertNothingWritten(tmp + "/model.gguf")
    }

    /// A file system that fills up (a 1 MB tmpfs in a private mount namespace), not only a size limit.
    func testFullFileSystemIsAClearErrorWithNothingLeftBehind() throws {
        #if os(Linux)
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        probe.arguments = ["-rm", "true"]
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { throw XCTSkip("unshare is not installed") }
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else { throw XCTSkip("this machine does not allow user namespaces (unshare -rm)") }
        let tmp = try temporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: tmp + "/small", withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        // Inside: mount the small file system, fuse a 90 MB model into it, list what is left, exit with graft's status.
        p.arguments = ["-rm", "/bin/sh", "-c",
                       "mount -t tmpfs -o size=1m none \"$1\" && \"$0\" fuse --model \"$2\" --adapter \"$3\" \"$1/fused\"; s=$?; ls -A \"$1\" >&2; exit $s",
                       graft, tmp + "/small", try fetchedModel("minilm"), referenceRoot + "/models/peft-minilm-seqcls"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 1, e)
        XCTAssertTrue(e.contains("No space left on device") && e.contains("fused"), e)
        XCTAssertFalse(e.split(separator: "\n").contains { $0.hasPrefix(".fused") || $0 == "fused" }, "left on the full file system: \(e)")
        #else
        throw XCTSkip("mount namespaces are Linux's")
        #endif
    }

    func testOutputPlacesThatWouldClobberAnInputAreRefused() throws {
        let m = try mergeFixtureCopy()
        let tmp = (m as NSString).deletingLastPathComponent
        let before = try Data(contentsOf: URL(fileURLWithPath: m + "/models/task1/model.safetensors"))
        let cases: [(args: [String], expect: String)] = [
            (["merge", "configs/ties.yml", m + "/models/task1/merged"], "inside the input folder"),
            (["merge", "configs/ties.yml", m + "/models/task1", "--force"], "is the input"),
            (["merge", "configs/ties.yml", m + "/models", "--force"], "holds the input"),
            (["fuse", "--model", try fetchedModel("minilm"), "--adapter", referenceRoot + "/models/peft-minilm-seqcls",
              referenceRoot + "/models/peft-minilm-seqcls", "--force"], "is the input"),
        ]
        for c in cases {
            let (code, _, err) = try run(c.args, cwd: m)
            XCTAssertEqual(code, 1, err)
            XCTAssertTrue(err.contains(c.expect), "\(c.args): \(err)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: m + "/models/task1/model.safetensors")), before)
        XCTAssertFalse(FileManager.default.fileExists(atPath: m + "/models/task1/merged"))

        // An output path that is a symbolic link: refused, the link and its target untouched.
        try FileManager.default.createDirectory(atPath: tmp + "/target", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: tmp + "/link", withDestinationPath: tmp + "/target")
        let (code, _, err) = try run(["merge", "configs/ties.yml", tmp + "/link", "--force"], cwd: m)
        XCTAssertEqual(code, 1, err)
        XCTAssertTrue(err.contains("symbolic link"), err)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: tmp + "/link"), tmp + "/target")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp + "/target"), [])
    }

    func testTheSameModelTwiceInAMergeIsRefused() throws {
        let m = try mergeFixtureCopy()
        try write("""
            merge_method: ties
            base_model: models/base
            models:
            - model: models/task1
              parameters: {weight: 1.0, density: 0.5}
            - model: ./models/../models/task1
              parameters: {weight: 1.0, density: 0.5}
            """, to: m + "/twice.yml")
        let (code, _, err) = try run(["merge", "twice.yml", m + "/out"], cwd: m)
        XCTAssertEqual(code, 1, err)
        XCTAssertTrue(err.contains("models[0] and models[1] are the same model"), err)
        assertNothingWritten(m + "/out")
    }

    /// Runs graft paused at `point` (see GRAFT_TEST_PAUSE), runs `act` while it waits, lets it go on.
    func runPaused(at point: String, _ args: [String], cwd: String, act: () throws -> Void) throws -> (Int32, String) {
        let fifo = try temporaryDirectory(self) + "/pause"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: graft)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        p.environment = ProcessInfo.processInfo.environment.merging(["GRAFT_TEST_PAUSE": "\(point):\(fifo)"]) { $1 }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        // Should graft end before reaching the pause, open the pipe's other end so the test does not wait forever.
        p.terminationHandler = { _ in let fd = open(fifo, O_RDONLY | O_NONBLOCK); if fd >= 0 { close(fd) } }
        try p.run()
        let fd = open(fifo, O_WRONLY)  // returns once graft waits at the pause (or has ended)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let reachedPause = p.isRunning
        if reachedPause { try act() }
        close(fd)
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertTrue(reachedPause, "graft ended before reaching the pause: \(e)")
        return (p.terminationStatus, e)
    }

    func testAnInputTruncatedWhileItIsReadIsNamedAndNothingIsWritten() throws {
        let m = try mergeFixtureCopy()
        let victim = m + "/models/task2/model.safetensors"
        let (code, err) = try runPaused(at: "created", ["merge", "configs/ties.yml", m + "/out"], cwd: m) {
            XCTAssertEqual(truncate(victim, 4096), 0)
        }
        XCTAssertEqual(code, 1, err)
        XCTAssertTrue(err.contains(victim) && err.contains("changed while it was being read"), err)
        assertNothingWritten(m + "/out")
    }

    func testAnInputRewrittenWhileItIsReadRefusesTheCommit() throws {
        let m = try mergeFixtureCopy()
        let victim = m + "/models/task3/model.safetensors"
        let size = try FileManager.default.attributesOfItem(atPath: victim)[.size] as! Int
        // Rewritten in place with the same bytes: only the modification time tells.
        let (code, err) = try runPaused(at: "commit", ["merge", "configs/ties.yml", m + "/out"], cwd: m) {
            let fd = open(victim, O_RDWR)
            var byte: UInt8 = 0
            XCTAssertEqual(pread(fd, &byte, 1, off_t(size - 1)), 1)
            XCTAssertEqual(pwrite(fd, &byte, 1, off_t(size - 1)), 1)
            close(fd)
        }
        XCTAssertEqual(code, 1, err)
        XCTAssertTrue(err.contains(victim) && err.contains("changed while it was being read"), err)
        assertNothingWritten(m + "/out")

        // Replaced by another file under the same name (a new inode) while the first is read: refused too.
        let other = m + "/models/task1/model.safetensors"
        let (code2, err2) = try runPaused(at: "commit", ["merge", "configs/ties.yml", m + "/out"], cwd: m) {
            try FileManager.default.removeItem(atPath: victim)
            try FileManager.default.copyItem(atPath: other, toPath: victim)
        }
        XCTAssertEqual(code2, 1, err2)
        XCTAssertTrue(err2.contains(victim), err2)
        assertNothingWritten(m + "/out")
    }
}
