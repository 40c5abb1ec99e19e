import Foundation
import GraftFormats
import XCTest

let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
/// The fixture root: `GRAFT_REFERENCE_DIR` when set, else the committed copy (layout of ../shared/fixtures).
var referenceRoot: String { ProcessInfo.processInfo.environment["GRAFT_REFERENCE_DIR"] ?? projectRoot + "/Tests/Fixtures/reference" }
var graftHome: String { ProcessInfo.processInfo.environment["GRAFT_HOME"] ?? (NSHomeDirectory() + "/.cache/graft") }

/// A fetched model's folder; fails the test (not skips) when `scripts/fetch-models` has not run.
func fetchedModel(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let p = graftHome + "/models/" + name
    guard FileManager.default.fileExists(atPath: p + "/.complete") else {
        XCTFail("\(name) is not in \(p): run scripts/fetch-models (make test does)", file: file, line: line)
        throw XCTSkip("model missing")
    }
    return p
}

/// A fixture JSON file.
func fixtureJSON(_ path: String) throws -> JSONValue {
    try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: referenceRoot + "/" + path))))
}

func ints(_ v: JSONValue?) -> [Int] { v?.arrayValue?.compactMap { $0.intValue.map(Int.init) } ?? [] }
