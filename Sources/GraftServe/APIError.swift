import Foundation
import GraftAPI
import GraftFormats
import Hummingbird

extension APIError: HTTPResponseError {
    public var status: HTTPResponse.Status { HTTPResponse.Status(code: code) }

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
                throw APIError.invalid("the request body is larger than this server's limit of \(maxBodyBytes) bytes (--max-body-mb)", code: "request_too_large", status: 413)
            case .notFound:
                if let allowed = routes[request.uri.path] ?? routes.first(where: { $0.key.hasSuffix("/:name") && request.uri.path.hasPrefix($0.key.dropLast(5)) })?.value {
                    var e = APIError.invalid("\(request.method) is not allowed on \(request.uri.path): use \(allowed.joined(separator: " or "))", status: 405)
                    e.allow = allowed.joined(separator: ", ")
                    throw e
                }
                throw APIError.notFound("no route \(request.method) \(request.uri.path)", param: nil, code: "unknown_url")
            case .methodNotAllowed:
                throw APIError.invalid("\(request.method) is not allowed on \(request.uri.path)", status: 405)
            default:
                throw APIError(status: e.status.code, message: e.body ?? e.status.reasonPhrase, type: e.status.code >= 500 ? "server_error" : "invalid_request_error")
            }
        } catch {
            throw APIError(status: 500, message: "\(error)", type: "server_error")
        }
    }
}
