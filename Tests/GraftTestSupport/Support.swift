import Foundation
import GraftFormats
import XCTest

/// What every test target shares: where the project, its fixtures and the fetched models are, and
/// temporary folders that clean up after themselves. Helpers of one target's tests stay in that target.

/// The project's root folder (tests locate fixtures and the built binary from it).
public let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Committed copy of the reference fixtures (laid out like ../shared/fixtures).
public let committedReferenceRoot = projectRoot + "/Tests/Fixtures/reference"

/// The fixture root: `GRAFT_REFERENCE_DIR` when set, else the committed copy.
public var referenceRoot: String { ProcessInfo.processInfo.environment["GRAFT_REFERENCE_DIR"] ?? committedReferenceRoot }

/// Where `scripts/fetch-models` unpacks models.
public var graftHome: String { GraftHome.path }

/// A fetched model's folder; fails the test (not skips) when `scripts/fetch-models` has not run.
public func fetchedModel(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let p = graftHome + "/models/" + name
    guard FileManager.default.fileExists(atPath: p + "/.complete") else {
        XCTFail("\(name) is not in \(p): run scripts/fetch-models (make test does)", file: file, line: line)
        throw XCTSkip("model missing")
    }
    return p
}

/// The fetched SmolLM2-135M-Instruct GGUF file.
public func fetchedSmolLM2GGUF(file: StaticString = #filePath, line: UInt = #line) throws -> String {
    try fetchedModel("smollm2", file: file, line: line) + "/SmolLM2-135M-Instruct.Q4_1.gguf"
}

/// A fresh temporary folder, removed when the test ends.
public func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let d = NSTemporaryDirectory() + "graft-test-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
    return d
}

/// Writes a text file.
public func write(_ text: String, to path: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: path)) }

/// A fixture JSON file, by its path under the fixture root.
public func fixtureJSON(_ path: String) throws -> JSONValue {
    try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: referenceRoot + "/" + path))))
}

/// A JSON array of integers.
public func ints(_ v: JSONValue?) -> [Int] { v?.arrayValue?.compactMap { $0.intValue.map(Int.init) } ?? [] }

/// The `graft` executable: the test bundle sits in (or is) the build products folder that holds it.
public func graftExecutable(_ cls: AnyClass) -> String {
    let b = Bundle(for: cls).bundleURL
    return [b.appendingPathComponent("graft"), b.deletingLastPathComponent().appendingPathComponent("graft")]
        .map(\.path).first { FileManager.default.isExecutableFile(atPath: $0) } ?? b.path + "/graft"
}

/// Runs the `graft` executable with `args`: exit status, standard output, standard error.
public func runGraft(_ cls: AnyClass, _ args: [String]) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: graftExecutable(cls))
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
