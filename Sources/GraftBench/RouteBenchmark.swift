import Foundation
import GraftAdapters
import GraftData
import GraftFormats
import GraftModels
import GraftTensor
import GraftTraining

/// Routing among task adapters on a decoder, measured: SmolLM2 LoRA adapters trained (`graft train --task
/// causal-lm`) on four of the demo's corpora turned into answer-in-words tasks, PHATGOOSE gates trained for
/// each (`graft gate`), then every test example answered by (a) its task's own adapter, (b) the base model,
/// (c) Arrow routing among the four, (d) PHATGOOSE routing among the four, (e) a uniform mixture (each at
/// 1/4) — all five as rows of one batched pass, as `graft serve` runs mixed requests. The prompt is the
/// text and "Answer:", never the task; the answer is the task's candidate word whose first token the
/// configuration ranks highest after the prompt.
public struct RouteBenchmark: Sendable {
    public struct Task: Sendable {
        public let name: String
        /// The corpus label → the answer word the adapter learns to write.
        public let words: [(label: String, word: String)]
    }

    public static let tasks: [Task] = [
        Task(name: "sentiment", words: [("1", "positive"), ("-1", "negative")]),
        Task(name: "topic", words: [("business", "business"), ("entertainment", "entertainment"), ("politics", "politics"),
                                    ("sports", "sport"), ("tech", "technology")]),
        Task(name: "hedging", words: [("1", "certain"), ("-1", "uncertain")]),
        Task(name: "dutch-sentiment", words: [("1", "positief"), ("-1", "negatief")]),
    ]
    public static let configurations = ["own adapter", "base", "Arrow", "PHATGOOSE", "uniform"]

    public var model = "smollm2"
    public var trainExamples = 400
    public var testExamples = 100
    /// Texts are cut to this many words (BBC articles run to hundreds).
    public var maxWords = 48
    public var seed: UInt64 = 42
    public var rank = 8
    public var trainer: TrainerOptions = {
        var o = TrainerOptions()
        o.epochs = 2; o.batchSize = 8; o.learningRate = 1e-3; o.warmupRatio = 0.06; o.logEvery = 10
        return o
    }()
    /// Where the prepared data and the adapters go; adapters already there (with gates) are reused unless `retrain`.
    public var workDir: String
    public var retrain = false
    /// Steps of each adapter's gate training (the reference code's 100).
    public var gateSteps = GateSpec(model: "", adapter: "", data: "").trainer.maxSteps!

    public init(workDir: String) { self.workDir = workDir }

    public struct Row: Sendable {
        public let task: String
        public let examples: Int
        /// Accuracy per configuration, in `configurations` order.
        public let accuracy: [Double]
    }

