import Foundation
import GraftFormats
#if canImport(Glibc)
import Glibc
#endif

/// A small HTTP/1.1 client over a plain socket to a loopback port, for `graft bench serve` and the
/// server tests: it sends exactly the bytes given (malformed or oversized bodies too), reads a response
/// as it arrives (a server-sent-event stream chunk by chunk), and can hang up mid-response like a client
/// that goes away. (async-http-client would bring SwiftNIO SSL's build for what a hundred lines do.)
public final class HTTPConnection {
    public struct Response {
        public let status: Int
        public let headers: [String: String]
        public let body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
        public func json() throws -> JSONValue { try JSONValue.parse(body) }
        /// The `data:` payloads of a server-sent-event body, in order.
        public var events: [String] {
            text.components(separatedBy: "\n\n").compactMap { e in e.hasPrefix("data: ") ? String(e.dropFirst(6)) : nil }
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    private(set) var fd: Int32
    private var buffer: [UInt8] = []

    /// Connects to 127.0.0.1:`port`; reads give up after `timeout` seconds.
    public init(port: Int, timeout: Int = 120) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { close(fd); throw Failure("connect to port \(port): \(String(cString: strerror(errno)))") }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Hangs up (a client that goes away): the socket is closed.
    public func hangUp() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    /// Sends a request; `body` as given, with its Content-Length when `declareLength`.
    public func send(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:], declareLength: Bool = true) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        var h = headers
        if let body, declareLength { h["Content-Length"] = String(body.count) }
        if body != nil, h["Content-Type"] == nil { h["Content-Type"] = "application/json" }
        for (k, v) in h.sorted(by: { $0.key < $1.key }) { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        try write(Array(head.utf8) + (body ?? []))
    }

    func write(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 { throw Failure("recv: \(String(cString: strerror(errno)))") }
        if n == 0 { return false }
        buffer += chunk[0..<n]
        return true
    }

    private func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 10) {
                let l = String(decoding: buffer[0..<i], as: UTF8.self)
                buffer.removeFirst(i + 1)
                return l.hasSuffix("\r") ? String(l.dropLast()) : l
            }
            guard try fill() else { throw Failure("connection closed mid-line") }
        }
    }

    private func bytes(_ n: Int) throws -> [UInt8] {
        while buffer.count < n { guard try fill() else { throw Failure("connection closed after \(buffer.count) of \(n) bytes") } }
        let out = Array(buffer[0..<n])
        buffer.removeFirst(n)
        return out
    }

    /// Reads the status line and headers.
    public func head() throws -> (status: Int, headers: [String: String]) {
        let status = try line()
        let parts = status.split(separator: " ")
        guard parts.count >= 2, let code = Int(parts[1]) else { throw Failure("bad status line '\(status)'") }
        var headers: [String: String] = [:]
        while true {
            let l = try line()
            if l.isEmpty { break }
            if let c = l.firstIndex(of: ":") { headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces) }
        }
        return (code, headers)
    }

    /// The next piece of a chunked body (nil at its end).
    public func nextChunk() throws -> [UInt8]? {
        let l = try line()
        guard let field = l.split(separator: ";").first, let size = Int(field.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else {
            throw Failure("bad chunk size '\(l)'")
        }
        let data = try bytes(size)
        _ = try line()
        return size == 0 ? nil : data
    }

    /// Reads a whole response.
    public func response() throws -> Response {
        let (status, headers) = try head()
        var body: [UInt8] = []
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while let c = try nextChunk() { body += c }
        } else if let n = headers["content-length"].flatMap(Int.init) {
            body = try bytes(n)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// One request on a new connection.
    public static func request(port: Int, _ method: String, _ path: String, json: String? = nil) throws -> Response {
        let c = try HTTPConnection(port: port)
        try c.send(method, path, body: json.map { Array($0.utf8) })
        return try c.response()
    }
}

/// A server process on a free loopback port (`graft serve … --port 0`, which prints the port it
/// bound), stopped with SIGTERM by `stop`.
public final class ServerProcess: @unchecked Sendable {
    public let process = Process()
    public private(set) var port = 0
    let stderrPipe = Pipe()
    private let lock = NSLock()
    private var errText = Data()

    /// Starts `graft serve ARGS --port 0` and waits for the "listening on" line.
    public init(graft: String, arguments: [String]) throws {
        let out = Pipe()
        try launch(graft, ["serve"] + arguments + ["--port", "0"], stdout: out)
        var seen = ""
        while !seen.contains("\n") {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            seen += String(decoding: d, as: UTF8.self)
        }
        guard let r = seen.range(of: #":(\d+)\n"#, options: .regularExpression), let p = Int(seen[r].dropFirst().dropLast()) else {
            process.terminate()
            process.waitUntilExit()
            throw HTTPConnection.Failure("graft serve did not start: \(seen) \(stderr)")
        }
        port = p
    }

    /// Starts another server that listens on `port` (llama.cpp's), and waits until GET /v1/models answers.
    public init(executable: String, arguments: [String], port: Int, startTimeout: TimeInterval = 300) throws {
        try launch(executable, arguments, stdout: FileHandle.nullDevice)
        self.port = port
        let deadline = Date().addingTimeInterval(startTimeout)
        while (try? HTTPConnection.request(port: port, "GET", "/v1/models").status) != 200 {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw HTTPConnection.Failure("\(executable) did not start serving on port \(port): \(stderr.suffix(2000))")
            }
            usleep(200_000)
        }
    }

    private func launch(_ executable: String, _ arguments: [String], stdout: Any) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = stdout
        process.standardError = stderrPipe
        // Drained as it comes, so a chatty server never blocks on a full pipe.
        stderrPipe.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self, !d.isEmpty else { return }
            self.lock.lock(); self.errText += d; self.lock.unlock()
        }
        try process.run()
    }

    /// What it has written on standard error so far.
    public var stderr: String { lock.lock(); defer { lock.unlock() }; return String(decoding: errText, as: UTF8.self) }

    /// Sends SIGTERM (a graceful stop: running requests finish first).
    public func terminate() { if process.isRunning { kill(process.processIdentifier, SIGTERM) } }

    /// SIGTERM, then the exit status and what it wrote on standard error.
    @discardableResult
    public func stop() -> (status: Int32, stderr: String) {
        terminate()
        process.waitUntilExit()
        stderrPipe.fileHandleForReading.readabilityHandler = nil
        return (process.terminationStatus, stderr)
    }
}
