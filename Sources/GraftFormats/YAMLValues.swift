import Foundation
import Yams

/// YAML parsed into plain values (`[String: Any]`, `[Any]`, `String`, `Int`, `Double`, `Bool`, `NSNull`) for
/// the config readers, without Yams' own construction of `Any`, which a hostile file can crash or stall:
/// a mapping used as a key (`{a: 1}: x`) stops the process on a force-unwrap inside Yams, and aliases that
/// expand each other ("billion laughs", 420 bytes) ran for minutes. Here every key must be a plain value and
/// a document expands to at most `maxValues` values (a mergekit config has a few hundred). (libyaml limits nesting depth; Yams refuses duplicated keys.)
public enum YAMLValues {
    public static let maxValues = 10_000
    public static let maxAliases = 16

    private static func anchorByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
    }

    /// The document's root value, or nil for an empty document. Errors are `FormatError`s naming `source`.
    public static func load(_ text: String, source: String) throws -> Any? {
        // Yams' composer itself can run for minutes on aliases nested in aliases (28 s for a 392-byte mutation
        // of an alias bomb with a syntax error, found by fuzz-merge-config): refuse many alias references
        // before it sees them. A config uses a handful at most.
        let aliases = text.utf8.indices.filter { i in
            text.utf8[i] == UInt8(ascii: "*") && text.utf8.index(after: i) < text.utf8.endIndex
                && Self.anchorByte(text.utf8[text.utf8.index(after: i)])
        }.count
        guard aliases <= maxAliases else {
            throw FormatError(source, nil, "the YAML has \(aliases) alias references (*name); at most \(maxAliases) are read")
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch { throw FormatError(source, nil, "invalid YAML: \(error)") }
        guard let node else { return nil }
        var count = 0
        return try value(node, &count, source, path: "")
    }

    private static func value(_ node: Node, _ count: inout Int, _ source: String, path: String) throws -> Any {
        count += 1
        guard count <= maxValues else {
            throw FormatError(source, nil, "the YAML expands to more than \(maxValues) values (aliases repeating aliases?); a config needs far fewer")
        }
        switch node {
        case .scalar(let s):
            switch node.tag.rawValue {  // the tag the resolver gave the plain scalar
            case Tag.Name.null.rawValue: return NSNull()
            case Tag.Name.bool.rawValue: return node.bool ?? s.string
            case Tag.Name.int.rawValue: return Int(s.string) ?? Double(s.string) ?? s.string
            case Tag.Name.float.rawValue: return Double(s.string) ?? s.string
            default: return s.string
            }
        case .sequence(let seq):
            var out: [Any] = []
            for (i, v) in seq.enumerated() { out.append(try value(v, &count, source, path: path + "[\(i)]")) }
            return out
        case .mapping(let m):
            var out: [String: Any] = [:]
            for (k, v) in m {
                guard case .scalar(let key) = k else {
                    throw FormatError(source, path.isEmpty ? nil : path, "a mapping key must be a plain value, not a list or mapping")
                }
                out[key.string] = try value(v, &count, source, path: path.isEmpty ? key.string : path + "." + key.string)
            }
            return out
        case .alias:
            throw FormatError(source, path.isEmpty ? nil : path, "unresolved YAML alias")
        }
    }
}
