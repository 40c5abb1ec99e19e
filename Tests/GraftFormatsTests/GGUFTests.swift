import Foundation
import XCTest
@testable import GraftFormats
import GraftTensor
import GraftTestSupport

final class GGUFTests: XCTestCase {
    /// Every block type against llama.cpp's gguf-py `quants.dequantize` on random blocks
    /// (scripts/reference/make-gguf-references.py).
    func testDequantizationMatchesGGUFPy() throws {
        let ref = try SafetensorsFile(path: projectRoot + "/Tests/Fixtures/gguf/dequant.safetensors")
        let types = ref.tensors.map(\.name).filter { $0.hasSuffix(".blocks") }.map { String($0.dropLast(7)) }
        XCTAssertEqual(Set(types), ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
        for name in types {
            guard let type = GGMLType(name: name) else { XCTFail(name); continue }
            let blocks = try ref.tensor(name + ".blocks"), want = try ref.tensor(name + ".expected").floats()
            var got = [Float](repeating: 0, count: want.count)
            XCTAssertEqual(blocks.byteCount, want.count / type.blockElements * type.blockBytes, name)
            got.withUnsafeMutableBufferPointer { Dequantize.run(type, blocks.bytes.baseAddress!, count: want.count, into: $0.baseAddress!) }
            var worst: Float = 0
            for i in want.indices { worst = max(worst, abs(got[i] - want[i]) / max(1, abs(want[i]))) }
            XCTAssertLessThanOrEqual(worst, 1e-6, "\(name): max relative error")
        }
    }

    func testQ8KIsScaleTimesInt8() {
        var block = [UInt8](repeating: 0, count: 292)
        withUnsafeBytes(of: Float(0.5)) { for i in 0..<4 { block[i] = $0[i] } }
        for j in 0..<256 { block[4 + j] = UInt8(bitPattern: Int8(j - 128)) }
        var out = [Float](repeating: 0, count: 256)
        block.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { Dequantize.run(.q8_K, b.baseAddress!, count: 256, into: $0.baseAddress!) } }
        XCTAssertEqual(out, (0..<256).map { Float($0 - 128) * 0.5 })
    }

    // MARK: - Hand-built files

    /// A minimal GGUF v3 file: metadata (a string, a u32, a string array) and one F32 tensor [2 × 3].
    func makeGGUF(version: UInt32 = 3, tensorType: UInt32 = 0, dims: [UInt64] = [3, 2], offset: UInt64 = 0,
                  truncateBy: Int = 0, magic: String = "GGUF") -> [UInt8] {
        var b: [UInt8] = Array(magic.utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
        u32(version); u64(1); u64(3)
        str("general.architecture"); u32(8); str("llama")
        str("llama.block_count"); u32(4); u32(30)
        str("tokenizer.ggml.tokens"); u32(9); u32(8); u64(2); str("a"); str("b")
        str("w"); u32(UInt32(dims.count)); for d in dims { u64(d) }; u32(tensorType); u64(offset)
        while b.count % 32 != 0 { b.append(0) }
        for v: Float in [1, 2, 3, 4, 5, 6] { withUnsafeBytes(of: v) { b += $0 } }
        return Array(b.dropLast(truncateBy))
    }

    func write(_ bytes: [UInt8]) throws -> String {
        let p = NSTemporaryDirectory() + "graft-\(UUID().uuidString).gguf"
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: p) }
        return p
    }

    func testReadsMetadataAndTensors() throws {
        let g = try GGUFFile(path: try write(makeGGUF()))
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(g["general.architecture"]?.string, "llama")
        XCTAssertEqual(g["llama.block_count"]?.int, 30)
        XCTAssertEqual(try g.strings("tokenizer.ggml.tokens"), ["a", "b"])
        XCTAssertEqual(g.info("w")?.shape, [2, 3])
        XCTAssertEqual(try g.floats("w").array, [1, 2, 3, 4, 5, 6])
    }

    func testRejectsCorruptFiles() throws {
        let cases: [([UInt8], String)] = [
            (makeGGUF(magic: "GGUX"), "bad magic"),
            (makeGGUF(version: 7), "version 7"),
            (makeGGUF(tensorType: 99), "unknown ggml type 99"),
            (makeGGUF(offset: 64), "runs past the end"),
            (makeGGUF(offset: 3), "not aligned"),
            (makeGGUF(truncateBy: 8), "runs past the end"),
            (Array(makeGGUF().prefix(40)), "past the end"),
            (makeGGUF(dims: [3, 0]), "dimension 0"),
            (makeGGUF(tensorType: 8, dims: [3, 2]), "block size"),
            // Declared sizes far beyond the file and memory: 2⁶⁰ elements, and a product that overflows 64 bits.
            (makeGGUF(dims: [1 << 30, 1 << 30]), "too large"),
            (makeGGUF(dims: [1 << 62, 1 << 62]), "out of range"),
        ]
        for (bytes, expect) in cases {
            let p = try write(bytes)
            XCTAssertThrowsError(try GGUFFile(path: p), expect) { e in
                XCTAssertTrue("\(e)".contains(expect), "expected '\(expect)' in: \(e)")
                XCTAssertTrue("\(e)".contains(p))
            }
        }
    }
}
