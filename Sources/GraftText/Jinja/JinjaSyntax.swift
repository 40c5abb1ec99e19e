import Foundation

// The Jinja subset HF chat templates are written in, read as transformers reads them: an environment with
// `trim_blocks` and `lstrip_blocks` on and the `loopcontrols` extension. This file turns template text into a
// tree (`JinjaTemplate.parse`); `JinjaInterpreter.swift` renders the tree.

/// A template that could not be read or rendered: the line it is on and what is wrong. `raised` is the
/// template's own `raise_exception(message)` — a conversation the template refuses, not a broken template.
public struct JinjaError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public let line: Int
    public let raised: Bool
    init(_ message: String, line: Int, raised: Bool = false) { self.message = message; self.line = line; self.raised = raised }
    public var description: String { raised ? message : "line \(line): \(message)" }
}

/// How far a template may go: nesting while parsing, calls while rendering, work and output in total.
/// Templates come with downloaded models, so rendering one must end, in bounded memory, whatever it says.
public struct JinjaLimits: Sendable {
    public var nesting = 100
    public var callDepth = 64
    public var steps = 2_000_000
    public var outputCharacters = 16 << 20
    public init() {}
}

enum JinjaLiteral: Sendable {
    case none, bool(Bool), int(Int), double(Double), string(String)
}

