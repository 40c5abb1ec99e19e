import Foundation
import GraftFormats

/// An error in a dataset file, naming the file and line (1-based) when known.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let file: String, line: Int?, message: String
    public init(_ file: String, line: Int? = nil, _ message: String) { self.file = file; self.line = line; self.message = message }
    public var description: String { line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)" }
}

/// One record of a dataset file: named fields and where it came from.
public struct Record: Sendable {
    public let fields: [String: JSONValue]
    /// The file's 1-based line the record starts on.
    public let line: Int
    public let file: String

    public init(fields: [String: JSONValue], line: Int, file: String) { self.fields = fields; self.line = line; self.file = file }

    public subscript(_ key: String) -> JSONValue? { fields[key] }

    /// A field as text: strings as they are, numbers and booleans printed; nil when absent or null.
    public func text(_ key: String) -> String? {
        switch fields[key] {
        case let .string(s)?: return s
        case let .int(i)?: return String(i)
        case let .double(d)?: return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case let .bool(b)?: return String(b)
        default: return nil
        }
    }

    public func error(_ message: String) -> DataError { DataError(file, line: line, message) }
}

/// A dataset file read into records: JSON Lines (one object per line) or CSV (RFC 4180: quoted
/// fields, doubled quotes, newlines inside quotes; a UTF-8 byte-order mark is skipped).
public enum Table {
    /// Reads `.jsonl`/`.json` (JSON Lines) or `.csv`/`.tsv`. CSV columns are named by the header row,
    /// or "0", "1", … with `header: false`.
    public static func read(_ path: String, header: Bool = true) throws -> [Record] {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError(path, "cannot read the file") }
        let ext = (path as NSString).pathExtension.lowercased()
        switch ext {
        case "jsonl", "json", "ndjson": return try jsonLines(data, file: path)
        case "csv": return try csv(data, file: path, separator: UInt8(ascii: ","), header: header)
        case "tsv": return try csv(data, file: path, separator: UInt8(ascii: "\t"), header: header)
        default: throw DataError(path, "unknown dataset format '.\(ext)' (use .jsonl or .csv)")
        }
    }

    static func jsonLines(_ data: Data, file: String) throws -> [Record] {
        var out: [Record] = []
        let bytes = [UInt8](data)
        var start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var line = 1
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
            let slice = Array(bytes[start..<end])
            if !slice.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) {
                guard String(validating: slice, as: UTF8.self) != nil else { throw DataError(file, line: line, "invalid UTF-8") }
                let v: JSONValue
                do { v = try JSONValue.parse(slice) } catch { throw DataError(file, line: line, "invalid JSON: \(error)") }
                guard let obj = v.objectValue else { throw DataError(file, line: line, "expected a JSON object, found \(v.serialized().prefix(40))") }
                var f: [String: JSONValue] = [:]
                for (k, x) in obj { f[k] = x }
                out.append(Record(fields: f, line: line, file: file))
            }
            start = end + 1
            line += 1
        }
        return out
    }

    static func csv(_ data: Data, file: String, separator: UInt8, header: Bool) throws -> [Record] {
        let bytes = [UInt8](data)
        var i = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var line = 1
        var rows: [(line: Int, cells: [String])] = []
        func text(_ b: [UInt8], _ at: Int) throws -> String {
            guard let s = String(validating: b, as: UTF8.self) else { throw DataError(file, line: at, "invalid UTF-8") }
            return s
        }
        while i < bytes.count {
            let rowLine = line
            var cells: [String] = []
            var endOfRow = false
            while !endOfRow {
                var cell: [UInt8] = []
                if i < bytes.count && bytes[i] == UInt8(ascii: "\"") {
                    i += 1
                    var closed = false
                    while i < bytes.count {
                        let c = bytes[i]
                        if c == UInt8(ascii: "\"") {
                            if i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\"") { cell.append(c); i += 2; continue }
                            i += 1; closed = true; break
                        }
                        if c == UInt8(ascii: "\n") { line += 1 }
                        cell.append(c); i += 1
                    }
                    guard closed else { throw DataError(file, line: rowLine, "unterminated quoted field") }
                    // Only a separator or the end of the row may follow a closing quote.
                    if i < bytes.count && bytes[i] != separator && bytes[i] != UInt8(ascii: "\n") && bytes[i] != UInt8(ascii: "\r") {
                        throw DataError(file, line: line, "unexpected character after a closing quote")
                    }
                } else {
                    while i < bytes.count && bytes[i] != separator && bytes[i] != UInt8(ascii: "\n") {
                        cell.append(bytes[i]); i += 1
                    }
                    if cell.last == UInt8(ascii: "\r") { cell.removeLast() }
                }
                cells.append(try text(cell, rowLine))
                if i < bytes.count && bytes[i] == separator { i += 1; continue }
                if i < bytes.count && bytes[i] == UInt8(ascii: "\r") { i += 1 }
                if i < bytes.count && bytes[i] == UInt8(ascii: "\n") { i += 1; line += 1 }
                endOfRow = true
            }
            if cells.count == 1 && cells[0].isEmpty { continue }  // blank line
            rows.append((rowLine, cells))
        }
        var names: [String]
        if header {
            guard let first = rows.first else { return [] }
            names = first.cells.map { $0.trimmingCharacters(in: .whitespaces) }
            rows.removeFirst()
            if Set(names).count != names.count { throw DataError(file, line: first.line, "duplicate column names in the header") }
        } else {
            names = (0..<(rows.map(\.cells.count).max() ?? 0)).map(String.init)
        }
        return try rows.map { row in
            guard row.cells.count == names.count else {
                throw DataError(file, line: row.line, "\(row.cells.count) fields, expected \(names.count) (\(names.joined(separator: ", ")))")
            }
            var f: [String: JSONValue] = [:]
            for (n, c) in zip(names, row.cells) { f[n] = .string(c) }
            return Record(fields: f, line: row.line, file: file)
        }
    }
}