    public func run(log: (String) -> Void, onEvent: (TrainerEvent) -> Void) throws -> [Row] {
        let modelPath = try ModelLocator.resolve(model)
        let raw = GraftHome.path + "/data/raw"
        try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
        var tests: [(task: Task, items: [LabelledText])] = []
        for task in Self.tasks {
            guard let corpus = Prepare.corpora.first(where: { $0.name == task.name }) else { throw BenchError("no corpus '\(task.name)'") }
            let all: [LabelledText]
            do { all = try Prepare.read(corpus.source(raw)) } catch {
                throw BenchError("\(error)\nthe demo's corpora are not fetched: run scripts/fetch-data first")
            }
            let split = Prepare.split(all, validation: 0, test: 0.25, seed: seed)
            let train = shuffled(split.train).prefix(trainExamples), test = Array(shuffled(split.test).prefix(testExamples))
            let dir = workDir + "/" + task.name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let rows = try train.map { t -> String in
                JSONValue.object([("prompt", .string(prompt(t.text))), ("completion", .string(" " + (try word(task, t.label))))]).serialized()
            }
            try FileBytes.write(rows.joined(separator: "\n") + "\n", to: dir + "/train.jsonl")
            tests.append((task, test))
            let adapter = dir + "/adapter"
            if retrain || (try? PhatgooseGates.read(adapter: adapter)) == nil {
                log("\(task.name): training a LoRA adapter on \(train.count) examples")
                var config = LoRAConfig(rank: rank, alpha: Double(2 * rank), targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"])
                config.dropout = 0.05
                var spec = TrainSpec(model: modelPath, task: .causalLM, data: dir + "/train.jsonl", adapter: config, output: adapter)
                spec.validationSplit = 0; spec.trainer = trainer; spec.overwrite = true
                _ = try TrainingRun.run(spec, log: log, onEvent: onEvent)
                log("\(task.name): training its PHATGOOSE gates")
                var gate = GateSpec(model: modelPath, adapter: adapter, data: dir + "/train.jsonl")
                gate.trainer.seed = seed; gate.trainer.maxSteps = gateSteps
                try PhatgooseTraining.run(gate, log: log, onEvent: onEvent)
            } else {
                log("\(task.name): reusing \(adapter) (--retrain to train again)")
            }
        }
        return try evaluate(modelPath: modelPath, tests: tests, log: log)
    }

    func evaluate(modelPath: String, tests: [(task: Task, items: [LabelledText])], log: (String) -> Void) throws -> [Row] {
        var lm = try CausalLM(path: modelPath)
        lm.model.packForBatches()
        var experts: [(name: String, updates: [String: any LayerUpdate], gates: [String: FloatBuffer])] = []
        for (task, _) in tests {
            let a = try AdapterMethods.open(workDir + "/" + task.name + "/adapter")
            let gates = try PhatgooseGates.read(adapter: a.path) ?? [:]
            experts.append((task.name, try lm.model.fitted(a.layerUpdates(dropout: 0), source: a.path), gates))
        }
        let arrow = try ArrowRouting.updates(experts: experts.map { ($0.name, $0.updates) }, settings: ArrowSettings())
        let phatgoose = try PhatgooseRouting.updates(experts: experts, settings: PhatgooseSettings())
        let uniform = AdapterMix(experts.map { AdapterMix.Part(name: $0.name, updates: $0.updates, scale: 1 / Float(experts.count)) })
        var rows: [Row] = []
        for (t, (task, items)) in tests.enumerated() {
            // Each candidate answer's first token after the prompt (" positive", …): distinct within a task.
            let firsts = try task.words.map { w -> Int in
                guard let id = lm.tokenizer.encode(" " + w.word, addSpecialTokens: false).first else { throw BenchError("'\(w.word)' has no tokens") }
                return id
            }
            guard Set(firsts).count == firsts.count else { throw BenchError("\(task.name): two answers start with the same token") }
            let mixes: [AdapterMix] = [
                AdapterMix([AdapterMix.Part(name: task.name, updates: experts[t].updates, scale: 1)]), .none,
                AdapterMix([AdapterMix.Part(name: "arrow", updates: arrow, scale: 1)]),
                AdapterMix([AdapterMix.Part(name: "phatgoose", updates: phatgoose, scale: 1)]), uniform,
            ]
            var correct = [Int](repeating: 0, count: mixes.count)
            for item in items {
                let ids = lm.tokenizer.encode(prompt(item.text), addSpecialTokens: false)
                var batch = mixes.map { LlamaModel.BatchSequence(tokens: ids, cache: lm.model.makeCache(reserving: ids.count), adapters: $0) }
                let out = try lm.model.forward(batch: &batch)
                let gold = try task.words.firstIndex { $0.label == item.label } ?? { throw BenchError("\(task.name): unknown label '\(item.label)'") }()
                for (c, logits) in out.enumerated() {
                    let last = logits[logits.count - 1]
                    let best = firsts.indices.max { last[firsts[$0]] < last[firsts[$1]] }!
                    if best == gold { correct[c] += 1 }
                }
            }
            let row = Row(task: task.name, examples: items.count, accuracy: correct.map { Double($0) / Double(max(1, items.count)) })
            log("\(task.name): " + zip(Self.configurations, row.accuracy).map { "\($0) \(String(format: "%.1f", $1 * 100))" }.joined(separator: ", "))
            rows.append(row)
        }
        return rows
    }

    func prompt(_ text: String) -> String {
        let words = text.split(whereSeparator: { $0.isWhitespace })
        return words.prefix(maxWords).joined(separator: " ") + (words.count > maxWords ? " …" : "") + "\nAnswer:"
    }

    func word(_ task: Task, _ label: String) throws -> String {
        guard let w = task.words.first(where: { $0.label == label })?.word else { throw BenchError("\(task.name): unknown label '\(label)'") }
        return w
    }

    func shuffled(_ items: [LabelledText]) -> [LabelledText] {
        var rng = SeededRNG(seed: seed, key: "route-bench")
        var a = items
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return a
    }
}
