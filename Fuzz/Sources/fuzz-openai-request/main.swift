import Foundation
import FuzzDriver
import GraftAPI

// Request bodies of `graft serve`: any bytes as the JSON body of each endpoint, parsed and checked as the
// server does before anything runs. A refusal must be an APIError (the server's 4xx), never a crash.
fuzz { bytes in
    let body = Array(bytes)
    for chat in [false, true] {
        do { _ = try GenerationRequest.parse(body, chat: chat) } catch is APIError {} catch { fatalError("not an APIError: \(error)") }
    }
    for field in ["input"] {
        do { _ = try TextsRequest.parse(body, field: field) } catch is APIError {} catch { fatalError("not an APIError: \(error)") }
    }
    do { _ = try AdapterLoadRequest.parse(body) } catch is APIError {} catch { fatalError("not an APIError: \(error)") }
}
