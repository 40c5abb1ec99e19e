import Foundation
import GraftTensor
import GraftTraining

/// Every benchmark against its peer in one run (`graft bench all`), one row per figure the project
/// holds a target for, each with its ratio to the peer measured in the same run.
public struct BenchSuite: Sendable {
    /// The benchmark groups, in the order they run. Training's peak memory is this process's peak so
    /// far, so the training groups come first, the smaller model first.
    public enum Group: String, CaseIterable, Sendable {
        case trainMiniLM = "train-minilm", trainSmolLM2 = "train-smollm2", embed, generate, merge, sharing
    }

    public var groups = Group.allCases
    public var peer = true
    /// Shorter runs (fewer steps and layers): a check that everything runs, not figures to keep.
    public var quick = false
    /// bf16 products in training (`--precision auto` resolved by the caller).
    public var bf16 = false
    /// The graft executable (the merges run it as a child process).
    public var graft: String
    /// Working folder of the merge benchmark.
    public var mergeDir: String

    public init(graft: String, mergeDir: String) { self.graft = graft; self.mergeDir = mergeDir }

    /// What a row's ratio must reach: at least (speed), or at most (memory).
    public enum Target: Sendable {
        case atLeast(Double), atMost(Double)
        public func met(by r: Double) -> Bool { switch self { case .atLeast(let t): r >= t; case .atMost(let t): r <= t } }
        public var text: String { switch self { case .atLeast(let t): "≥ \(figure(t))×"; case .atMost(let t): "≤ \(figure(t))×" } }
    }

    public struct Row: Sendable {
        public let group: Group
        public let name: String
        /// Graft's and the peer's figures with their units; the peer's nil when it did not run.
        public let graft: String, peer: String?
        /// Graft over the peer (speed), or Graft's peak memory over the peer's, or for an absolute
        /// limit Graft's figure over the limit.
        public let ratio: Double?
        public let target: Target
        public var met: Bool? { ratio.map(target.met) }
    }

    /// Runs the groups in order, reporting each row as it is measured.
    public func run(log: @escaping (String) -> Void, row: (Row) -> Void) throws {
        for g in groups {
            log("running \(g.rawValue)…")
            for r in try rows(g, log: log) { row(r) }
        }
    }

    func rows(_ g: Group, log: @escaping (String) -> Void) throws -> [Row] {
        switch g {
        case .trainMiniLM, .trainSmolLM2:
            var b = g == .trainMiniLM ? TrainBenchmark.miniLM : TrainBenchmark.smolLM2
            b.bf16 = bf16; b.peer = peer
            if quick { b.steps = 1 }
            let r = try b.run(log: log)
            let name = g == .trainMiniLM ? "LoRA training, MiniLM seq-cls B32 T64" : "LoRA training, SmolLM2 B4 T128"
            return [Row(group: g, name: name + (bf16 ? " (bf16)" : ""), graft: "\(figure(r.tokensPerSecond)) tok/s",
                        peer: r.peerTokensPerSecond.map { "\(figure($0)) tok/s" }, ratio: r.ratio, target: .atLeast(1.5)),
                    Row(group: g, name: "  its peak memory", graft: "\(figure(r.peakRSSMB)) MB", peer: r.peerPeakRSSMB.map { "\(figure($0)) MB" },
                        ratio: r.memoryRatio, target: .atMost(1))]
        case .embed:
            var b = EmbedBenchmark()
            b.peer = peer
            if quick { b.iterations = 3 }
            let r = try b.run(log: log)
            return [Row(group: g, name: "MiniLM embeddings, B32 × 64 tokens", graft: "\(figure(r.sentencesPerSecond)) sentences/s",
                        peer: r.peerSentencesPerSecond.map { "\(figure($0)) sentences/s" }, ratio: r.ratio, target: .atLeast(1.5))]
        case .generate, .sharing:
            var b = GenerateBenchmark()
            b.peer = peer
            if quick { b.prompt = 64; b.decode = 16 }
            // Sharing the cores: a second process spins on one core for the whole measurement.
            let neighbour = g == .sharing ? try BusyNeighbour() : nil
            defer { neighbour?.stop() }
            let r = try b.run(log: log)
            let busy = g == .sharing ? ", one core busy" : ""
            return [Row(group: g, name: "SmolLM2 \(b.prompt)-token prefill\(busy)", graft: "\(figure(r.prefill)) tok/s",
                        peer: r.peerPrefill.map { "\(figure($0)) tok/s" }, ratio: r.peerPrefill.map { r.prefill / $0 }, target: .atLeast(1)),
                    Row(group: g, name: "SmolLM2 decode\(busy)", graft: "\(figure(r.decode)) tok/s",
                        peer: r.peerDecode.map { "\(figure($0)) tok/s" }, ratio: r.peerDecode.map { r.decode / $0 }, target: .atLeast(1))]
        case .merge:
            var b = MergeBenchmark(dir: mergeDir)
            b.peer = peer
            if quick { b.layers = 2 }
            let r = try b.run(graft: graft, log: log)
            return r.rows.flatMap { m -> [Row] in
                let name = m.method == "ties" ? "TIES merge, 4 SmolLM2-shaped fine-tunes" : "task arithmetic merge, 4 fine-tunes"
                return [Row(group: g, name: name, graft: String(format: "%.2f s", m.graft.seconds),
                            peer: m.mergekit.map { String(format: "%.2f s", $0.seconds) }, ratio: m.speedup,
                            target: .atLeast(m.method == "ties" ? 25 : 5)),
                        Row(group: g, name: "  its peak memory (limit 1 GB)", graft: "\(figure(m.graft.peakRSS / 1e6)) MB",
                            peer: m.mergekit.map { "\(figure($0.peakRSS / 1e6)) MB" }, ratio: m.graft.peakRSS / 1e9, target: .atMost(1))]
            }
        }
    }
}

/// A second process keeping one core busy (a shell loop), for as long as the benchmark runs; `timeout`
/// ends it after 15 minutes even if this process dies first.
public final class BusyNeighbour {
    private let process = Process()

    public init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["900", "/bin/sh", "-c", "while :; do :; done"]
        process.standardOutput = FileHandle.nullDevice; process.standardError = FileHandle.nullDevice
        try process.run()
    }

    public func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// A figure for a table: no fraction from 100 up, one decimal from 10, two below.
public func figure(_ x: Double) -> String {
    if x >= 100 { return String(format: "%.0f", x) }
    if x >= 10 { return String(format: "%.1f", x) }
    return String(format: "%.2f", x)
}
