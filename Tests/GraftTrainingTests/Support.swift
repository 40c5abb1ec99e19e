import Foundation
import XCTest

let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
var referenceRoot: String { ProcessInfo.processInfo.environment["GRAFT_REFERENCE_DIR"] ?? projectRoot + "/Tests/Fixtures/reference" }
var graftHome: String { ProcessInfo.processInfo.environment["GRAFT_HOME"] ?? (NSHomeDirectory() + "/.cache/graft") }

func fetchedModel(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let p = graftHome + "/models/" + name
    guard FileManager.default.fileExists(atPath: p + "/.complete") else {
        XCTFail("\(name) is not in \(p): run scripts/fetch-models (make test does)", file: file, line: line)
        throw XCTSkip("model missing")
    }
    if name == "smollm2" { return p + "/SmolLM2-135M-Instruct.Q4_1.gguf" }
    return p
}

func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let d = NSTemporaryDirectory() + "graft-train-test-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
    return d
}

func write(_ text: String, to path: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: path)) }

/// A small sentiment set whose label a model can learn in a few steps: clear positive and negative words.
func toySentiment(_ n: Int) -> String {
    let pos = ["great", "wonderful", "excellent", "delightful", "superb", "lovely"], neg = ["awful", "terrible", "boring", "dreadful", "horrible", "dull"]
    let things = ["film", "movie", "plot", "acting", "story", "ending", "cast", "script"]
    return (0..<n).map { i -> String in
        let good = i % 2 == 0
        let w = (good ? pos : neg)[(i / 2) % 6], t = things[(i / 12) % things.count]
        return "{\"text\": \"the \(t) was \(w)\", \"label\": \"\(good ? "positive" : "negative")\"}"
    }.joined(separator: "\n") + "\n"
}

/// The `graft` binary next to the test bundle.
func graftBinary(_ cls: AnyClass) -> String {
    let b = Bundle(for: cls).bundleURL
    return [b.appendingPathComponent("graft"), b.deletingLastPathComponent().appendingPathComponent("graft")]
        .map(\.path).first { FileManager.default.isExecutableFile(atPath: $0) } ?? b.path + "/graft"
}

func runGraft(_ cls: AnyClass, _ args: [String]) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: graftBinary(cls))
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
