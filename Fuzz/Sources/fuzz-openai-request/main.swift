import Foundation
import FuzzDriver
import GraftAPI
import GraftText

// Request bodies of `graft serve`: any bytes as the JSON body of each endpoint, parsed and checked as the
// server does before anything runs. A refusal must be an APIError (the server's 4xx), never a crash.
// The same bytes as a model's reply are read for tool calls in every format, streamed and whole: the
// text sent plus the text left must be the reply when no call is found.
fuzz { bytes in
    let body = Array(bytes)
    for chat in [false, true] {
        do { _ = try GenerationRequest.parse(body, chat: chat) } catch is APIError {} catch { fatalError("not an APIError: \(error)") }
    }
    for field in ["input"] {
        do { _ = try TextsRequest.parse(body, field: field) } catch is APIError {} catch { fatalError("not an APIError: \(error)") }
    }
    do { _ = try AdapterLoadRequest.parse(body) } catch is APIError {} catch { fatalError("not an APIError: \(error)") }
    let reply = String(decoding: bytes, as: UTF8.self)
    for format in [ToolCallFormat.hermes, .mistral, .llama3] {
        let whole = format.parse(reply, names: ["get_weather", "add"])
        if whole.calls.isEmpty && whole.content != reply { fatalError("a reply without calls changed: \(format)") }
        var streamer = ToolCallStreamer(format: format, names: ["get_weather", "add"])
        var sent = ""
        for piece in reply.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).enumerated().map({ $0.offset == 0 ? $0.element : "\n" + $0.element }) {
            sent += streamer.append(piece)
        }
        let (rest, calls) = streamer.finish()
        if calls.isEmpty && sent + rest != reply { fatalError("streamed text lost or changed: \(format)") }
    }
}
