import Foundation
import GraftFormats
import Hummingbird

/// An error as the OpenAI API returns it: an HTTP status and
/// `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let message: String
    public let type: String
    public let param: String?
    public let code: String?
    /// Seconds a client should wait before retrying (429, 503).
    public var retryAfter: Int?
    /// The methods a path allows (405).
    var allow: String?

    public init(status: HTTPResponse.Status, message: String, type: String, param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.status = status; self.message = message; self.type = type; self.param = param; self.code = code; self.retryAfter = retryAfter
    }

    /// A request the server will not run as given (400 unless `status` says otherwise).
    static func invalid(_ message: String, param: String? = nil, code: String? = nil, status: HTTPResponse.Status = .badRequest) -> APIError {
        APIError(status: status, message: message, type: "invalid_request_error", param: param, code: code)
    }

    static func notFound(_ message: String, param: String? = "model", code: String = "model_not_found") -> APIError {
        APIError(status: .notFound, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public var description: String { "\(status.code) \(message)" }

    var body: JSONValue {
        .object([("error", .object([("message", .string(message)), ("type", .string(type)),
                                    ("param", param.map { .string($0) } ?? .null), ("code", code.map { .string($0) } ?? .null)]))])
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        if let allow { headers[.allow] = allow }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body.serialized() + "\n")))
    }
}

/// Turns every error a route throws into an OpenAI-style body: Hummingbird's own (unknown route, body too
/// large) keep their status; anything unexpected is a 500 naming it.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let maxBodyBytes: Int
    /// The methods each route answers, to tell a wrong method (405) from an unknown path (404).
    let routes: [String: [String]]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            throw e
        } catch let e as HTTPError {
            switch e.status {
            case .contentTooLarge:
                throw APIError.invalid("the request body is larger than this server's limit of \(maxBodyBytes) bytes (--max-body-mb)", code: "request_too_large", status: .contentTooLarge)
            case .notFound:
                if let allowed = routes[request.uri.path] ?? routes.first(where: { $0.key.hasSuffix("/:name") && request.uri.path.hasPrefix($0.key.dropLast(5)) })?.value {
                    var e = APIError.invalid("\(request.method) is not allowed on \(request.uri.path): use \(allowed.joined(separator: " or "))", status: .methodNotAllowed)
                    e.allow = allowed.joined(separator: ", ")
                    throw e
                }
                throw APIError.notFound("no route \(request.method) \(request.uri.path)", param: nil, code: "unknown_url")
            case .methodNotAllowed:
                throw APIError.invalid("\(request.method) is not allowed on \(request.uri.path)", status: .methodNotAllowed)
            default:
                throw APIError(status: e.status, message: e.body ?? e.status.reasonPhrase, type: e.status.code >= 500 ? "server_error" : "invalid_request_error")
            }
        } catch {
            throw APIError(status: .internalServerError, message: "\(error)", type: "server_error")
        }
    }
}