indirect enum JinjaExpr: Sendable {
    case literal(JinjaLiteral)
    case name(String)
    case list([JinjaExpr])
    case tuple([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    case attribute(JinjaExpr, String)
    case index(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
    case filter(JinjaExpr, String, [JinjaExpr], [(String, JinjaExpr)])
    case test(JinjaExpr, String, [JinjaExpr], negated: Bool)
    case unary(String, JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    case conditional(JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
}

indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr, line: Int)
    case branches([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode], line: Int)
    case loop(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode], line: Int)
    /// `set a = …`, `set a, b = …` (targets) or `set ns.attr = …` (attribute of a namespace).
    case assign(targets: [String], attribute: String?, JinjaExpr, line: Int)
    case assignBlock(String, [JinjaNode])
    case macro(String, parameters: [(String, JinjaExpr?)], body: [JinjaNode])
    case breakLoop(line: Int), continueLoop(line: Int)
}

/// A parsed template, ready to render any number of times.
public struct JinjaTemplate: Sendable {
    let nodes: [JinjaNode]
    public let limits: JinjaLimits

    public init(_ source: String, limits: JinjaLimits = JinjaLimits()) throws {
        self.limits = limits
        var lexer = JinjaLexer(source)
        var parser = JinjaParser(tokens: try lexer.tokens(), limits: limits)
        nodes = try parser.template()
    }
}

// MARK: - Lexer

enum JinjaToken: Equatable {
    case text(String)
    case outputBegin, outputEnd, statementBegin, statementEnd
    case name(String), string(String), int(Int), double(Double), op(String)
}

struct JinjaLexer {
    let s: [Unicode.Scalar]
    var i = 0
    var line = 1
    var out: [(JinjaToken, Int)] = []

    init(_ source: String) { s = Array(source.unicodeScalars) }

    func at(_ p: Int, _ lit: String) -> Bool {
        var k = p
        for c in lit.unicodeScalars { guard k < s.count, s[k] == c else { return false }; k += 1 }
        return true
    }

    func isSpace(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\u{0B}" || c == "\u{0C}" }

    mutating func tokens() throws -> [(JinjaToken, Int)] {
        var text: [Unicode.Scalar] = []
        var lineStarting = true      // the previous tag's end ate a newline (or this is the template's start)
        var stripNext = false        // the previous tag ended with "-": drop the whitespace that follows it
        func flush(_ text: inout [Unicode.Scalar], _ out: inout [(JinjaToken, Int)], _ line: Int) {
            if !text.isEmpty { var str = String.UnicodeScalarView(); str.append(contentsOf: text); out.append((.text(String(str)), line)) }
            text.removeAll()
        }
        while i < s.count {
            let c = s[i]
            if c == "{", i + 1 < s.count, s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" {
                let kind = s[i + 1]
                let marker = i + 2 < s.count ? s[i + 2] : " "
                if marker == "-" {
                    while let last = text.last, isSpace(last) { text.removeLast() }
                } else if kind != "{" && marker != "+" {
                    // lstrip_blocks: spaces and tabs from the start of the line up to a block or comment tag
                    let lineStart = text.lastIndex(of: "\n").map { $0 + 1 }
                    if lineStart != nil || lineStarting {
                        let from = lineStart ?? 0
                        if text[from...].allSatisfy({ $0 == " " || $0 == "\t" }) { text.removeSubrange(from...) }
                    }
                }
                flush(&text, &out, line)
                i += 2
                if marker == "-" || marker == "+" { i += 1 }
                var endedWithMinus = false
                if kind == "#" {
                    guard let end = find("#}") else { throw JinjaError("a comment is not closed with '#}'", line: line) }
                    for k in i..<end where s[k] == "\n" { line += 1 }
                    endedWithMinus = end > i && s[end - 1] == "-"
                    i = end + 2
                } else if kind == "%", let rawEnd = try rawBlock() {
                    i = rawEnd.next
                    endedWithMinus = rawEnd.minus
                } else {
                    out.append((kind == "{" ? .outputBegin : .statementBegin, line))
                    endedWithMinus = try expressionTokens(closing: kind == "{" ? "}}" : "%}")
                    out.append((kind == "{" ? .outputEnd : .statementEnd, line))
                }
                lineStarting = false
                stripNext = endedWithMinus
                if !endedWithMinus && kind != "{" && i < s.count && s[i] == "\n" {  // trim_blocks
                    i += 1; line += 1; lineStarting = true
                } else if !endedWithMinus && kind != "{" && i + 1 < s.count && s[i] == "\r" && s[i + 1] == "\n" {
                    i += 2; line += 1; lineStarting = true
                }
                continue
            }
            if stripNext {
                if isSpace(c) { if c == "\n" { line += 1 }; i += 1; continue }
                stripNext = false
            }
            if c == "\n" { line += 1 }
            text.append(c)
            i += 1
        }
        flush(&text, &out, line)
        return out
    }

    func find(_ lit: String) -> Int? {
        var k = i
        while k < s.count { if at(k, lit) { return k }; k += 1 }
        return nil
    }

    /// `{% raw %}…{% endraw %}`: the text between, untouched. Called just after `{%` (and its marker).
    mutating func rawBlock() throws -> (next: Int, minus: Bool)? {
        var k = i
        while k < s.count, isSpace(s[k]) { k += 1 }
        guard at(k, "raw") else { return nil }
        k += 3
        while k < s.count, isSpace(s[k]) { k += 1 }
        var minus = false
        if k < s.count, s[k] == "-" { minus = true; k += 1 }
        guard at(k, "%}") else { return nil }
        k += 2
        if minus { while k < s.count, isSpace(s[k]) { k += 1 } }
        let bodyStart = k
        var m = k
        while m < s.count {
            if at(m, "{%") {
                var e = m + 2
                if e < s.count, s[e] == "-" || s[e] == "+" { e += 1 }
                while e < s.count, isSpace(s[e]) { e += 1 }
                if at(e, "endraw") {
                    e += 6
                    while e < s.count, isSpace(s[e]) { e += 1 }
                    var endMinus = false
                    if e < s.count, s[e] == "-" { endMinus = true; e += 1 }
                    guard at(e, "%}") else { break }
                    var body = Array(s[bodyStart..<m])
                    if m + 2 < s.count, s[m + 2] == "-" { while let l = body.last, isSpace(l) { body.removeLast() } }
                    var str = String.UnicodeScalarView(); str.append(contentsOf: body)
                    out.append((.text(String(str)), line))
                    for c in s[i..<e] where c == "\n" { line += 1 }
                    return (e + 2, endMinus)
                }
            }
            m += 1
        }
        throw JinjaError("'raw' is not closed with 'endraw'", line: line)
    }

    static let operators = ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=",
                            "(", ")", "[", "]", "{", "}", ".", ",", ":", "|"]

    /// The tokens of one tag's expression, up to `closing` outside brackets. Returns whether it ended `-closing`.
    mutating func expressionTokens(closing: String) throws -> Bool {
        let start = line
        var depth = 0
        while true {
            while i < s.count, isSpace(s[i]) { if s[i] == "\n" { line += 1 }; i += 1 }
            guard i < s.count else { throw JinjaError("a tag is not closed with '\(closing)'", line: start) }
            if depth == 0 {
                if at(i, closing) { i += 2; return false }
                if s[i] == "-", at(i + 1, closing) { i += 3; return true }
                if s[i] == "+", at(i + 1, closing) { i += 3; return false }
            }
            let c = s[i]
            if c == "'" || c == "\"" {
                out.append((.string(try stringLiteral(quote: c)), line)); continue
            }
            if ("0"..."9").contains(c) { out.append((try number(), line)); continue }
            if c == "_" || c.properties.isAlphabetic {
                var name = String.UnicodeScalarView()
                while i < s.count, s[i] == "_" || s[i].properties.isAlphabetic || ("0"..."9").contains(s[i]) { name.append(s[i]); i += 1 }
                out.append((.name(String(name)), line)); continue
            }
            guard let op = Self.operators.first(where: { at(i, $0) }) else {
                throw JinjaError("unexpected character '\(c)'", line: line)
            }
            if op == "(" || op == "[" || op == "{" { depth += 1 }
            if op == ")" || op == "]" || op == "}" { depth = max(0, depth - 1) }
            i += op.unicodeScalars.count
            out.append((.op(op), line))
        }
    }

    mutating func number() throws -> JinjaToken {
        var digits = ""
        var isFloat = false
        while i < s.count {
            let c = s[i]
            if ("0"..."9").contains(c) { digits.unicodeScalars.append(c) }
            else if c == "_" {}
            else if c == ".", !isFloat, i + 1 < s.count, ("0"..."9").contains(s[i + 1]) { isFloat = true; digits += "." }
            else if (c == "e" || c == "E"), i + 1 < s.count, ("0"..."9").contains(s[i + 1]) || ((s[i + 1] == "-" || s[i + 1] == "+") && i + 2 < s.count && ("0"..."9").contains(s[i + 2])) {
                isFloat = true; digits += "e"; i += 1; digits.unicodeScalars.append(s[i])
            } else { break }
            i += 1
        }
        if isFloat, let d = Double(digits) { return .double(d) }
        guard let n = Int(digits) else { throw JinjaError("the number \(digits) is too large", line: line) }
        return .int(n)
    }

    /// A quoted string with Python's escapes.
    mutating func stringLiteral(quote: Unicode.Scalar) throws -> String {
        let start = line
        i += 1
        var v = String.UnicodeScalarView()
        while i < s.count {
            let c = s[i]
            if c == quote { i += 1; return String(v) }
            if c == "\n" { line += 1 }
            if c == "\\", i + 1 < s.count {
                let e = s[i + 1]
                i += 2
                switch e {
                case "n": v.append("\n")
                case "t": v.append("\t")
                case "r": v.append("\r")
                case "0": v.append("\0")
                case "b": v.append("\u{08}")
                case "f": v.append("\u{0C}")
                case "v": v.append("\u{0B}")
                case "a": v.append("\u{07}")
                case "\\", "'", "\"": v.append(e)
                case "\n": line += 1
                case "x", "u", "U":
                    let width = e == "x" ? 2 : e == "u" ? 4 : 8
                    guard i + width <= s.count, let code = UInt32(String(String.UnicodeScalarView(s[i..<i + width])), radix: 16),
                          let scalar = Unicode.Scalar(code) else { throw JinjaError("a bad \\\(e) escape in a string", line: line) }
                    v.append(scalar); i += width
                default: v.append("\\"); v.append(e)
                }
                continue
            }
            v.append(c); i += 1
        }
        throw JinjaError("a string is not closed", line: start)
    }
}

// MARK: - Parser

struct JinjaParser {
    let tokens: [(JinjaToken, Int)]
    let limits: JinjaLimits
    var p = 0
    var depth = 0

    init(tokens: [(JinjaToken, Int)], limits: JinjaLimits) { self.tokens = tokens; self.limits = limits }

    var current: JinjaToken? { p < tokens.count ? tokens[p].0 : nil }
    var line: Int { p < tokens.count ? tokens[p].1 : (tokens.last?.1 ?? 1) }

    func error(_ m: String) -> JinjaError { JinjaError(m, line: line) }

    mutating func nest() throws {
        depth += 1
        if depth > limits.nesting { throw error("the template nests deeper than \(limits.nesting) levels") }
    }

    func isName(_ n: String) -> Bool { current == .name(n) }
    func isOp(_ o: String) -> Bool { current == .op(o) }
    mutating func take(_ o: String) -> Bool { if isOp(o) { p += 1; return true }; return false }
    mutating func takeName(_ n: String) -> Bool { if isName(n) { p += 1; return true }; return false }
    mutating func expect(_ o: String) throws { guard take(o) else { throw error("expected '\(o)'\(describeCurrent)") } }
    var describeCurrent: String {
        switch current {
        case nil: return " at the end of the template"
        case .name(let n)?: return ", found '\(n)'"
        case .op(let o)?: return ", found '\(o)'"
        case .statementEnd?, .outputEnd?: return " before the tag's end"
        default: return ""
        }
    }
    mutating func identifier() throws -> String {
        guard case .name(let n)? = current else { throw error("expected a name\(describeCurrent)") }
        p += 1
        return n
    }

    mutating func template() throws -> [JinjaNode] {
        let (nodes, end) = try body(until: [])
        if let end { throw JinjaError("'\(end)' without its opening tag", line: line) }
        return nodes
    }

    /// Nodes up to a statement whose first word is in `until` (returned, its tag's first word consumed).
    mutating func body(until: Set<String>) throws -> ([JinjaNode], String?) {
        try nest(); defer { depth -= 1 }
        var nodes: [JinjaNode] = []
        while let t = current {
            switch t {
            case .text(let s): nodes.append(.text(s)); p += 1
            case .outputBegin:
                let l = line
                p += 1
                let e = try expression()
                guard current == .outputEnd else { throw error("expected '}}'\(describeCurrent)") }
                p += 1
                nodes.append(.output(e, line: l))
            case .statementBegin:
                p += 1
                guard case .name(let word)? = current else { throw error("expected a statement\(describeCurrent)") }
                if until.contains(word) { p += 1; return (nodes, word) }
                if ["endif", "endfor", "else", "elif", "endmacro", "endset", "endgeneration", "endraw"].contains(word) {
                    throw error("'\(word)' without its opening tag")
                }
                nodes.append(contentsOf: try statement(word))
            default: throw error("unexpected token")
            }
        }
        if let first = until.first { throw error("the template ends inside a block (expected \(until.sorted().joined(separator: " or ")), e.g. '\(first)')") }
        return (nodes, nil)
    }

    mutating func endStatement() throws {
        guard current == .statementEnd else { throw error("expected '%}'\(describeCurrent)") }
        p += 1
    }

    mutating func statement(_ word: String) throws -> [JinjaNode] {
        let l = line
        p += 1
        switch word {
        case "if":
            var branches: [(JinjaExpr, [JinjaNode])] = []
            var condition = try expression()
            try endStatement()
            while true {
                let (nodes, end) = try body(until: ["elif", "else", "endif"])
                branches.append((condition, nodes))
                if end == "elif" { condition = try expression(); try endStatement(); continue }
                var otherwise: [JinjaNode] = []
                if end == "else" {
                    try endStatement()
                    let (nodes, end2) = try body(until: ["endif"])
                    _ = end2
                    otherwise = nodes
                }
                try endStatement()
                return [.branches(branches, otherwise: otherwise, line: l)]
            }
        case "for":
            var targets = [try identifier()]
            while take(",") { targets.append(try identifier()) }
            guard takeName("in") else { throw error("expected 'in' in the for loop\(describeCurrent)") }
            let iterable = try conditionalFree()
            var condition: JinjaExpr? = nil
            if takeName("if") { condition = try conditionalFree() }
            _ = takeName("recursive")
            try endStatement()
            let (nodes, end) = try body(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            if end == "else" {
                try endStatement()
                otherwise = try body(until: ["endfor"]).0
            }
            try endStatement()
            return [.loop(targets: targets, iterable: iterable, condition: condition, body: nodes, otherwise: otherwise, line: l)]
        case "set":
            let first = try identifier()
            if take(".") {
                let attribute = try identifier()
                try expect("=")
                let value = try expression()
                try endStatement()
                return [.assign(targets: [first], attribute: attribute, value, line: l)]
            }
            var targets = [first]
            while take(",") { targets.append(try identifier()) }
            if current == .statementEnd, targets.count == 1 {
                p += 1
                let (nodes, _) = try body(until: ["endset"])
                try endStatement()
                return [.assignBlock(first, nodes)]
            }
            try expect("=")
            let value = try expression()
            try endStatement()
            return [.assign(targets: targets, attribute: nil, value, line: l)]
        case "macro":
            let name = try identifier()
            try expect("(")
            var parameters: [(String, JinjaExpr?)] = []
            while !take(")") {
                let n = try identifier()
                parameters.append((n, take("=") ? try expression() : nil))
                if !take(",") { try expect(")"); break }
            }
            try endStatement()
            let (nodes, _) = try body(until: ["endmacro"])
            if case .name? = current { p += 1 }
            try endStatement()
            return [.macro(name, parameters: parameters, body: nodes)]
        case "break": try endStatement(); return [.breakLoop(line: l)]
        case "continue": try endStatement(); return [.continueLoop(line: l)]
        case "generation":
            // transformers' {% generation %}: marks the assistant's text; renders its body unchanged
            try endStatement()
            let (nodes, _) = try body(until: ["endgeneration"])
            try endStatement()
            return nodes
        default:
            throw JinjaError("the statement '\(word)' is not supported", line: l)
        }
    }

    // Expressions, by Jinja's precedence.

    mutating func expression() throws -> JinjaExpr {
        try nest(); defer { depth -= 1 }
        let e = try or()
        if takeName("if") {
            let condition = try or()
            let otherwise = takeName("else") ? try expression() : nil
            return .conditional(condition, then: e, otherwise: otherwise)
        }
        return e
    }

    /// An expression without a trailing `if … else …` (a for loop's iterable, before its filter).
    mutating func conditionalFree() throws -> JinjaExpr { try nest(); defer { depth -= 1 }; return try or() }

    mutating func or() throws -> JinjaExpr {
        var e = try and()
        while takeName("or") { e = .binary("or", e, try and()) }
        return e
    }
    mutating func and() throws -> JinjaExpr {
        var e = try not()
        while takeName("and") { e = .binary("and", e, try not()) }
        return e
    }
    mutating func not() throws -> JinjaExpr {
        if takeName("not") { try nest(); defer { depth -= 1 }; return .unary("not", try not()) }
        return try compare()
    }
    /// `a < b < c` is `a < b and b < c`, as in Python.
    mutating func compare() throws -> JinjaExpr {
        var left = try add()
        var chain: JinjaExpr? = nil
        while true {
            let op: String
            if case .op(let o)? = current, ["==", "!=", "<", "<=", ">", ">="].contains(o) { p += 1; op = o }
            else if takeName("in") { op = "in" }
            else if isName("not"), p + 1 < tokens.count, tokens[p + 1].0 == .name("in") { p += 2; op = "not in" }
            else { return chain ?? left }
            let right = try add()
            let link = JinjaExpr.binary(op, left, right)
            chain = chain.map { .binary("and", $0, link) } ?? link
            left = right
        }
    }
    mutating func add() throws -> JinjaExpr {
        var e = try concat()
        while case .op(let o)? = current, o == "+" || o == "-" { p += 1; e = .binary(o, e, try concat()) }
        return e
    }
    mutating func concat() throws -> JinjaExpr {
        var e = try multiply()
        while take("~") { e = .binary("~", e, try multiply()) }
        return e
    }
    mutating func multiply() throws -> JinjaExpr {
        var e = try power()
        while case .op(let o)? = current, ["*", "/", "//", "%"].contains(o) { p += 1; e = .binary(o, e, try power()) }
        return e
    }
    mutating func power() throws -> JinjaExpr {
        var e = try unary(filters: true)
        while take("**") { e = .binary("**", e, try unary(filters: true)) }
        return e
    }
    mutating func unary(filters: Bool) throws -> JinjaExpr {
        try nest(); defer { depth -= 1 }
        var e: JinjaExpr
        if take("-") { e = .unary("-", try unary(filters: false)) }
        else if take("+") { e = .unary("+", try unary(filters: false)) }
        else { e = try primary() }
        e = try postfix(e)
        if filters { e = try filtersAndTests(e) }
        return e
    }

    mutating func primary() throws -> JinjaExpr {
        guard let t = current else { throw error("expected an expression at the end of the template") }
        switch t {
        case .name(let n):
            p += 1
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .string(var s):
            p += 1
            while case .string(let more)? = current { s += more; p += 1 }
            return .literal(.string(s))
        case .int(let n): p += 1; return .literal(.int(n))
        case .double(let d): p += 1; return .literal(.double(d))
        case .op("("):
            p += 1
            if take(")") { return .tuple([]) }
            let first = try expression()
            if take(")") { return first }
            var items = [first]
            while take(",") { if isOp(")") { break }; items.append(try expression()) }
            try expect(")")
            return .tuple(items)
        case .op("["):
            p += 1
            var items: [JinjaExpr] = []
            while !take("]") {
                items.append(try expression())
                if !take(",") { try expect("]"); break }
            }
            return .list(items)
        case .op("{"):
            p += 1
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !take("}") {
                let k = try expression()
                try expect(":")
                pairs.append((k, try expression()))
                if !take(",") { try expect("}"); break }
            }
            return .dict(pairs)
        default:
            throw error("expected an expression\(describeCurrent)")
        }
    }

    mutating func postfix(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if take(".") {
                if case .int(let n)? = current { p += 1; e = .index(e, .literal(.int(n))); continue }
                e = .attribute(e, try identifier())
            } else if take("[") {
                var parts: [JinjaExpr?] = []
                var current: JinjaExpr? = nil
                var isSlice = false
                while !take("]") {
                    if take(":") { parts.append(current); current = nil; isSlice = true; continue }
                    guard current == nil else { throw error("expected ']' or ':'\(describeCurrent)") }
                    current = try expression()
                }
                parts.append(current)
                if isSlice {
                    guard parts.count <= 3 else { throw error("a slice has at most three parts") }
                    while parts.count < 3 { parts.append(nil) }
                    e = .slice(e, parts[0], parts[1], parts[2])
                } else {
                    guard let index = parts[0] else { throw error("an empty subscript") }
                    e = .index(e, index)
                }
            } else if isOp("(") {
                let (args, kwargs) = try arguments()
                e = .call(e, args, kwargs)
            } else {
                return e
            }
        }
    }

    mutating func arguments() throws -> ([JinjaExpr], [(String, JinjaExpr)]) {
        try expect("(")
        var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
        while !take(")") {
            if case .name(let n)? = current, p + 1 < tokens.count, tokens[p + 1].0 == .op("=") {
                p += 2
                kwargs.append((n, try expression()))
            } else {
                args.append(try expression())
            }
            if !take(",") { try expect(")"); break }
        }
        return (args, kwargs)
    }

    mutating func filtersAndTests(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if take("|") {
                var name = try identifier()
                while take(".") { name += "." + (try identifier()) }
                var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
                if isOp("(") { (args, kwargs) = try arguments() }
                e = .filter(e, name, args, kwargs)
            } else if takeName("is") {
                let negated = takeName("not")
                let name = try identifier()
                var args: [JinjaExpr] = []
                if isOp("(") {
                    args = try arguments().0
                } else if let t = current, startsPrimary(t) {
                    args = [try postfix(try primary())]
                }
                e = .test(e, name, args, negated: negated)
            } else {
                return e
            }
        }
    }

    func startsPrimary(_ t: JinjaToken) -> Bool {
        switch t {
        case .name(let n): return !["else", "or", "and", "if", "in", "not", "is"].contains(n)
        case .string, .int, .double: return true
        case .op(let o): return o == "[" || o == "{"
        default: return false
        }
    }
}
