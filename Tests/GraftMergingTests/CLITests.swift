import Foundation
import GraftFormats
import XCTest
import GraftTestSupport

/// The `graft` binary: exit codes, messages on stderr, nothing written on failure.
final class CLITests: XCTestCase {
    var graft: String { graftExecutable(CLITests.self) }

    func run(_ args: [String], cwd: String? = nil, environment: [String: String?] = [:]) throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: graft)
        p.arguments = args
        if !environment.isEmpty {
            var env = ProcessInfo.processInfo.environment
            for (k, v) in environment { env[k] = v }
            p.environment = env
        }
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

    /// Graft's home folder as the fetch scripts and every command see it: `$GRAFT_HOME`, else
    /// `$XDG_CACHE_HOME/graft`, else `$HOME/.cache/graft` with `$HOME` as set (not the passwd entry,
    /// which containers and CI give a different one). A model the script reports in a folder is the
    /// one graft then opens there; a missing one is named with the path looked in.
    func testHomeFolderFollowsTheEnvironmentAsTheFetchScriptsDo() throws {
        let tmp = try temporaryDirectory(self)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/fetch-models").path
        for (env, home) in [(["GRAFT_HOME": nil, "XDG_CACHE_HOME": nil, "HOME": tmp + "/h"], tmp + "/h/.cache/graft"),
                            (["GRAFT_HOME": nil, "XDG_CACHE_HOME": tmp + "/x", "HOME": tmp + "/h"], tmp + "/x/graft"),
                            (["GRAFT_HOME": tmp + "/g", "XDG_CACHE_HOME": tmp + "/x", "HOME": tmp + "/h"], tmp + "/g"),
                            (["GRAFT_HOME": "", "XDG_CACHE_HOME": "", "HOME": tmp + "/h"], tmp + "/h/.cache/graft")] as [([String: String?], String)] {
            XCTAssertEqual(GraftHome.path(env.compactMapValues { $0 }), home)
            let (missing, _, why) = try run(["embed", "--model", "minilm", "x"], environment: env)
            XCTAssertNotEqual(missing, 0)
            XCTAssertTrue(why.contains("model 'minilm' is not fetched yet (no \(home)/models/minilm)"), why)
            // A model marked complete there: the script keeps it, and graft opens that folder.
            try FileManager.default.createDirectory(atPath: home + "/models/minilm", withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: home + "/models/minilm/.complete", contents: Data())
            let p = Process()
            p.executableURL = URL(fileURLWithPath: script); p.arguments = ["minilm"]
            var e = ProcessInfo.processInfo.environment
            for (k, v) in env { e[k] = v }
            p.environment = e
            let out = Pipe(); p.standardOutput = out
            try p.run(); p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            XCTAssertTrue(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("cached in \(home)/models/minilm"))
            let (code, _, err) = try run(["embed", "--model", "minilm", "x"], environment: env)
            XCTAssertNotEqual(code, 0)
            XCTAssertTrue(err.contains(home + "/models/minilm"), "graft opened the folder the script reported: \(err)")
            try FileManager.default.removeItem(atPath: home)
        }
    }

    /// Results do not depend on the thread count: every merge method of the fixtures (mergekit's and the
    /// research ones, OPCM continual), LoRA training in float32 and in bf16 (the portable bf16 products where
    /// the CPU lacks AVX512-BF16), and sampled generation in float and 8-bit decode write byte-identical
    /// output with GRAFT_THREADS=1 and 2.
    func testResultsDoNotDependOnTheThreadCount() throws {
        let tmp = try temporaryDirectory(self)
        let rows = (0..<64).map { i in #"{"text": "\#(i % 2 == 0 ? "a fine film" : "a dull film") number \#(i)", "label": "\#(i % 2)"}"# }
        try write(rows.joined(separator: "\n") + "\n", to: tmp + "/train.jsonl")
        let merges = try FileManager.default.contentsOfDirectory(atPath: referenceRoot + "/merge/configs").sorted().map { ("merge", $0) }
            + ["pcb.yml", "tsv.yml", "opcm.yml"].map { ("research", $0) }
        var outputs: [String: [String]] = [:]  // what each run printed or wrote, per thread count
        for n in ["1", "2"] {
            let env: [String: String?] = ["GRAFT_THREADS": n]
            for (dir, cfg) in merges {
                let name = (cfg as NSString).deletingPathExtension
                let args = ["merge", "configs/" + cfg, tmp + "/\(name)-\(n)", "--seed", "7"] + (name == "opcm" ? ["--continual"] : [])
                let (m, _, merr) = try run(args, cwd: referenceRoot + "/" + dir, environment: env)
                XCTAssertEqual(m, 0, "\(cfg): \(merr)")
                outputs["merge " + name, default: []].append(tmp + "/\(name)-\(n)/model.safetensors")
            }
            for precision in ["f32", "bf16"] {
                let out = tmp + "/train-\(precision)-\(n)"
                let (t, _, terr) = try run(["train", "--model", try fetchedModel("minilm"), "--task", "classification", "--data", tmp + "/train.jsonl",
                                            "--max-steps", "4", "--batch-size", "16", "--validation-split", "0", "--precision", precision,
                                            "--output", out], environment: env)
                XCTAssertEqual(t, 0, terr)
                outputs["train " + precision, default: []].append(out + "/adapter_model.safetensors")
            }
            for decode in [[], ["--int8-decode"]] {
                let (g, text, gerr) = try run(["generate", "--model", try fetchedSmolLM2GGUF(), "--prompt", "The three primary colours are",
                                               "--max-tokens", "24", "--temperature", "0.9", "--seed", "3"] + decode, environment: env)
                XCTAssertEqual(g, 0, gerr)
                let file = tmp + "/generate\(decode.first ?? "")-\(n).txt"
                try write(text, to: file)
                outputs["generate " + (decode.first ?? "float"), default: []].append(file)
            }
        }
        XCTAssertEqual(outputs.count, merges.count + 4)
        for (what, files) in outputs.sorted(by: { $0.key < $1.key }) {
            let x = try Data(contentsOf: URL(fileURLWithPath: files[0])), y = try Data(contentsOf: URL(fileURLWithPath: files[1]))
            XCTAssertFalse(x.isEmpty, what)
            XCTAssertTrue(x == y, "\(what): 1 and 2 threads differ")
        }
    }

    /// The BLAS products never run on generic kernels where the CPU has AVX2 or AVX-512: as the
    /// program starts (`graft doctor` reports it), and when OpenBLAS is told to use its oldest
    /// x86-64 kernels, as its CPU detection does on CPUs it does not know — Graft then starts itself
    /// again with kernels that fit (unless GRAFT_KEEP_BLAS_CORE=1, and then doctor warns).
    func testBLASKernelsFitTheCPU() throws {
        func doctor(_ env: [String: String?]) throws -> [String: Any] {
            let (code, out, err) = try run(["doctor", "--json"], environment: env)
            XCTAssertEqual(code, 0, err)
            return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], out)
        }
        let plain = try doctor(["OPENBLAS_CORETYPE": nil, "GRAFT_KEEP_BLAS_CORE": nil])
        let features = plain["cpu_features"] as? [String] ?? []
        let avx2 = features.contains("avx2") && features.contains("fma"), avx512 = features.contains("avx512f")
        XCTAssertEqual(plain["blas_generic"] as? Bool, false, "generic BLAS kernels in use: \(plain)")
        guard avx2 || avx512 else { return }  // nothing wider to ask for

        let forced = try doctor(["OPENBLAS_CORETYPE": "Prescott", "GRAFT_KEEP_BLAS_CORE": nil])
        XCTAssertEqual(forced["blas_core_replaced"] as? String, "Prescott", "\(forced)")
        XCTAssertEqual(forced["blas_generic"] as? Bool, false, "\(forced)")
        let core = forced["blas_core"] as? String ?? ""
        XCTAssertTrue(avx512 ? ["SkylakeX", "Cooperlake"].contains(core) : core == "Haswell", core)

        let kept = try doctor(["OPENBLAS_CORETYPE": "Prescott", "GRAFT_KEEP_BLAS_CORE": "1"])
        XCTAssertEqual(kept["blas_core"] as? String, "Prescott")
        XCTAssertEqual(kept["blas_generic"] as? Bool, true)
        XCTAssertTrue((kept["warnings"] as? [String] ?? []).contains { $0.contains("generic 'Prescott'") }, "\(kept)")
    }

    /// `graft bench all`: one row per figure with Graft's measurement, no ratio without the peer, the
    /// CPU and the kernel choices in the header; the sharing rows' busy neighbour is gone afterwards; an
    /// unknown group is refused by name. (Quick runs of the shortest groups: the figures are not checked.)
    func testBenchAllTable() throws {
        let (code, out, err) = try run(["bench", "all", "--quick", "--no-peer", "--only", "embed,generate,sharing", "--json"])
        XCTAssertEqual(code, 0, err)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], out)
        XCTAssertFalse((obj["cpu"] as? String ?? "").isEmpty)
        XCTAssertNotNil((obj["kernel_choices"] as? [String: Any])?["packed_training"], "\(obj)")
        let rows = obj["rows"] as? [[String: Any]] ?? []
        XCTAssertEqual(rows.map { $0["group"] as? String ?? "" }, ["embed", "generate", "generate", "sharing", "sharing"])
        for r in rows {
            let figure = Double((r["graft"] as? String ?? "").split(separator: " ").first ?? "") ?? 0
            XCTAssertGreaterThan(figure, 0, "\(r)")
            XCTAssertTrue(r["ratio"] is NSNull && r["met"] is NSNull, "no peer, no ratio: \(r)")
        }
        XCTAssertTrue(rows.last?["name"] as? String ?? "" == "SmolLM2 decode, one core busy", "\(rows)")
        let ps = Process()
        ps.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        ps.arguments = ["-f", "while :; do :; done"]
        ps.standardOutput = FileHandle.nullDevice
        try ps.run(); ps.waitUntilExit()
        XCTAssertEqual(ps.terminationStatus, 1, "the busy neighbour is still running")

        let (bad, _, badErr) = try run(["bench", "all", "--only", "embed,bogus"])
        XCTAssertNotEqual(bad, 0)
        XCTAssertTrue(badErr.contains("unknown group 'bogus'"), badErr)
    }
}
