import Foundation

// Jinja's filters and tests, and the Python methods of strings and dicts that chat templates call
// (`content.strip()`, `message.get('x')`, `tool.items()`), each as Jinja 3.1 on Python defines it.

extension JinjaRenderer {
    func argument(_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ index: Int, _ name: String) -> JinjaValue? {
        if let v = kwargs.first(where: { $0.0 == name })?.1 { return v }
        return index < args.count ? args[index] : nil
    }

    func string(_ v: JinjaValue, _ what: String) throws -> String {
        if case .string(let s) = v { return s }
        if case .undefined = v { throw undefinedError(v) }
        throw fail("\(what) needs a string, not \(v.typeName)")
    }

    // MARK: filters

    func filter(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        try charge(size(v))
        func arg(_ i: Int, _ n: String) -> JinjaValue? { argument(args, kwargs, i, n) }
        switch name {
        case "trim":
            let chars = try arg(0, "chars").flatMap { $0.isNone ? nil : try string($0, "trim's characters") }
            return .string(pythonStrip(try str(v), chars: chars, leading: true, trailing: true))
        case "tojson":
            let indent = arg(1, "indent").flatMap(integer)
            var itemSeparator = indent == nil ? ", " : ",", keySeparator = ": "
            if let seps = arg(2, "separators").flatMap(\.listItems), seps.count == 2, case .string(let a) = seps[0], case .string(let b) = seps[1] {
                itemSeparator = a; keySeparator = b
            }
            let text = try json(v, indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator,
                                sortKeys: arg(3, "sort_keys")?.truthy ?? false, level: 0)
            return .string(arg(0, "ensure_ascii")?.truthy == true ? asciiEscaped(text) : text)
        case "length", "count":
            switch v {
            case .string(let s): return .int(s.unicodeScalars.count)
            case .array(let a), .tuple(let a): return .int(a.count)
            case .object(let o): return .int(o.count)
            case .namespace(let ns): return .int(ns.values.count)
            case .undefined: return .int(0)
            default: throw fail("a \(v.typeName) has no length")
            }
        case "upper": return .string(try str(v).uppercased())
        case "lower": return .string(try str(v).lowercased())
        case "capitalize": return .string(capitalized(try str(v)))
        case "title": return .string(jinjaTitle(try str(v)))
        case "default", "d":
            let fallback = arg(0, "default_value") ?? .string("")
            if case .undefined = v { return fallback }
            if arg(1, "boolean")?.truthy == true && !v.truthy { return fallback }
            return v
        case "first":
            if case .undefined = v { throw undefinedError(v) }
            return try iterate(v).first ?? .undefined("first of an empty sequence")
        case "last":
            if case .undefined = v { throw undefinedError(v) }
            return try iterate(v).last ?? .undefined("last of an empty sequence")
        case "join":
            var items = try iterate(v)
            if let a = arg(1, "attribute") { items = try items.map { try attribute($0, try str(a)) } }
            let parts = try items.map(str)
            let separator = try arg(0, "d").map(str) ?? ""
            try budget(parts.reduce(0) { $0 + $1.unicodeScalars.count })
            return .string(parts.joined(separator: separator))
        case "items":
            switch v {
            case .object(let o): return .array(o.map { .tuple([.string($0.0), $0.1]) })
            case .namespace(let ns): return .array(ns.values.map { .tuple([.string($0.0), $0.1]) })
            case .undefined: return .array([])
            default: throw fail("items needs a dict, not \(v.typeName)")
            }
        case "dictsort":
            guard case .object(let o) = v else { throw fail("dictsort needs a dict, not \(v.typeName)") }
            let byValue = try arg(2, "by").map(str) == "value"
            var pairs = o
            try sortValues(&pairs) { byValue ? $0.1 : .string($0.0.lowercased()) }
            if arg(3, "reverse")?.truthy == true { pairs.reverse() }
            return .array(pairs.map { .tuple([.string($0.0), $0.1]) })
        case "list": return .array(try iterate(v))
        case "string": return .string(try str(v))
        case "safe", "escape", "e", "forceescape":
            if name == "safe" { return v }
            return .string(try str(v).replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&#34;").replacingOccurrences(of: "'", with: "&#39;"))
        case "int":
            let fallback = arg(0, "default") ?? .int(0)
            switch v {
            case .int: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite && abs(d) < 9.2e18 ? .int(Int(d)) : fallback
            case .string(let s):
                let t = s.trimmingCharacters(in: .whitespaces)
                if let i = Int(t) { return .int(i) }
                if let d = Double(t), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return fallback
            default: return fallback
            }
        case "float":
            let fallback = arg(0, "default") ?? .double(0)
            switch v {
            case .double: return v
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .string(let s): return Double(s.trimmingCharacters(in: .whitespaces)).map { .double($0) } ?? fallback
            default: return fallback
            }
        case "abs":
            switch v {
            case .int(let i): guard i != .min else { throw fail("integer overflow") }; return .int(abs(i))
            case .double(let d): return .double(abs(d))
            default: throw fail("abs needs a number, not \(v.typeName)")
            }
        case "round":
            guard let x = number(v) else { throw fail("round needs a number, not \(v.typeName)") }
            let precision = arg(0, "precision").flatMap(integer) ?? 0
            guard (-300...300).contains(precision) else { throw fail("round's precision is out of range") }
            let method = try arg(1, "method").map(str) ?? "common"
            let scale = pow(10, Double(precision))
            let scaled = x * scale
            let r: Double = method == "floor" ? scaled.rounded(.down) : method == "ceil" ? scaled.rounded(.up) : scaled.rounded(.toNearestOrEven)
            return .double(r / scale)
        case "replace":
            let s = try str(v), old = try str(arg(0, "old") ?? .string("")), new = try str(arg(1, "new") ?? .string(""))
            return .string(try pythonReplace(s, old, new, count: arg(2, "count").flatMap(integer)))
        case "reverse":
            if case .string(let s) = v { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .array(try iterate(v).reversed())
        case "sort":
            var items = try iterate(v)
            let attr = try arg(2, "attribute").map(str)
            let caseSensitive = arg(1, "case_sensitive")?.truthy ?? false
            try sortValues(&items) { item in
                let key = try attr.map { try attribute(item, $0) } ?? item
                if !caseSensitive, case .string(let s) = key { return .string(s.lowercased()) }
                return key
            }
            if arg(0, "reverse")?.truthy == true { items.reverse() }
            return .array(items)
        case "unique":
            var seen: [JinjaValue] = []
            for x in try iterate(v) where !seen.contains(where: { equal($0, x) }) { try step(); seen.append(x) }
            return .array(seen)
        case "min", "max":
            var items = try iterate(v)
            guard !items.isEmpty else { return .undefined("\(name) of an empty sequence") }
            try sortValues(&items) { $0 }
            return name == "min" ? items[0] : items[items.count - 1]
        case "sum":
            var total: JinjaValue = arg(1, "start") ?? .int(0)
            let attr = try arg(0, "attribute").map(str)
            for x in try iterate(v) { total = try binary("+", total, try attr.map { try attribute(x, $0) } ?? x) }
            return total
        case "attr": return try attribute(v, try str(arg(0, "name") ?? .string("")))
        case "indent":
            let width: String
            switch arg(0, "width") { case .string(let s)?: width = s; case let w?: width = String(repeating: " ", count: max(0, min(integer(w) ?? 4, 256))); case nil: width = "    " }
            let first = arg(1, "first")?.truthy ?? false, blank = arg(2, "blank")?.truthy ?? false
            let lines = try str(v).components(separatedBy: "\n")
            let body = lines.enumerated().map { k, l -> String in
                if k == 0 { return first ? width + l : l }
                return (l.isEmpty && !blank) ? l : width + l
            }
            return .string(body.joined(separator: "\n"))
        case "selectattr", "rejectattr", "select", "reject":
            let byAttribute = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            let attr = byAttribute ? try str(args.first ?? .undefined("the attribute")) : nil
            let rest = Array(args.dropFirst(byAttribute ? 1 : 0))
            let testName = try rest.first.map(str)
            let testArgs = Array(rest.dropFirst())
            return .array(try iterate(v).filter { item in
                try step()
                let x = try attr.map { try attribute(item, $0) } ?? item
                let passes = try testName.map { try test($0, x, testArgs) } ?? x.truthy
                return passes == keep
            })
        case "map":
            let items = try iterate(v)
            if let a = kwargs.first(where: { $0.0 == "attribute" })?.1 {
                let fallback = kwargs.first(where: { $0.0 == "default" })?.1
                return .array(try items.map { item in
                    let x = try attribute(item, try str(a))
                    if case .undefined = x, let fallback { return fallback }
                    return x
                })
            }
            guard let f = args.first else { throw fail("map needs a filter name or attribute=") }
            let filterName = try str(f)
            return .array(try items.map { try filter(filterName, $0, Array(args.dropFirst()), []) })
        case "batch":
            guard let n = arg(0, "linecount").flatMap(integer), n > 0 else { throw fail("batch needs a positive size") }
            let items = try iterate(v)
            return .array(stride(from: 0, to: items.count, by: n).map { .array(Array(items[$0..<min($0 + n, items.count)])) })
        case "wordcount": return .int(try str(v).split(whereSeparator: { $0.isWhitespace }).count)
        case "center":
            let s = try str(v), width = arg(0, "width").flatMap(integer) ?? 80
            let pad = max(0, min(width, limits.outputCharacters) - s.unicodeScalars.count)
            return .string(String(repeating: " ", count: pad / 2) + s + String(repeating: " ", count: pad - pad / 2))
        default:
            throw fail("the filter '\(name)' is not supported")
        }
    }

    /// Python's `sorted` with a key; values of different kinds refuse to compare, as in Python.
    func sortValues<T>(_ items: inout [T], key: (T) throws -> JinjaValue) throws {
        try charge(16 * items.count * max(1, Int.bitWidth - items.count.leadingZeroBitCount))  // n log n comparisons
        let keyed = try items.map { (try key($0), $0) }
        var failure: Error? = nil
        let sorted = keyed.enumerated().sorted { a, b in
            if failure != nil { return false }
            do {
                if try compare(a.element.0, b.element.0, "<") { return true }
                if try compare(b.element.0, a.element.0, "<") { return false }
                return a.offset < b.offset
            } catch { failure = error; return false }
        }
        if let failure { throw failure }
        items = sorted.map { $0.element.1 }
    }

    // MARK: tests

    func test(_ name: String, _ v: JinjaValue, _ args: [JinjaValue]) throws -> Bool {
        switch name {
        case "defined": if case .undefined = v { return false }; return true
        case "undefined": if case .undefined = v { return true }; return false
        case "none": return v.isNone
        case "boolean": if case .bool = v { return true }; return false
        case "true": if case .bool(true) = v { return true }; return false
        case "false": if case .bool(false) = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "number": switch v { case .int, .double, .bool: return true; default: return false }
        case "string": if case .string = v { return true }; return false
        case "mapping": switch v { case .object: return true; default: return false }
        case "iterable", "sequence": switch v { case .string, .array, .tuple, .object, .namespace: return true; default: return false }
        case "callable": switch v { case .macro, .function: return true; default: return false }
        case "equalto", "eq", "==", "sameas":
            guard let x = args.first else { throw fail("'\(name)' needs a value to compare with") }
            return equal(v, x)
        case "ne", "!=": guard let x = args.first else { throw fail("'ne' needs a value") }; return !equal(v, x)
        case "lt", "<", "le", "<=", "gt", ">", "ge", ">=":
            guard let x = args.first else { throw fail("'\(name)' needs a value") }
            let op = ["lt": "<", "le": "<=", "gt": ">", "ge": ">="][name] ?? name
            return try compare(v, x, op)
        case "in": guard let x = args.first else { throw fail("'in' needs a container") }; return try contains(x, v)
        case "even", "odd":
            guard let i = integer(v) else { throw fail("'\(name)' needs an integer, not \(v.typeName)") }
            return (i % 2 == 0) == (name == "even")
        case "divisibleby":
            guard let i = integer(v), let n = args.first.flatMap(integer), n != 0 else { throw fail("'divisibleby' needs integers and a divisor that is not zero") }
            return i % n == 0
        case "lower": let s = try str(v); return s == s.lowercased()
        case "upper": let s = try str(v); return s == s.uppercased()
        default: throw fail("the test '\(name)' is not supported")
        }
    }

    // MARK: methods

    /// A Python method of a string or dict, or nil when `name` is not one (then it is an attribute).
    func method(_ receiver: JinjaValue, _ name: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue? {
        try charge(size(receiver))
        func arg(_ i: Int, _ n: String) -> JinjaValue? { argument(args, kwargs, i, n) }
        switch receiver {
        case .string(let s):
            switch name {
            case "strip", "lstrip", "rstrip":
                let chars = try arg(0, "chars").flatMap { $0.isNone ? nil : try string($0, name) }
                return .string(pythonStrip(s, chars: chars, leading: name != "rstrip", trailing: name != "lstrip"))
            case "split", "rsplit":
                let sep = try arg(0, "sep").flatMap { $0.isNone ? nil : try string($0, "split") }
                let maxsplit = arg(1, "maxsplit").flatMap(integer) ?? -1
                return .array(try pythonSplit(s, sep, maxsplit: maxsplit, fromRight: name == "rsplit").map { .string($0) })
            case "splitlines":
                return .array(s.split(omittingEmptySubsequences: false, whereSeparator: { $0.isNewline }).map { .string(String($0)) }.dropLastIfEmpty(s))
            case "startswith", "endswith":
                guard let a = arg(0, "prefix") else { throw fail("\(name) needs an argument") }
                let options: [String] = try { if let xs = a.listItems { return try xs.map { try string($0, name) } }; return [try string(a, name)] }()
                return .bool(options.contains { name == "startswith" ? s.unicodeScalars.starts(with: $0.unicodeScalars) : s.unicodeScalars.reversed().starts(with: $0.unicodeScalars.reversed()) })
            case "upper": return .string(s.uppercased())
            case "lower": return .string(s.lowercased())
            case "title": return .string(pythonTitle(s))
            case "capitalize": return .string(capitalized(s))
            case "replace":
                return .string(try pythonReplace(s, try string(arg(0, "old") ?? JinjaValue.none, "replace"), try string(arg(1, "new") ?? JinjaValue.none, "replace"),
                                                 count: arg(2, "count").flatMap(integer)))
            case "find", "rfind", "count", "index":
                let sub = Array(try string(arg(0, "sub") ?? JinjaValue.none, name).unicodeScalars), chars = Array(s.unicodeScalars)
                var hits: [Int] = []
                var k = 0
                while k + sub.count <= chars.count {
                    try step()
                    if Array(chars[k..<k + sub.count]) == sub { hits.append(k); k += max(1, sub.count) } else { k += 1 }
                }
                switch name {
                case "count": return .int(hits.count)
                case "rfind": return .int(hits.last ?? -1)
                case "index": guard let h = hits.first else { throw fail("substring not found") }; return .int(h)
                default: return .int(hits.first ?? -1)
                }
            case "join":
                let parts = try iterate(arg(0, "iterable") ?? .array([])).map { try string($0, "join") }
                return .string(parts.joined(separator: s))
            case "isdigit": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType == .decimal || $0.properties.numericType == .digit })
            case "isspace": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(isPythonSpace))
            case "isalpha": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic })
            default: return nil
            }
        case .object(let o):
            switch name {
            case "items": return .array(o.map { .tuple([.string($0.0), $0.1]) })
            case "keys": return .array(o.map { .string($0.0) })
            case "values": return .array(o.map(\.1))
            case "get":
                let key = try str(arg(0, "key") ?? JinjaValue.none)
                return o.first { $0.0 == key }?.1 ?? arg(1, "default") ?? JinjaValue.none
            default: return nil
            }
        case .array, .tuple:
            if ["append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"].contains(name) {
                throw fail("a template cannot change a list (\(name)); transformers renders in an immutable sandbox")
            }
            return nil
        default: return nil
        }
    }

    // MARK: Python string helpers

    func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    func pythonStrip(_ s: String, chars: String?, leading: Bool, trailing: Bool) -> String {
        let set = chars.map { Set($0.unicodeScalars) }
        let drop: (Unicode.Scalar) -> Bool = { c in set.map { $0.contains(c) } ?? self.isPythonSpace(c) }
        var scalars = Array(s.unicodeScalars)[...]
        if leading { while let f = scalars.first, drop(f) { scalars.removeFirst() } }
        if trailing { while let l = scalars.last, drop(l) { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    func pythonSplit(_ s: String, _ sep: String?, maxsplit: Int, fromRight: Bool) throws -> [String] {
        let chars = Array(s.unicodeScalars)
        func text(_ r: ArraySlice<Unicode.Scalar>) -> String { String(String.UnicodeScalarView(r)) }
        guard let sep else {
            // runs of whitespace; leading and trailing whitespace give no empty pieces
            var words: [ArraySlice<Unicode.Scalar>] = []
            var k = 0
            while k < chars.count {
                while k < chars.count, isPythonSpace(chars[k]) { k += 1 }
                guard k < chars.count else { break }
                if maxsplit >= 0, words.count == maxsplit, !fromRight {
                    var end = chars.count
                    while end > k, isPythonSpace(chars[end - 1]) { end -= 1 }
                    words.append(chars[k..<end]); k = chars.count; break
                }
                let start = k
                while k < chars.count, !isPythonSpace(chars[k]) { k += 1 }
                words.append(chars[start..<k])
            }
            if fromRight, maxsplit >= 0, words.count > maxsplit + 1 {
                let keep = words.suffix(maxsplit)
                let headEnd = keep.first.map { $0.startIndex } ?? chars.count
                var end = headEnd
                while end > 0, isPythonSpace(chars[end - 1]) { end -= 1 }
                var start = 0
                while start < end, isPythonSpace(chars[start]) { start += 1 }
                return [text(chars[start..<end])] + keep.map(text)
            }
            return words.map(text)
        }
        let sepChars = Array(sep.unicodeScalars)
        guard !sepChars.isEmpty else { throw fail("empty separator") }
        var cuts: [Int] = []
        var k = 0
        while k + sepChars.count <= chars.count {
            if chars[k..<k + sepChars.count].elementsEqual(sepChars) { cuts.append(k); k += sepChars.count } else { k += 1 }
        }
        if maxsplit >= 0, cuts.count > maxsplit { cuts = fromRight ? Array(cuts.suffix(maxsplit)) : Array(cuts.prefix(maxsplit)) }
        var pieces: [String] = []
        var start = 0
        for c in cuts { pieces.append(text(chars[start..<c])); start = c + sepChars.count }
        pieces.append(text(chars[start...]))
        return pieces
    }

    func pythonReplace(_ s: String, _ old: String, _ new: String, count: Int?) throws -> String {
        let limit = count.flatMap { $0 < 0 ? nil : $0 }
        if old.isEmpty {
            // Python inserts `new` between characters (and at both ends)
            let chars = Array(s.unicodeScalars)
            var out = "", n = 0
            for k in 0...chars.count {
                if limit.map({ n < $0 }) ?? true { out += new; n += 1 }
                if k < chars.count { out.unicodeScalars.append(chars[k]) }
            }
            try budget(out.unicodeScalars.count)
            return out
        }
        let pieces = try pythonSplit(s, old, maxsplit: limit ?? -1, fromRight: false)
        try budget(pieces.reduce(0) { $0 + $1.unicodeScalars.count } + new.unicodeScalars.count * max(0, pieces.count - 1))
        return pieces.joined(separator: new)
    }

    func capitalized(_ s: String) -> String {
        guard let f = s.unicodeScalars.first else { return s }
        return String(f).uppercased() + String(String.UnicodeScalarView(s.unicodeScalars.dropFirst())).lowercased()
    }

    /// Python's `str.title()`: a letter after a non-letter starts a word.
    func pythonTitle(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            let cased = c.properties.isCased
            out += previousCased ? String(c).lowercased() : String(c).uppercased()
            previousCased = cased
        }
        return out
    }

    /// Jinja's `title` filter: words split at whitespace, '-', and opening brackets.
    func jinjaTitle(_ s: String) -> String {
        var out = ""
        var startOfWord = true
        for c in s.unicodeScalars {
            if isPythonSpace(c) || "-({[<".unicodeScalars.contains(c) { out.unicodeScalars.append(c); startOfWord = true; continue }
            out += startOfWord ? String(c).uppercased() : String(c).lowercased()
            startOfWord = false
        }
        return out
    }

    func asciiEscaped(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            if c.isASCII { out.unicodeScalars.append(c); continue }
            for unit in String(c).utf16 { out += String(format: "\\u%04x", unit) }
        }
        return out
    }
}

private extension Array where Element == JinjaValue {
    /// `splitlines` gives no empty last piece for a trailing newline.
    func dropLastIfEmpty(_ s: String) -> [JinjaValue] {
        if let last = s.last, last.isNewline, case .string("")? = self.last { return Array(dropLast()) }
        if s.isEmpty { return [] }
        return self
    }
}
