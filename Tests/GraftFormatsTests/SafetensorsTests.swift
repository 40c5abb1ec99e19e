import Foundation
import XCTest
@testable import GraftFormats
import GraftTensor

/// Builds a safetensors file from a raw header string and data bytes (for malformed-file tests).
func rawSafetensors(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    return withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { Array($0) } + h + data
}

final class SafetensorsTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "graft-st-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ bytes: [UInt8], _ name: String = "x.safetensors") -> String {
        let p = (dir as NSString).appendingPathComponent(name)
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }

    func assertRejected(_ header: String, data: [UInt8] = [], declaredLength: UInt64? = nil, mentions: [String],
                        file: StaticString = #filePath, line: UInt = #line) {
        let p = write(rawSafetensors(header: header, data: data, declaredLength: declaredLength))
        XCTAssertThrowsError(try SafetensorsFile(path: p), file: file, line: line) { e in
            let msg = "\(e)"
            XCTAssertTrue(msg.contains(p), "error should name the file: \(msg)", file: file, line: line)
            for m in mentions { XCTAssertTrue(msg.contains(m), "expected '\(m)' in: \(msg)", file: file, line: line) }
        }
    }

    func testRoundTripAllFloatTypesAndMetadata() throws {
        let a = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [3], values: [0.5, -1, 2], dtype: .bf16)
        let c = Tensor(shape: [1], values: [7], dtype: .f16)
        let p = (dir as NSString).appendingPathComponent("m.safetensors")
        try ShardedSafetensorsWriter.writeFile(p, [("a", a), ("b", b), ("c", c)])
        let f = try SafetensorsFile(path: p)
        XCTAssertEqual(f.metadata["format"], "pt")
        XCTAssertEqual(Set(f.tensors.map(\.name)), ["a", "b", "c"])
        XCTAssertEqual(try f.tensor("a").floats(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try f.tensor("a").shape, [2, 3])
        XCTAssertEqual(try f.tensor("b").dtype, .bf16)
        XCTAssertEqual(try f.tensor("b").floats(), [0.5, -1, 2])
        XCTAssertEqual(try f.tensor("c").floats(), [7])
        // Wider dtypes are laid out first so every tensor is aligned to its element size.
        for t in f.tensors { XCTAssertEqual(t.byteRange.lowerBound % t.dtype.byteSize, 0) }
    }

    func testShardedWriteProducesIndexAndReadsBack() throws {
        let out = (dir as NSString).appendingPathComponent("model")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let tensors = (0..<5).map { i in ("layer.\(i).weight", Tensor(shape: [10, 10], values: (0..<100).map { Float($0 + i) })) }
        let w = try ShardedSafetensorsWriter(directory: out, specs: tensors.map { TensorSpec(name: $0.0, dtype: .f32, shape: [10, 10]) },
                                             maxShardBytes: 900)
        for (n, t) in tensors.reversed() { try w.write(n, tensor: t) }  // any order
        try w.finish()
        let files = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        XCTAssertEqual(files, ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                               "model-00003-of-00003.safetensors", "model.safetensors.index.json"])
        let ck = try Checkpoint(path: out)
        XCTAssertEqual(ck.names.count, 5)
        for (n, t) in tensors { XCTAssertEqual(try ck.tensor(n).floats(), t.floats()) }
    }

    func testWriterRejectsUnfinishedOutput() throws {
        let w = try ShardedSafetensorsWriter(directory: dir, specs: [TensorSpec(name: "a", dtype: .f32, shape: [2])], maxShardBytes: 100)
        XCTAssertThrowsError(try w.finish()) { XCTAssertTrue("\($0)".contains("never written")) }
        XCTAssertThrowsError(try w.write("a", bytes: UnsafeRawBufferPointer(start: nil, count: 0))) {
            XCTAssertTrue("\($0)".contains("declared 8"))
        }
    }

    func testRejectsTooShortFile() {
        let p = write([1, 2, 3])
        XCTAssertThrowsError(try SafetensorsFile(path: p)) { XCTAssertTrue("\($0)".contains("shorter than the 8-byte header")) }
    }

    func testRejectsHeaderLengthPastEnd() {
        assertRejected(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0], declaredLength: 5000,
                       mentions: ["runs past the end"])
    }

    func testRejectsHugeHeaderLength() {
        assertRejected("{}", declaredLength: 1 << 40, mentions: ["exceeds"])
    }

    func testRejectsInvalidJSON() {
        assertRejected(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]"#, data: [0, 0, 0, 0], mentions: ["not valid JSON"])
    }

    func testRejectsUnknownDType() {
        assertRejected(#"{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0],
                       mentions: ["w", "unsupported dtype 'F8_E4M3'"])
    }

    func testRejectsSizeMismatch() {
        assertRejected(#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8),
                       mentions: ["w", "needs 16 bytes but data_offsets span 8"])
    }

    func testRejectsOffsetsOutsideFile() {
        assertRejected(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 8),
                       mentions: ["w", "outside"])
    }

    func testRejectsOverlappingTensors() {
        assertRejected(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                       data: [UInt8](repeating: 0, count: 12), mentions: ["overlaps"])
    }

    func testRejectsDuplicateNames() {
        assertRejected(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                       data: [UInt8](repeating: 0, count: 8), mentions: ["duplicate key \"a\""])
    }

    func testRejectsNegativeShape() {
        assertRejected(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0], mentions: ["non-negative"])
    }

    func testTruncatedRealFileIsAnErrorNotACrash() throws {
        let p = (dir as NSString).appendingPathComponent("t.safetensors")
        try ShardedSafetensorsWriter.writeFile(p, [("a", Tensor(shape: [64], values: [Float](repeating: 1, count: 64)))])
        let bytes = [UInt8](FileManager.default.contents(atPath: p)!)
        let cut = write(Array(bytes.dropLast(100)), "cut.safetensors")
        XCTAssertThrowsError(try SafetensorsFile(path: cut)) { XCTAssertTrue("\($0)".contains("outside"), "\($0)") }
    }

    func testOutputDirectoryAppearsOnlyOnCommit() throws {
        let final = (dir as NSString).appendingPathComponent("out")
        let o = try OutputDirectory(final)
        FileManager.default.createFile(atPath: o.path("f"), contents: Data("x".utf8))
        XCTAssertFalse(FileManager.default.fileExists(atPath: final))
        try o.commit()
        XCTAssertTrue(FileManager.default.fileExists(atPath: (final as NSString).appendingPathComponent("f")))
        XCTAssertThrowsError(try OutputDirectory(final)) { XCTAssertTrue("\($0)".contains("--force")) }
        let o2 = try OutputDirectory(final, overwrite: true)
        o2.abandon()
        XCTAssertFalse(FileManager.default.fileExists(atPath: o2.tempPath))
        XCTAssertTrue(FileManager.default.fileExists(atPath: (final as NSString).appendingPathComponent("f")))
    }
}

final class JSONTests: XCTestCase {
    func testParsesAndSerialisesInOrder() throws {
        let j = try JSONValue.parse(#"{"b": [1, 2.5, -3e2, true, null], "a": "x\"\u00e9\ud83d\ude00"}"#)
        XCTAssertEqual(j.objectValue?.map(\.0), ["b", "a"])
        XCTAssertEqual(j["a"]?.stringValue, "x\"é😀")
        XCTAssertEqual(j["b"]?.arrayValue?[2].doubleValue, -300)
        XCTAssertEqual(try JSONValue.parse(j.serialized()), j)
    }

    func testRejectsMalformed() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"\\x\"", "{} x", "01a"] {
            XCTAssertThrowsError(try JSONValue.parse(bad), bad)
        }
    }
}
