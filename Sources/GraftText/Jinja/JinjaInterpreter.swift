import Foundation
import GraftFormats

/// A value while a template renders, with Python's meaning (templates are written against Jinja on Python):
/// dictionaries keep their insertion order, `str()` and `tojson` print as Python does.
public enum JinjaValue {
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    /// A Python tuple: `(a, b)`, the pairs of `items()`; a list everywhere but in how it prints.
    case tuple([JinjaValue])
    case object([(String, JinjaValue)])
    case namespace(JinjaNamespace)
    case macro(JinjaMacro)
    case function(String)

    public init(_ json: JSONValue) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(Int(i))
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JinjaValue.init))
        case .object(let o): self = .object(o.map { ($0.0, JinjaValue($0.1)) })
        }
    }

    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .array(let a), .tuple(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        case .namespace, .macro, .function: return true
        }
    }

    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "none"
        case .bool: return "boolean"
        case .int: return "integer"
        case .double: return "float"
        case .string: return "string"
        case .array: return "list"
        case .tuple: return "tuple"
        case .object: return "dict"
        case .namespace: return "namespace"
        case .macro, .function: return "function"
        }
    }

    subscript(key: String) -> JinjaValue? {
        if case .object(let o) = self { return o.first { $0.0 == key }?.1 }
        return nil
    }
}

/// `namespace(…)`: the one value a template may change in place (to carry state out of a loop).
public final class JinjaNamespace {
    var values: [(String, JinjaValue)]
    init(_ values: [(String, JinjaValue)]) { self.values = values; Self.alive.add(1) }
    deinit { Self.alive.add(-1) }

    /// Namespaces not yet freed (the tests check that rendering frees every one, cycles included).
    static let alive = Count()
    final class Count: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func add(_ d: Int) { lock.lock(); n += d; lock.unlock() }
        var value: Int { lock.lock(); defer { lock.unlock() }; return n }
    }
}

/// A `{% macro %}` defined by the template.
public final class JinjaMacro {
    let name: String
    let parameters: [(String, JinjaExpr?)]
    let body: [JinjaNode]
    init(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaNode]) { self.name = name; self.parameters = parameters; self.body = body }
}

extension JinjaTemplate {
    /// Renders with `context` as the template's variables; `raise_exception`, `namespace`, `range`, `dict` and
    /// `strftime_now` are there as transformers provides them.
    public func render(_ context: [String: JinjaValue]) throws -> String {
        let r = JinjaRenderer(limits: limits, context: context)
        defer { r.releaseNamespaces() }
        try r.run(nodes)
        return r.output
    }
}

private enum LoopSignal: Error { case breakLoop, continueLoop }

final class JinjaRenderer {
    let limits: JinjaLimits
    var scopes: [[String: JinjaValue]]
    var output = ""
    var outputCount = 0
    var steps = 0
    var calls = 0
    var line = 1
    var loopDepth = 0
    /// Where text goes: the output, or a `set` block's or macro's capture.
    var captures: [String] = []
    /// Every namespace made, emptied when rendering ends: one may hold itself (`set ns.me = ns`), a cycle
    /// that reference counting alone would never free.
    var namespaces: [JinjaNamespace] = []

    func releaseNamespaces() { for ns in namespaces { ns.values.removeAll() } }

    init(limits: JinjaLimits, context: [String: JinjaValue]) {
        self.limits = limits
        var globals: [String: JinjaValue] = [:]
        for f in ["raise_exception", "namespace", "range", "dict", "strftime_now"] { globals[f] = .function(f) }
        scopes = [globals, context, [:]]
    }

    func fail(_ m: String) -> JinjaError { JinjaError(m, line: line) }

    func step() throws {
        steps += 1
        if steps > limits.steps { throw fail("rendering took more than \(limits.steps) steps") }
    }

    /// Work in proportion to a size: a step per 16 characters or items built, copied, compared or
    /// iterated, so that large values spend the budget as many small ones would.
    func charge(_ size: Int) throws {
        steps += size / 16
        try step()
    }

