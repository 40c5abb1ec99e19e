import Foundation
import GraftFormats
import GraftTensor

/// How to build a new VeRA adapter, with PEFT's `VeraConfig` meanings: rank r of the shared random
/// projections, the seed they are drawn from, λ_d's initial value, dropout, targets.
public struct VeRAConfig: AdapterRecipe, Equatable {
    public var rank: Int
    public var targets: ModuleTargets
    /// PEFT's `projection_prng_key`: the projections are a function of it.
    public var projectionSeed: UInt64 = 0
    /// λ_d's initial value (PEFT's `d_initial`).
    public var dInitial: Double = 0.1
    public var dropout: Double = 0

    public init(rank: Int, targets: ModuleTargets) { self.rank = rank; self.targets = targets }

    /// PEFT's default r for VeRA (the paper uses 256 and more: one projection pair serves every layer).
    public static let defaultRank = 256

    static let info = AdapterMethodInfo(
        name: "vera", summary: "frozen random projections shared by every layer, two trained scaling vectors per layer (Kopiczko et al. 2024)",
        peftType: "VERA", fusable: true,
        options: [("rank", "rank of the shared projections (default \(defaultRank))"), ("dropout", "dropout on the adapter's input (default 0)"),
                  ("projection-seed", "seed of the shared random projections (PEFT's projection_prng_key, default 0)")],
        recipe: { s in
            var c = VeRAConfig(rank: try s.int("rank") ?? defaultRank,
                               targets: s.targets ?? ModuleTargets(names: LoRAConfig.defaultTargets(llama: s.llama)))
            c.dropout = try s.double("dropout") ?? 0
            c.projectionSeed = UInt64(try s.int("projection-seed") ?? 0)
            return c
        })

    public var method: String { "vera" }
    public var label: String { "VeRA r=\(rank)" }

    public func validate() throws {
        guard rank > 0 else { throw LoRAError("VeRA rank must be a positive integer (got \(rank))") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError("vera_dropout must be in [0, 1) (got \(dropout))") }
    }

    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        try makeUpdates(for: [TargetLayer(module: module, weight: weight, inFeatures: inFeatures, outFeatures: outFeatures)], seed: seed).updates[0]
    }

    /// The shared projections, Kaiming-uniform as PEFT draws them (A: U(±√(6/in_max)), B: U(±√(6/r))) from a
    /// stream of `projectionSeed`, sized by the widest targeted layer; λ_b = 0, λ_d = d_initial.
    public func makeUpdates(for layers: [TargetLayer], seed: UInt64) throws -> (updates: [any LayerUpdate], shared: [SharedTensor]) {
        let maxIn = layers.map(\.inFeatures).max() ?? 0, maxOut = layers.map(\.outFeatures).max() ?? 0
        var rng = SeededRNG(seed: projectionSeed, key: "vera")
        func uniform(_ n: Int, bound: Float) -> FloatBuffer { FloatBuffer((0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound }) }
        let a = uniform(rank * maxIn, bound: (6 / Float(maxIn)).squareRoot())
        let b = uniform(maxOut * rank, bound: (6 / Float(rank)).squareRoot())
        let updates: [any LayerUpdate] = layers.map { l in
            VeRAUpdate(sharedA: a, sharedB: b, rank: rank, inFeatures: l.inFeatures, outFeatures: l.outFeatures,
                       lambdaB: FloatBuffer(repeating: 0, count: l.outFeatures), lambdaD: FloatBuffer(repeating: Float(dInitial), count: rank),
                       dropout: Float(dropout))
        }
        return (updates, [SharedTensor(name: "base_model.vera_A", value: a, shape: [rank, maxIn]),
                          SharedTensor(name: "base_model.vera_B", value: b, shape: [maxOut, rank])])
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        .object([
            ("base_model_name_or_path", .string(baseModel)), ("bias", .string("none")), ("d_initial", .double(dInitial)),
            ("fan_in_fan_out", .bool(false)), ("inference_mode", .bool(true)), ("init_weights", .bool(true)),
            ("layers_pattern", .null), ("layers_to_transform", targets.layers.map { .array($0.map { .int(Int64($0)) }) } ?? .null),
            ("modules_to_save", modulesToSave.isEmpty ? .null : .array(modulesToSave.map { .string($0) })),
            ("peft_type", .string("VERA")), ("projection_prng_key", .int(Int64(projectionSeed))), ("r", .int(Int64(rank))),
            ("revision", .null), ("save_projection", .bool(true)), ("target_modules", targets.json), ("task_type", .string(taskType)),
            ("vera_dropout", .double(dropout)),
        ])
    }
}
