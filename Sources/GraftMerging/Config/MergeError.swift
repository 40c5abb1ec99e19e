/// What went wrong in a merge, phrased for the user: which file, model, tensor or field, and what was expected.
public enum MergeError: Error, CustomStringConvertible, Sendable {
    case config(String)
    case input(String)
    case method(String)

    public var description: String {
        switch self {
        case let .config(m): return "config: \(m)"
        case let .input(m): return m
        case let .method(m): return m
        }
    }
}
