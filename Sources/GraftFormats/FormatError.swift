/// An error in a file Graft reads or writes, naming the file (and the tensor or field when there is one).
public struct FormatError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let item: String?
    public let message: String

    public init(_ path: String, _ item: String? = nil, _ message: String) {
        self.path = path
        self.item = item
        self.message = message
    }

    public var description: String {
        if let item { return "\(path): \(item): \(message)" }
        return "\(path): \(message)"
    }
}
