import Foundation
import GraftFormats

/// `labels.json` beside a classification adapter: the class names in the order of the head's outputs,
/// and the data column they came from.
public enum AdapterLabels {
    public static let fileName = "labels.json"

    public static func write(_ names: [String], column: String, to directory: String) throws {
        let j = JSONValue.object([("label_column", .string(column)), ("labels", .array(names.map { .string($0) }))])
        try FileBytes.write(Data((j.serialized(pretty: true) + "\n").utf8), to: (directory as NSString).appendingPathComponent(fileName))
    }

    /// The saved names and column, or nil when the adapter has no labels.json.
    public static func read(_ adapter: String) throws -> (column: String?, names: [String])? {
        let path = (adapter as NSString).appendingPathComponent(fileName)
        guard let d = FileManager.default.contents(atPath: path) else { return nil }
        let j: JSONValue
        do { j = try JSONValue.parse([UInt8](d)) } catch { throw TrainingError("\(path): invalid JSON: \(error)") }
        guard let names = j["labels"]?.arrayValue?.compactMap(\.stringValue) else { throw TrainingError("\(path): missing 'labels'") }
        return (j["label_column"]?.stringValue, names)
    }
}
