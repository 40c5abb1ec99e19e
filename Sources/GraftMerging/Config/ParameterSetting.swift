/// A resolved parameter value.
public enum ParameterValue: Sendable, Equatable, CustomStringConvertible {
    case number(Double)
    case bool(Bool)
    case string(String)

    public var number: Double? {
        switch self {
        case let .number(d): return d
        case let .bool(b): return b ? 1 : 0
        case .string: return nil
        }
    }

    public var bool: Bool? {
        switch self {
        case let .bool(b): return b
        case let .number(d): return d != 0
        case let .string(s):
            switch s.lowercased() { case "true", "yes", "1": return true; case "false", "no", "0": return false; default: return nil }
        }
    }

    public var description: String {
        switch self {
        case let .number(d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case let .bool(b): return String(b)
        case let .string(s): return s
        }
    }
}

/// A parameter as written in a mergekit config: a scalar, a gradient (a list of numbers interpolated
/// over the layer position t ∈ [0, 1]), or a list of filtered settings (`- filter: mlp` / `value: …`,
/// the first whose filter occurs in the tensor name wins; a missing filter or `*` matches all).
public indirect enum ParameterSetting: Sendable, Equatable {
    case scalar(ParameterValue)
    case gradient([ParameterValue])
    case filtered([(filter: String?, value: ParameterSetting)])

    public static func == (a: ParameterSetting, b: ParameterSetting) -> Bool {
        switch (a, b) {
        case let (.scalar(x), .scalar(y)): return x == y
        case let (.gradient(x), .gradient(y)): return x == y
        case let (.filtered(x), .filtered(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.filter == $1.filter && $0.value == $1.value }
        default: return false
        }
    }

    /// Evaluates the setting for `tensor` at layer position `t`, as mergekit's `evaluate_setting` does:
    /// numeric gradients interpolate linearly between neighbouring entries; non-numeric lists pick
    /// the entry at ⌊t·(n−1)⌋. Returns nil when no filter matches.
    public func evaluate(tensor: String, t: Double) -> ParameterValue? {
        switch self {
        case let .scalar(v):
            return v
        case let .gradient(values):
            guard !values.isEmpty else { return nil }
            let nums = values.compactMap { v -> Double? in if case let .number(d) = v { return d }; return nil }
            if nums.count != values.count { return values[Int(t * Double(values.count - 1))] }
            let scaled = t * Double(nums.count - 1)
            let i0 = Int(scaled)
            let i1 = min(nums.count - 1, i0 + 1)
            let frac = scaled - Double(i0)
            return .number((1 - frac) * nums[i0] + frac * nums[i1])
        case let .filtered(conds):
            for c in conds where c.filter == nil || c.filter == "*" || tensor.contains(c.filter!) {
                return c.value.evaluate(tensor: tensor, t: t)
            }
            return nil
        }
    }

    /// Parses a YAML-decoded value (`YAMLValues.load` output). `path` names the field in errors.
    public static func parse(_ any: Any, path: String) throws -> ParameterSetting {
        if let v = scalar(any) { return .scalar(v) }
        if let list = any as? [Any] {
            if list.allSatisfy({ scalar($0) != nil }) { return .gradient(list.map { scalar($0)! }) }
            var conds: [(String?, ParameterSetting)] = []
            for (i, item) in list.enumerated() {
                guard let d = item as? [String: Any] else {
                    throw MergeError.config("\(path)[\(i)]: expected a number or a `{filter, value}` entry")
                }
                let extra = Set(d.keys).subtracting(["filter", "value"])
                guard extra.isEmpty else { throw MergeError.config("\(path)[\(i)]: unknown key(s) \(extra.sorted()) (expected filter, value)") }
                guard let v = d["value"] else { throw MergeError.config("\(path)[\(i)]: missing `value`") }
                var filter: String? = nil
                if let f = d["filter"] {
                    guard let fs = f as? String else { throw MergeError.config("\(path)[\(i)].filter: must be a string") }
                    filter = fs
                }
                conds.append((filter, try parse(v, path: "\(path)[\(i)].value")))
            }
            return .filtered(conds)
        }
        if let d = any as? [String: Any], d["value"] != nil {
            return try parse([d], path: path)
        }
        throw MergeError.config("\(path): expected a number, boolean, string, list of numbers, or list of {filter, value}")
    }

    private static func scalar(_ any: Any) -> ParameterValue? {
        switch any {
        case let b as Bool: return .bool(b)
        case let i as Int: return .number(Double(i))
        case let d as Double: return .number(d)
        case let s as String: return .string(s)
        default: return nil
        }
    }
}
