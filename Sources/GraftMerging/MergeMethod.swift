import GraftTensor

/// Where a parameter is set: once for the merge (`parameters:` at the top) or per model.
public enum ParameterScope: Sendable { case global, perModel }

/// One parameter a method accepts.
public struct ParameterSpec: Sendable {
    public enum Kind: Sendable { case number, bool, string }
    public let name: String
    public let scope: ParameterScope
    public let kind: Kind
    /// nil: required.
    public let defaultValue: ParameterValue?
    /// Valid numeric range, checked for every tensor the value applies to.
    public let range: ParameterRange?
    public let help: String

    public init(_ name: String, _ scope: ParameterScope, _ kind: Kind = .number, default d: ParameterValue?,
                range: ParameterRange? = nil, help: String) {
        self.name = name; self.scope = scope; self.kind = kind; self.defaultValue = d; self.range = range; self.help = help
    }
}

/// A numeric interval with open or closed ends, e.g. density ∈ (0, 1].
public struct ParameterRange: Sendable, CustomStringConvertible {
    public let lower: Double, upper: Double, lowerOpen: Bool, upperOpen: Bool
    public static let unitOpenClosed = ParameterRange(lower: 0, upper: 1, lowerOpen: true, upperOpen: false)
    public static let unitClosed = ParameterRange(lower: 0, upper: 1, lowerOpen: false, upperOpen: false)
    public static let unitClosedOpen = ParameterRange(lower: 0, upper: 1, lowerOpen: false, upperOpen: true)
    public func contains(_ x: Double) -> Bool {
        (lowerOpen ? x > lower : x >= lower) && (upperOpen ? x < upper : x <= upper)
    }
    public var description: String {
        "\(lowerOpen ? "(" : "[")\(ParameterValue.number(lower)), \(ParameterValue.number(upper))\(upperOpen ? ")" : "]")"
    }
}

/// Whether a method needs `base_model`.
public enum BasePolicy: Sendable { case required, unused }

/// One model's tensor as a method sees it, with that model's resolved parameters.
public struct MergeInput: Sendable {
    public let model: String
    public let values: FloatBuffer
    public let parameters: [String: ParameterValue]

    public init(model: String, values: FloatBuffer, parameters: [String: ParameterValue]) {
        self.model = model; self.values = values; self.parameters = parameters
    }

    public func number(_ name: String) -> Double { parameters[name]?.number ?? .nan }
}

/// Everything a method gets for one tensor name: the base (when it uses one), the other models'
/// tensors in config order, and the global parameters resolved for this tensor.
public struct TensorGroup: Sendable {
    public let name: String
    public let shape: [Int]
    public let base: FloatBuffer?
    public let inputs: [MergeInput]
    public let parameters: [String: ParameterValue]
    /// Seed for methods that draw random numbers; combine with `name` and the model for a stream.
    public let seed: UInt64

    public init(name: String, shape: [Int], base: FloatBuffer?, inputs: [MergeInput],
                parameters: [String: ParameterValue], seed: UInt64 = 0) {
        self.name = name; self.shape = shape; self.base = base; self.inputs = inputs; self.parameters = parameters; self.seed = seed
    }

    public var count: Int { shape.reduce(1, *) }
    public func number(_ name: String) -> Double { parameters[name]?.number ?? .nan }
    public func flag(_ name: String) -> Bool { parameters[name]?.bool ?? false }
    public func string(_ name: String) -> String? {
        if case let .string(s) = parameters[name] { return s }
        return nil
    }
}

/// What `--list-methods` shows of a method.
public protocol MethodDescription: Sendable {
    /// The name used in `merge_method:` (mergekit's name where mergekit has the method).
    var name: String { get }
    /// One line for `graft merge --list-methods`.
    var summary: String { get }
    var parameters: [ParameterSpec] { get }
}

/// A merge method: a pure function from the tensors that share one name to the merged tensor.
/// Implementations live one per file in `Methods/` and are listed in `MergeMethods.all`.
public protocol MergeMethod: MethodDescription {
    var basePolicy: BasePolicy { get }
    /// Fewest non-base models the method accepts.
    var minimumInputs: Int { get }
    /// Most non-base models (nil: no limit).
    var maximumInputs: Int? { get }
    func merge(_ group: TensorGroup) throws -> FloatBuffer
}

extension MergeMethod {
    public var maximumInputs: Int? { nil }
    public var minimumInputs: Int { 1 }
}