    /// A value's size for `charge`: characters of a string, items of a list or dict.
    func size(_ v: JinjaValue) -> Int {
        switch v {
        case .string(let s): return s.utf8.count
        case .array(let a), .tuple(let a): return a.count
        case .object(let o): return o.count
        default: return 1
        }
    }

    func emit(_ s: String) throws {
        let n = s.unicodeScalars.count
        try charge(n)
        outputCount += n
        if outputCount > limits.outputCharacters { throw fail("the rendered text is longer than \(limits.outputCharacters) characters") }
        if captures.isEmpty { output += s } else { captures[captures.count - 1] += s }
    }

    func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() { if let v = scope[name] { return v } }
        return .undefined(name)
    }

    func run(_ nodes: [JinjaNode]) throws {
        for node in nodes {
            try step()
            switch node {
            case .text(let s): try emit(s)
            case .output(let e, let l):
                line = l
                try emit(try str(try eval(e)))
            case .branches(let branches, let otherwise, let l):
                line = l
                var done = false
                for (condition, body) in branches where try eval(condition).truthy {
                    try run(body); done = true; break
                }
                if !done { try run(otherwise) }
            case .loop(let targets, let iterable, let condition, let body, let otherwise, let l):
                line = l
                try loop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise)
            case .assign(let targets, let attribute, let e, let l):
                line = l
                let v = try eval(e)
                if let attribute {
                    guard case .namespace(let ns) = lookup(targets[0]) else { throw fail("'\(targets[0])' is not a namespace, so '\(targets[0]).\(attribute)' cannot be set") }
                    if let k = ns.values.firstIndex(where: { $0.0 == attribute }) { ns.values[k].1 = v } else { ns.values.append((attribute, v)) }
                } else if targets.count == 1 {
                    scopes[scopes.count - 1][targets[0]] = v
                } else {
                    let items = try iterate(v)
                    guard items.count == targets.count else { throw fail("cannot unpack \(items.count) values into \(targets.count) names") }
                    for (t, x) in zip(targets, items) { scopes[scopes.count - 1][t] = x }
                }
            case .assignBlock(let name, let body):
                captures.append("")
                defer { captures.removeLast() }
                try run(body)
                scopes[scopes.count - 1][name] = .string(captures[captures.count - 1])
            case .macro(let name, let parameters, let body):
                scopes[scopes.count - 1][name] = .macro(JinjaMacro(name: name, parameters: parameters, body: body))
            case .breakLoop(let l):
                line = l
                guard loopDepth > 0 else { throw fail("'break' outside a loop") }
                throw LoopSignal.breakLoop
            case .continueLoop(let l):
                line = l
                guard loopDepth > 0 else { throw fail("'continue' outside a loop") }
                throw LoopSignal.continueLoop
            }
        }
    }

    func loop(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode]) throws {
        let source = try eval(iterable)
        var items = try iterate(source)
        func bind(_ item: JinjaValue) throws {
            if targets.count == 1 { scopes[scopes.count - 1][targets[0]] = item; return }
            let parts = try iterate(item)
            guard parts.count == targets.count else { throw fail("cannot unpack \(parts.count) values into \(targets.count) loop variables") }
            for (t, x) in zip(targets, parts) { scopes[scopes.count - 1][t] = x }
        }
        scopes.append([:])
        loopDepth += 1
        defer { scopes.removeLast(); loopDepth -= 1 }
        if let condition {   // `for x in xs if c`: loop.index counts the items that pass
            items = try items.filter { item in try step(); try bind(item); return try eval(condition).truthy }
        }
        if items.isEmpty { try run(otherwise); return }
        for (k, item) in items.enumerated() {
            try step()
            try bind(item)
            let n = items.count
            var info: [(String, JinjaValue)] = [
                ("index", .int(k + 1)), ("index0", .int(k)), ("revindex", .int(n - k)), ("revindex0", .int(n - k - 1)),
                ("first", .bool(k == 0)), ("last", .bool(k == n - 1)), ("length", .int(n)), ("depth", .int(1)), ("depth0", .int(0)),
            ]
            info.append(("previtem", k > 0 ? items[k - 1] : .undefined("loop.previtem")))
            info.append(("nextitem", k + 1 < n ? items[k + 1] : .undefined("loop.nextitem")))
            scopes[scopes.count - 1]["loop"] = .object(info)
            do { try run(body) } catch LoopSignal.breakLoop { break } catch LoopSignal.continueLoop { continue }
        }
    }

    // MARK: expressions

    func eval(_ e: JinjaExpr) throws -> JinjaValue {
        try step()
        switch e {
        case .literal(let l):
            switch l {
            case .none: return .none
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .double(let d): return .double(d)
            case .string(let s): return .string(s)
            }
        case .name(let n): return lookup(n)
        case .list(let items): return .array(try items.map(eval))
        case .tuple(let items): return .tuple(try items.map(eval))
        case .dict(let pairs):
            var o: [(String, JinjaValue)] = []
            for (k, v) in pairs {
                let key = try str(try eval(k))
                let value = try eval(v)
                if let i = o.firstIndex(where: { $0.0 == key }) { o[i].1 = value } else { o.append((key, value)) }
            }
            return .object(o)
        case .attribute(let base, let name):
            return try attribute(try eval(base), name)
        case .index(let base, let index):
            return try item(try eval(base), try eval(index))
        case .slice(let base, let a, let b, let c):
            return try slice(try eval(base), a.map(eval), b.map(eval), c.map(eval))
        case .call(let callee, let args, let kwargs):
            let argv = try args.map(eval)
            let kw = try kwargs.map { ($0.0, try eval($0.1)) }
            if case .attribute(let base, let name) = callee {
                let receiver = try eval(base)
                if let r = try method(receiver, name, argv, kw) { return r }
                return try call(try attribute(receiver, name), argv, kw)
            }
            return try call(try eval(callee), argv, kw)
        case .filter(let base, let name, let args, let kwargs):
            return try filter(name, try eval(base), try args.map(eval), try kwargs.map { ($0.0, try eval($0.1)) })
        case .test(let base, let name, let args, let negated):
            let r = try test(name, try eval(base), try args.map(eval))
            return .bool(negated ? !r : r)
        case .unary(let op, let x):
            let v = try eval(x)
            switch op {
            case "not": return .bool(!v.truthy)
            case "-":
                switch v {
                case .int(let i): return .int(0 &- i)
                case .double(let d): return .double(-d)
                case .bool(let b): return .int(b ? -1 : 0)
                default: throw fail("bad operand type for unary -: \(v.typeName)")
                }
            default:
                guard case .int = v else { if case .double = v { return v }; throw fail("bad operand type for unary +: \(v.typeName)") }
                return v
            }
        case .binary(let op, let l, let r):
            if op == "and" { let a = try eval(l); return a.truthy ? try eval(r) : a }
            if op == "or" { let a = try eval(l); return a.truthy ? a : try eval(r) }
            return try binary(op, try eval(l), try eval(r))
        case .conditional(let condition, let then, let otherwise):
            if try eval(condition).truthy { return try eval(then) }
            return try otherwise.map(eval) ?? .undefined("the conditional expression's else")
        }
    }

    func undefinedError(_ v: JinjaValue) -> JinjaError {
        if case .undefined(let n) = v { return fail("'\(n)' is undefined") }
        return fail("undefined")
    }

    func attribute(_ v: JinjaValue, _ name: String) throws -> JinjaValue {
        switch v {
        case .undefined: throw undefinedError(v)
        case .object(let o): return o.first { $0.0 == name }?.1 ?? .undefined(name)
        case .namespace(let ns): return ns.values.first { $0.0 == name }?.1 ?? .undefined(name)
        default: return .undefined(name)
        }
    }

    func item(_ v: JinjaValue, _ index: JinjaValue) throws -> JinjaValue {
        switch (v, index) {
        case (.undefined, _): throw undefinedError(v)
        case (.object(let o), _):
            let key = try str(index)
            return o.first { $0.0 == key }?.1 ?? .undefined(key)
        case (.namespace, .string(let s)): return try attribute(v, s)
        case (.array(let a), _), (.tuple(let a), _):
            guard let i = integer(index) else { return .undefined("an item of a list") }
            let k = i < 0 ? a.count + i : i
            return a.indices.contains(k) ? a[k] : .undefined("list index \(i)")
        case (.string(let s), _):
            guard let i = integer(index) else { return .undefined("an item of a string") }
            let chars = Array(s.unicodeScalars)
            let k = i < 0 ? chars.count + i : i
            return chars.indices.contains(k) ? .string(String(Character(chars[k]))) : .undefined("string index \(i)")
        default: return .undefined("an item")
        }
    }

    func integer(_ v: JinjaValue) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    func slice(_ v: JinjaValue, _ a: JinjaValue?, _ b: JinjaValue?, _ c: JinjaValue?) throws -> JinjaValue {
        func bound(_ x: JinjaValue?) throws -> Int? {
            guard let x, !(x.isNone) else { return nil }
            guard let i = integer(x) else { throw fail("slice indices must be integers or none, not \(x.typeName)") }
            return i
        }
        let stepValue = try bound(c) ?? 1
        guard stepValue != 0 else { throw fail("slice step cannot be zero") }
        func indices(_ n: Int) throws -> [Int] {
            // Python's slice.indices
            func clamp(_ x: Int?, _ dflt: Int) -> Int {
                guard var x else { return dflt }
                if x < 0 { x += n; if x < 0 { x = stepValue < 0 ? -1 : 0 } }
                else if x >= n { x = stepValue < 0 ? n - 1 : n }
                return x
            }
            let start = clamp(try bound(a), stepValue < 0 ? n - 1 : 0)
            let stop = clamp(try bound(b), stepValue < 0 ? -1 : n)
            return Array(stride(from: start, to: stop, by: stepValue))
        }
        switch v {
        case .array(let items), .tuple(let items): return .array(try indices(items.count).map { items[$0] })
        case .string(let s):
            let chars = Array(s.unicodeScalars)
            var out = String.UnicodeScalarView()
            for k in try indices(chars.count) { out.append(chars[k]) }
            return .string(String(out))
        case .undefined: throw undefinedError(v)
        default: throw fail("a \(v.typeName) cannot be sliced")
        }
    }

    func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
        try charge(16 * size(v))
        switch v {
        case .array(let a), .tuple(let a): return a
        case .object(let o): return o.map { .string($0.0) }
        case .string(let s): return s.unicodeScalars.map { .string(String(Character($0))) }
        case .undefined: return []
        case .namespace(let ns): return ns.values.map { .string($0.0) }
        default: throw fail("a \(v.typeName) is not iterable")
        }
    }

    // MARK: operators

    func number(_ v: JinjaValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.none, .none): return true
        case (.undefined, .undefined): return true
        case (.string(let x), .string(let y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case (.array(let x), .array(let y)), (.tuple(let x), .tuple(let y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.allSatisfy { kv in y.contains { $0.0 == kv.0 && equal($0.1, kv.1) } }
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.macro(let x), .macro(let y)): return x === y
        case (.function(let x), .function(let y)): return x == y
        default:
            if let x = number(a), let y = number(b) {
                if case .int(let i) = a, case .int(let j) = b { return i == j }
                return x == y
            }
            return false
        }
    }

    func compare(_ a: JinjaValue, _ b: JinjaValue, _ op: String) throws -> Bool {
        let order: ComparisonResult
        switch (a, b) {
        case (.string(let x), .string(let y)):
            try charge(min(x.utf8.count, y.utf8.count))
            order = x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? .orderedAscending
                : x.unicodeScalars.elementsEqual(y.unicodeScalars) ? .orderedSame : .orderedDescending
        case (.array(let x), .array(let y)), (.tuple(let x), .tuple(let y)):
            var r = ComparisonResult.orderedSame
            for (p, q) in zip(x, y) where !equal(p, q) { r = try compare(p, q, "<") ? .orderedAscending : .orderedDescending; break }
            if r == .orderedSame && x.count != y.count { r = x.count < y.count ? .orderedAscending : .orderedDescending }
            order = r
        default:
            if case .int(let i) = a, case .int(let j) = b { order = i < j ? .orderedAscending : i == j ? .orderedSame : .orderedDescending }
            else if let x = number(a), let y = number(b) { order = x < y ? .orderedAscending : x == y ? .orderedSame : .orderedDescending }
            else { throw fail("'\(op)' is not supported between \(a.typeName) and \(b.typeName)") }
        }
        switch op {
        case "<": return order == .orderedAscending
        case "<=": return order != .orderedDescending
        case ">": return order == .orderedDescending
        default: return order != .orderedAscending
        }
    }

    func contains(_ container: JinjaValue, _ x: JinjaValue) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let t) = x else { throw fail("'in <string>' requires a string on the left, not \(x.typeName)") }
            return t.isEmpty || s.contains(t)
        case .array(let a), .tuple(let a): return a.contains { equal($0, x) }
        case .object(let o):
            guard case .string(let k) = x else { return false }
            return o.contains { $0.0 == k }
        case .namespace(let ns):
            guard case .string(let k) = x else { return false }
            return ns.values.contains { $0.0 == k }
        case .undefined: throw undefinedError(container)
        default: throw fail("a \(container.typeName) is not a container ('in')")
        }
    }

    func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        switch op {
        case "==": return .bool(equal(a, b))
        case "!=": return .bool(!equal(a, b))
        case "<", "<=", ">", ">=": return .bool(try compare(a, b, op))
        case "in": return .bool(try contains(b, a))
        case "not in": return .bool(!(try contains(b, a)))
        case "~": return .string(try str(a) + str(b))
        default: break
        }
        if case .undefined = a { throw undefinedError(a) }
        if case .undefined = b { throw undefinedError(b) }
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)):
            try budget(x.unicodeScalars.count + y.unicodeScalars.count)
            return .string(x + y)
        case ("+", .array(let x), .array(let y)): try budget(x.count + y.count); return .array(x + y)
        case ("*", .string(let x), _), ("*", _, .string(let x)):
            guard let n = integer(op == "*" && { if case .string = a { return true }; return false }() ? b : a) else { break }
            try budget(x.unicodeScalars.count.multipliedReportingOverflow(by: max(0, n)))
            return .string(String(repeating: x, count: max(0, n)))
        case ("*", .array(let x), _), ("*", _, .array(let x)):
            guard let n = integer({ if case .array = a { return b }; return a }()) else { break }
            try budget(x.count.multipliedReportingOverflow(by: max(0, n)))
            return .array(Array(repeatElement(x, count: max(0, n)).joined()))
        default: break
        }
        if let i = integer(a), let j = integer(b), !isDouble(a), !isDouble(b) {
            switch op {
            case "+": return try checked(i.addingReportingOverflow(j))
            case "-": return try checked(i.subtractingReportingOverflow(j))
            case "*": return try checked(i.multipliedReportingOverflow(by: j))
            case "/": guard j != 0 else { throw fail("division by zero") }; return .double(Double(i) / Double(j))
            case "//":
                guard j != 0 else { throw fail("integer division by zero") }
                guard !(i == Int.min && j == -1) else { throw fail("integer overflow") }
                let q = i / j
                return .int((i % j != 0 && (i < 0) != (j < 0)) ? q - 1 : q)
            case "%":
                guard j != 0 else { throw fail("modulo by zero") }
                guard !(i == Int.min && j == -1) else { return .int(0) }
                let r = i % j
                return .int(r != 0 && (r < 0) != (j < 0) ? r + j : r)
            case "**":
                if j < 0 { return .double(pow(Double(i), Double(j))) }
                var result = 1, base = i, e = j
                while e > 0 {
                    if e & 1 == 1 { result = try intValue(checked(result.multipliedReportingOverflow(by: base))) }
                    e >>= 1
                    if e > 0 { base = try intValue(checked(base.multipliedReportingOverflow(by: base))) }
                }
                return .int(result)
            default: break
            }
        }
        if let x = number(a), let y = number(b) {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/": guard y != 0 else { throw fail("division by zero") }; return .double(x / y)
            case "//": guard y != 0 else { throw fail("division by zero") }; return .double((x / y).rounded(.down))
            case "%":
                guard y != 0 else { throw fail("modulo by zero") }
                let r = fmod(x, y)
                return .double(r != 0 && (r < 0) != (y < 0) ? r + y : r)
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        throw fail("unsupported operand types for \(op): \(a.typeName) and \(b.typeName)")
    }

    func isDouble(_ v: JinjaValue) -> Bool { if case .double = v { return true }; return false }
    func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> JinjaValue {
        guard !r.overflow else { throw fail("integer overflow") }
        return .int(r.partialValue)
    }
    func intValue(_ v: JinjaValue) throws -> Int { if case .int(let i) = v { return i }; throw fail("integer expected") }
    func budget(_ n: Int) throws {
        guard n <= limits.outputCharacters else { throw fail("a value longer than \(limits.outputCharacters) items") }
        try charge(n)
    }
    func budget(_ r: (partialValue: Int, overflow: Bool)) throws {
        guard !r.overflow else { throw fail("a value longer than \(limits.outputCharacters) items") }
        try budget(r.partialValue)
    }

    // MARK: calls

    func call(_ callee: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch callee {
        case .function(let f): return try builtin(f, args, kwargs)
        case .macro(let m):
            calls += 1
            defer { calls -= 1 }
            guard calls <= limits.callDepth else { throw fail("macros call each other deeper than \(limits.callDepth) levels") }
            guard args.count <= m.parameters.count else { throw fail("macro '\(m.name)' takes \(m.parameters.count) arguments, \(args.count) given") }
            var scope: [String: JinjaValue] = [:]
            for (k, (name, dflt)) in m.parameters.enumerated() {
                if k < args.count { scope[name] = args[k] }
                else if let v = kwargs.first(where: { $0.0 == name })?.1 { scope[name] = v }
                else if let dflt { scope[name] = try eval(dflt) }
                else { scope[name] = .undefined(name) }
            }
            let savedLoops = loopDepth
            scopes.append(scope)
            captures.append("")
            loopDepth = 0
            defer { scopes.removeLast(); captures.removeLast(); loopDepth = savedLoops }
            try run(m.body)
            return .string(captures[captures.count - 1])
        case .undefined: throw undefinedError(callee)
        default: throw fail("a \(callee.typeName) is not callable")
        }
    }

    func builtin(_ f: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch f {
        case "raise_exception":
            throw JinjaError(try args.first.map(str) ?? "the template raised an exception", line: line, raised: true)
        case "namespace":
            var values: [(String, JinjaValue)] = []
            if case .object(let o)? = args.first { values = o }
            for (k, v) in kwargs {
                if let i = values.firstIndex(where: { $0.0 == k }) { values[i].1 = v } else { values.append((k, v)) }
            }
            let ns = JinjaNamespace(values)
            namespaces.append(ns)
            return .namespace(ns)
        case "dict":
            var values: [(String, JinjaValue)] = []
            if case .object(let o)? = args.first { values = o }
            for (k, v) in kwargs {
                if let i = values.firstIndex(where: { $0.0 == k }) { values[i].1 = v } else { values.append((k, v)) }
            }
            return .object(values)
        case "range":
            let n = try args.map { v -> Int in guard let i = integer(v) else { throw fail("range() takes integers, not \(v.typeName)") }; return i }
            let (start, stop, by) = n.count == 1 ? (0, n[0], 1) : n.count == 2 ? (n[0], n[1], 1) : n.count == 3 ? (n[0], n[1], n[2]) : (0, 0, 0)
            guard by != 0 else { throw fail("range() takes 1 to 3 integers and a step that is not zero") }
            let count = by > 0 ? max(0, (stop - start + by - 1) / by) : max(0, (start - stop - by - 1) / -by)
            try budget(count)
            return .array(stride(from: start, to: stop, by: by).map { .int($0) })
        case "strftime_now":
            guard case .string(let format)? = args.first else { throw fail("strftime_now() takes a format string") }
            return .string(strftime(format, Date()))
        default: throw fail("'\(f)' is not a function")
        }
    }

    func strftime(_ format: String, _ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        localtime_r(&t, &parts)
        var buffer = [Int8](repeating: 0, count: 256)
        let n = format.withCString { Foundation.strftime(&buffer, buffer.count, $0, &parts) }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Python's str() and repr()

    func str(_ v: JinjaValue) throws -> String {
        switch v {
        case .undefined: return ""
        case .string(let s): return s
        default: return repr(v)
        }
    }

    func repr(_ v: JinjaValue) -> String {
        switch v {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return pythonFloat(d)
        case .string(let s): return pythonStringRepr(s)
        case .array(let a): return "[" + a.map(repr).joined(separator: ", ") + "]"
        case .tuple(let a): return "(" + a.map(repr).joined(separator: ", ") + (a.count == 1 ? ",)" : ")")
        case .object(let o): return "{" + o.map { pythonStringRepr($0.0) + ": " + repr($0.1) }.joined(separator: ", ") + "}"
        case .namespace(let ns): return "<Namespace " + ns.values.map { "\($0.0)=\(repr($0.1))" }.joined(separator: ", ") + ">"
        case .macro(let m): return "<Macro '\(m.name)'>"
        case .function(let f): return "<function \(f)>"
        }
    }

    func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        return "\(d)"   // Swift and Python both print the shortest text that reads back, "1e-05", "1e+16"
    }

    func pythonStringRepr(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(c) == quote { out += "\\" + String(quote) }
                else if c.value < 0x20 || c.value == 0x7f { out += String(format: "\\x%02x", c.value) }
                else { out.unicodeScalars.append(c) }
            }
        }
        return out + String(quote)
    }

    /// Python's `json.dumps(v, ensure_ascii=False, indent=…, separators=…, sort_keys=…)`, as transformers' tojson.
    func json(_ v: JinjaValue, indent: Int?, itemSeparator: String, keySeparator: String, sortKeys: Bool, level: Int) throws -> String {
        try step()
        switch v {
        case .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d):
            if d.isNaN { return "NaN" }
            if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
            return "\(d)"
        case .string(let s): return jsonString(s)
        case .array(let a), .tuple(let a):
            if a.isEmpty { return "[]" }
            let parts = try a.map { try json($0, indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys, level: level + 1) }
            return wrap("[", "]", parts, indent: indent, itemSeparator: itemSeparator, level: level)
        case .object(var o):
            if o.isEmpty { return "{}" }
            if sortKeys { o.sort { Array($0.0.unicodeScalars).map(\.value).lexicographicallyPrecedes(Array($1.0.unicodeScalars).map(\.value)) } }
            let parts = try o.map { jsonString($0.0) + keySeparator + (try json($0.1, indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys, level: level + 1)) }
            return wrap("{", "}", parts, indent: indent, itemSeparator: itemSeparator, level: level)
        case .namespace(let ns): return try json(.object(ns.values), indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys, level: level)
        case .undefined: throw fail("Object of type Undefined is not JSON serializable")
        case .macro, .function: throw fail("a function is not JSON serializable")
        }
    }

    func wrap(_ open: String, _ close: String, _ parts: [String], indent: Int?, itemSeparator: String, level: Int) -> String {
        guard let indent else { return open + parts.joined(separator: itemSeparator) + close }
        let inner = "\n" + String(repeating: " ", count: indent * (level + 1))
        return open + inner + parts.joined(separator: itemSeparator + inner) + "\n" + String(repeating: " ", count: indent * level) + close
    }

    /// A JSON string as Python's json.dumps writes it (JSONValue's escaping is the same).
    func jsonString(_ s: String) -> String { JSONValue.quote(s) }
}

extension JinjaValue {
    var isNone: Bool { if case .none = self { return true }; return false }
    var listItems: [JinjaValue]? {
        switch self { case .array(let a), .tuple(let a): return a; default: return nil }
    }
}
