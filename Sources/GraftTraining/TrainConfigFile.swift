import Foundation
import GraftFormats

/// A `graft train --config` YAML file: a mapping of the command's option names (`batch_size` or
/// `batch-size`) to values. Command-line flags override it.
public struct TrainConfigFile: Sendable {
    public let path: String
    public let values: [String: JSONValue]

    public init(path: String, allowedKeys: [String]) throws {
        self.path = path
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw TrainingError("\(path): cannot read the config file") }
        let any: Any?
        do { any = try YAMLValues.load(text, source: path) } catch let e as FormatError { throw TrainingError(e.description) }
        guard let map = any as? [String: Any] else { throw TrainingError("\(path): expected a mapping of option names to values") }
        var v: [String: JSONValue] = [:]
        for (k, x) in map {
            let key = k.replacingOccurrences(of: "-", with: "_")
            guard allowedKeys.contains(key) else {
                throw TrainingError("\(path): unknown key '\(k)' (valid keys: \(allowedKeys.sorted().joined(separator: ", ")))")
            }
            v[key] = try Self.json(x, key: k, path: path)
        }
        values = v
    }

    static func json(_ x: Any, key: String, path: String) throws -> JSONValue {
        switch x {
        case let b as Bool: return .bool(b)
        case let i as Int: return .int(Int64(i))
        case let d as Double: return .double(d)
        case let s as String: return .string(s)
        case let a as [Any]: return .array(try a.map { try json($0, key: key, path: path) })
        default: throw TrainingError("\(path): '\(key)' has a value of an unsupported kind")
        }
    }

    public func string(_ k: String) throws -> String? {
        guard let v = values[k] else { return nil }
        switch v {
        case let .string(s): return s
        case let .int(i): return String(i)
        case let .double(d): return String(d)
        case let .bool(b): return String(b)
        default: throw TrainingError("\(path): '\(k)' must be a single value")
        }
    }
    public func int(_ k: String) throws -> Int? {
        guard let v = values[k] else { return nil }
        guard let i = v.intValue else { throw TrainingError("\(path): '\(k)' must be an integer") }
        return Int(i)
    }
    public func double(_ k: String) throws -> Double? {
        guard let v = values[k] else { return nil }
        guard let d = v.doubleValue else { throw TrainingError("\(path): '\(k)' must be a number") }
        return d
    }
    public func bool(_ k: String) throws -> Bool? {
        guard let v = values[k] else { return nil }
        guard let b = v.boolValue else { throw TrainingError("\(path): '\(k)' must be true or false") }
        return b
    }
    /// A list, or a comma-separated string.
    public func list(_ k: String) throws -> [String]? {
        guard let v = values[k] else { return nil }
        if let a = v.arrayValue { return try a.map { x in
            if let s = x.stringValue { return s }
            if let i = x.intValue { return String(i) }
            throw TrainingError("\(path): '\(k)' must be a list of names")
        } }
        return try string(k)?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    }
}
