import GraftFormats

/// An error as the OpenAI API returns it: an HTTP status and
/// `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, CustomStringConvertible, Sendable {
    /// The HTTP status code.
    public let code: Int
    public let message: String
    public let type: String
    public let param: String?
    /// OpenAI's error code (`model_not_found`, `context_length_exceeded`), if any.
    public let errorCode: String?
    /// Seconds a client should wait before retrying (429, 503).
    public var retryAfter: Int?
    /// The methods a path allows (405).
    public var allow: String?

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.code = status; self.message = message; self.type = type; self.param = param; self.errorCode = code; self.retryAfter = retryAfter
    }

    /// A request the server will not run as given (400 unless `status` says otherwise).
    public static func invalid(_ message: String, param: String? = nil, code: String? = nil, status: Int = 400) -> APIError {
        APIError(status: status, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public static func notFound(_ message: String, param: String? = "model", code: String = "model_not_found") -> APIError {
        APIError(status: 404, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public var description: String { "\(code) \(message)" }

    /// `{"error": {"message", "type", "param", "code"}}`
    public var body: JSONValue {
        .object([("error", .object([("message", .string(message)), ("type", .string(type)),
                                    ("param", param.map { .string($0) } ?? .null), ("code", errorCode.map { .string($0) } ?? .null)]))])
    }
}
