import Foundation
import GraftTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The peers' side of the benchmarks: the Python environment ../shared/tools/peer-env.sh builds
/// (PyTorch + PEFT, sentence-transformers, llama-cpp-python, mergekit), scripts run in it, and child
/// processes timed with their peak memory.
public enum Peers {
    /// Where ../shared/tools/peer-env.sh builds the environment by default.
    public static let defaultRoot = "/tmp/graft-peers/venv/bin"

    /// The peer environment's Python: GRAFT_PEER_PYTHON, else its default place; nil when not installed.
    public static var python: String? {
        if let p = ProcessInfo.processInfo.environment["GRAFT_PEER_PYTHON"], FileManager.default.isExecutableFile(atPath: p) { return p }
        let d = defaultRoot + "/python"
        return FileManager.default.isExecutableFile(atPath: d) ? d : nil
    }

    /// AdapterHub `adapters` 1.3's own environment (it pins transformers 4.57; `PEER_ADAPTERHUB=1
    /// peer-env.sh` builds it): GRAFT_ADAPTERHUB_PYTHON, else its default place; nil when not installed.
    public static var adapterHubPython: String? {
        if let p = ProcessInfo.processInfo.environment["GRAFT_ADAPTERHUB_PYTHON"], FileManager.default.isExecutableFile(atPath: p) { return p }
        let d = "/tmp/graft-peers/adapterhub-venv/bin/python"
        return FileManager.default.isExecutableFile(atPath: d) ? d : nil
    }

    /// A program on PATH, else in the peer environment; nil when neither has it.
    public static func tool(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        let d = defaultRoot + "/" + name
        return FileManager.default.isExecutableFile(atPath: d) ? d : nil
    }

    /// Starts a peer script (offline, 2 threads, stderr discarded) with pipes to its standard input and
    /// output; nil when the peer environment is not installed.
    static func start(_ script: String, python interpreter: String? = nil) throws -> (Process, stdin: FileHandle, stdout: FileHandle)? {
        guard let py = interpreter ?? python else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: py)
        p.arguments = ["-c", script]
        var env = ProcessInfo.processInfo.environment
        env["HF_HUB_OFFLINE"] = "1"; env["OMP_NUM_THREADS"] = "2"
        p.environment = env
        let inPipe = Pipe(), outPipe = Pipe()
        p.standardInput = inPipe; p.standardOutput = outPipe; p.standardError = FileHandle.nullDevice
        try p.run()
        return (p, inPipe.fileHandleForWriting, outPipe.fileHandleForReading)
    }

    /// Runs a peer script with JSON on stdin; returns the JSON object it prints last (nil when the
    /// environment is not installed or the script failed, which `log` reports).
    public static func run(_ script: String, input: [String: Any], python interpreter: String? = nil, log: (String) -> Void) throws -> [String: Any]? {
        guard let (p, stdin, stdout) = try start(script, python: interpreter) else { return nil }
        stdin.write(try JSONSerialization.data(withJSONObject: input))
        try stdin.close()
        let data = stdout.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last else {
            log("peer run failed (status \(p.terminationStatus)); is the peer environment complete?")
            return nil
        }
        return try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }

    /// Wall time and peak resident set of a child process.
    public struct Measurement: Sendable { public let seconds: Double, peakRSS: Double }

    /// Runs a command as a child process (output discarded); its wall time and peak resident set. A
    /// non-zero exit is an error unless `allowFailure`. The peak comes from /usr/bin/time (Debian's
    /// `time`, which `make setup` installs) between us and the command: a child started by this
    /// process directly inherits this process's own peak in wait4's ru_maxrss (Linux carries the
    /// high-water mark across exec, and posix_spawn shares our memory until then), so a benchmark
    /// that had already loaded a model would see its own size as every child's peak.
    public static func measure(_ argv: [String], env: [String: String] = [:], allowFailure: Bool = false) throws -> Measurement {
        var environ = ProcessInfo.processInfo.environment
        for (k, v) in env { environ[k] = v }
        let timeTool = "/usr/bin/time"
        #if os(Linux)
        let hasTime = FileManager.default.isExecutableFile(atPath: timeTool)  // GNU time (BSD's has no -f)
        #else
        let hasTime = false
        #endif
        let report = NSTemporaryDirectory() + "graft-bench-\(getpid())-\(UInt64.random(in: 0..<UInt64.max)).rss"
        defer { unlink(report) }
        let command = hasTime ? [timeTool, "-f", "%M", "-o", report] + argv : argv
        let cArgs = command.map { strdup($0) } + [nil]
        let cEnv = environ.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var pid: pid_t = 0
        let start = monotonicSeconds()
        let rc = posix_spawn(&pid, command[0], &actions, nil, cArgs, cEnv)
        guard rc == 0 else { throw BenchError("cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        var usage = rusage()
        _ = wait4(pid, &status, 0, &usage)
        let seconds = monotonicSeconds() - start
        if status != 0 && !allowFailure {
            throw BenchError("\(argv.joined(separator: " ")) failed (status \(status)); run it by hand to see why")
        }
        // time's report: "Command exited with non-zero status N" first when it failed, then the peak in KB.
        let kb = hasTime ? (try? String(contentsOfFile: report, encoding: .utf8))?.split(separator: "\n").last.flatMap { Double($0) } : nil
        return Measurement(seconds: seconds, peakRSS: (kb ?? Double(usage.ru_maxrss)) * 1024)
    }
}

/// A peer script driven one step at a time, so that Graft and the peer can take turns on the machine:
/// the script reads a JSON line (its set-up) and answers "ready", then answers every line it reads
/// with one line (a step's result).
public final class PeerSession {
    private let process: Process
    private let input: FileHandle, output: FileHandle
    private var pending = Data()

    /// nil when the peer environment is not installed or the script fails to start (`log` says which).
    public init?(script: String, setup: [String: Any], log: (String) -> Void) throws {
        signal(SIGPIPE, SIG_IGN)  // a peer that died makes writes fail (below), not kill Graft
        guard let (p, stdin, stdout) = try Peers.start(script) else { return nil }
        (process, input, output) = (p, stdin, stdout)
        try? input.write(contentsOf: try JSONSerialization.data(withJSONObject: setup) + Data("\n".utf8))
        guard readLine() == "ready" else {
            log("peer failed to start (is the peer environment complete?)")
            close()
            return nil
        }
    }

    /// Sends one line and returns the peer's one-line answer (nil if it died).
    public func step(_ line: String = "step") -> String? {
        guard (try? input.write(contentsOf: Data((line + "\n").utf8))) != nil else { return nil }
        return readLine()
    }

    private func readLine() -> String? {
        while true {
            if let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<nl], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...nl)
                return line
            }
            let more = output.availableData
            if more.isEmpty { return nil }
            pending.append(more)
        }
    }

    public func close() {
        try? input.close()
        process.waitUntilExit()
    }
}

/// A benchmark that cannot run (bad options, a failed child process), with what to do about it.
public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

/// Peak resident memory of this process so far, in bytes.
public func peakRSSBytes() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) * 1024
}

/// The median of a non-empty list.
func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
