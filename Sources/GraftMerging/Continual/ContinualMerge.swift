import Foundation
import GraftFormats
import GraftTensor

/// Continual merging by orthogonal projection (OPCM): models arrive one at a time and are folded into
/// a running merge state whose size does not grow with the number of models.
///
/// For model t with task vector τₜ = θₜ − θ₀ and running merged update τ_M:
/// - each linear weight (2-D, not an embedding): τ_M = U Σ Vᵀ; s = the first index where the
///   cumulative share of Σ exceeds `alpha`; P = Uᵀ τₜ V with its diagonal and its leading s × s block
///   zeroed; the update added is U P Vᵀ — τₜ with the merged update's principal directions removed;
/// - other tensors add τₜ unchanged;
/// - τ_M ← λₜ₋₁ · τ_M + (projected) τₜ, then rescaled so ‖τ_M‖ equals the mean ‖τᵢ‖ of the models so far
///   (λₜ = ‖τ_M‖ / mean ‖τᵢ‖ before rescaling).
/// - the written model is θ₀ + `lambda`·τ_M (`lambda` defaults to 1, FusionBench's OPCM; a scale to tune on validation data).
///
/// State (`--state DIR`): the unscaled update D (one f32 safetensors file), a scalar c with τ_M = c·D,
/// λₜ₋₁ and the task-vector norms; each step streams D, θ₀ and θₜ one tensor at a time.
///
/// Source: Tang et al. 2025, "Merging Models on the Fly Without Retraining: A Sequential Approach to
/// Scalable Continual Model Merging" (arXiv 2501.09522); matches FusionBench 0.2.33
/// `fusion_bench/method/opcm/opcm.py` (`OPCMForCLIP.run`, `merge_linear_weights`, `merge_other_parameters`).
public enum ContinualMerge {
    public struct Descriptor: MethodDescription {
        public let name = "opcm"
        public let summary = "continual merging by orthogonal projection, one model at a time (graft merge --continual; Tang et al. 2025)"
        public var parameters: [ParameterSpec] {
            [ParameterSpec("alpha", .global, default: .number(0.5), range: ParameterRange(lower: 0, upper: 1, lowerOpen: true, upperOpen: true),
                           help: "share of the merged update's spectrum protected from new task vectors"),
             ParameterSpec("lambda", .global, default: .number(1),
                           help: "scale of the merged update in the written model (θ₀ + λ·τ_M; not part of --state, 1 = FusionBench's OPCM)")]
        }
    }
    public static let descriptor = Descriptor()

    /// A checked continual merge: base, the models in arrival order, and the tensors.
    public struct Plan: Sendable {
        public let config: MergeConfig
        public let base: ModelSource
        public let models: [ModelReference]
        public let alpha: Double
        /// Scale of the merged update in the written model.
        public let lambda: Double
        public let items: [(name: String, shape: [Int], dtype: DType)]
        public var tensorCount: Int { items.count }

        public init(config: MergeConfig) throws {
            guard config.mergeMethod == "opcm" else {
                throw MergeError.config("--continual merges with merge_method: opcm (got '\(config.mergeMethod)')")
            }
            guard let b = config.baseModel else { throw MergeError.config("opcm needs `base_model:`") }
            self.config = config
            base = try ModelSource(b)
            models = config.models.map(\.model).filter { $0 != b }
            guard !models.isEmpty else { throw MergeError.config("`models:` lists no model besides the base") }
            let valid = Set(ContinualMerge.descriptor.parameters.map(\.name))
            for k in config.parameters.keys where !valid.contains(k) {
                throw MergeError.config("parameters.\(k): unknown parameter for opcm; valid: \(valid.sorted().joined(separator: ", "))")
            }
            for (i, e) in config.models.enumerated() where !e.parameters.isEmpty {
                throw MergeError.config("models[\(i)].parameters: opcm takes no per-model parameters")
            }
            let spec = ContinualMerge.descriptor.parameters[0]
            alpha = try MergePlan.resolve(spec, [config.parameters], tensor: "", t: 0, where: "parameters").number!
            lambda = try MergePlan.resolve(ContinualMerge.descriptor.parameters[1], [config.parameters], tensor: "", t: 0, where: "parameters").number!
            let b0 = base
            items = b0.names.map { n in let i = b0.info(n)!; return (n, i.shape, i.dtype) }
            // Check every model now, before any work.
            for m in models {
                let src = try ModelSource(m)
                try Self.checkCompatible(src, with: base)
            }
        }

        static func checkCompatible(_ m: ModelSource, with base: ModelSource) throws {
            let names = Set(base.names)
            for n in base.names {
                guard let i = m.info(n) else { throw MergeError.input("tensor '\(n)' is in \(base.reference.name) but missing from \(m.reference.name)") }
                let b = base.info(n)!
                guard i.shape == b.shape else {
                    throw MergeError.input("shape mismatch for '\(n)': \(base.reference.name) has \(b.shape), \(m.reference.name) has \(i.shape)")
                }
                guard i.dtype.isFloatingPoint == b.dtype.isFloatingPoint else {
                    throw MergeError.input("dtype mismatch for '\(n)': \(base.reference.name) has \(b.dtype.rawValue), \(m.reference.name) has \(i.dtype.rawValue)")
                }
            }
            for n in m.names where !names.contains(n) {
                throw MergeError.input("tensor '\(n)' is in \(m.reference.name) but missing from \(base.reference.name)")
            }
        }
    }

    /// The running state.
    struct State {
        var models: [String]
        var norms: [Double]
        var previousLambda: Double
        var scale: Double
        var basePath: String
        var alpha: Double

        func json() -> JSONValue {
            .object([
                ("method", .string("opcm")), ("base", .string(basePath)), ("alpha", .double(alpha)),
                ("models", .array(models.map { .string($0) })), ("task_vector_norms", .array(norms.map { .double($0) })),
                ("previous_lambda", .double(previousLambda)), ("scale", .double(scale)),
            ])
        }

        init(models: [String], norms: [Double], previousLambda: Double, scale: Double, basePath: String, alpha: Double) {
            self.models = models; self.norms = norms; self.previousLambda = previousLambda; self.scale = scale
            self.basePath = basePath; self.alpha = alpha
        }

        init(path: String) throws {
            guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(path, nil, "cannot read") }
            let j: JSONValue
            do { j = try JSONValue.parse([UInt8](data)) } catch { throw FormatError(path, nil, "invalid JSON: \(error)") }
            guard j["method"]?.stringValue == "opcm", let base = j["base"]?.stringValue, let alpha = j["alpha"]?.doubleValue,
                  let models = j["models"]?.arrayValue?.compactMap(\.stringValue),
                  let norms = j["task_vector_norms"]?.arrayValue?.compactMap(\.doubleValue),
                  let lam = j["previous_lambda"]?.doubleValue, let scale = j["scale"]?.doubleValue, norms.count == models.count else {
                throw FormatError(path, nil, "not a Graft continual-merge state")
            }
            self.init(models: models, norms: norms, previousLambda: lam, scale: scale, basePath: base, alpha: alpha)
        }
    }

    static let stateFile = "continual_state.json"
    static let deltaFile = "delta.safetensors"

    /// Whether OPCM treats the tensor as a linear layer's weight (projected) or adds it as is.
    static func isLinearWeight(_ name: String, shape: [Int]) -> Bool {
        guard shape.count == 2 else { return false }
        let l = name.lowercased()
        return !(l.contains("embed") || l.contains(".wte.") || l.contains(".wpe.") || l.hasPrefix("wte.") || l.hasPrefix("wpe."))
    }

    /// Runs the models not yet in the state, then writes the merged model to `outPath`.
    public static func run(_ plan: Plan, to outPath: String, statePath: String?, options: MergeOptions = MergeOptions(),
                           progress: ((Int, Int, String, StreamProgress) -> Void)? = nil) throws -> MergeSummary {
        let start = Date()
        let fm = FileManager.default
        // A state folder kept across runs, or a private temporary one.
        let tmpState = statePath == nil ? NSTemporaryDirectory() + "graft-opcm-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" : nil
        defer { if let t = tmpState { try? fm.removeItem(atPath: t) } }
        let stateDir = statePath ?? tmpState!
        var state: State? = nil
        let statePathFile = (stateDir as NSString).appendingPathComponent(stateFile)
        if fm.fileExists(atPath: statePathFile) {
            let s = try State(path: statePathFile)
            guard s.basePath == plan.base.reference.path else {
                throw MergeError.input("\(statePathFile): state was built on base \(s.basePath), not \(plan.base.reference.path)")
            }
            guard s.alpha == plan.alpha else { throw MergeError.input("\(statePathFile): state used alpha \(s.alpha), config says \(plan.alpha)") }
            let names = plan.models.map(\.path)
            guard s.models.count <= names.count, Array(names.prefix(s.models.count)) == s.models else {
                throw MergeError.input("\(statePathFile): the state merged \(s.models) — the config's models must start with these, in order")
            }
            state = s
        }
        let todo = plan.models.filter { m in !(state?.models.contains(m.path) ?? false) }
        for (k, m) in todo.enumerated() {
            let src = try ModelSource(m)
            let step = (state?.models.count ?? 0) + 1
            state = try addModel(src, plan: plan, state: state, stateDir: stateDir, options: options) { p in
                progress?(step, plan.models.count, m.name, p)
            }
            _ = k
        }
        guard let final = state else { throw MergeError.input("nothing to merge") }
        try writeModel(plan: plan, state: final, stateDir: stateDir, to: outPath, options: options)
        return MergeSummary(tensors: plan.models.count, bytesRead: 0, bytesWritten: 0,
                            seconds: Date().timeIntervalSince(start), outputPath: URL(fileURLWithPath: outPath).standardizedFileURL.path)
    }

    /// One OPCM step: streams D, θ₀ and θₜ and writes the new D into a fresh state folder that replaces the old one.
    static func addModel(_ m: ModelSource, plan: Plan, state: State?, stateDir: String, options: MergeOptions,
                         progress: (StreamProgress) -> Void) throws -> State {
        try Plan.checkCompatible(m, with: plan.base)
        let floatItems = plan.items.filter { $0.dtype.isFloatingPoint }
        let out = try OutputDirectory(stateDir, overwrite: true)
        var newState: State
        do {
            let writer = try ShardedSafetensorsWriter(directory: out.tempPath,
                                                      specs: floatItems.map { TensorSpec(name: $0.name, dtype: .f32, shape: $0.shape) },
                                                      maxShardBytes: Int.max, prefix: "delta")
            let old = state == nil ? nil : try SafetensorsFile(path: (stateDir as NSString).appendingPathComponent(deltaFile))
            var tvNorm2 = 0.0, mergedNorm2 = 0.0
            let total = floatItems.reduce(0) { $0 + $1.shape.reduce(1, *) * 4 }
            var done = 0
            for (k, item) in floatItems.enumerated() {
                let base = try plan.base.floats(item.name)
                let x = try m.floats(item.name)
                if !options.allowNonFinite, let bad = x.firstNonFinite() {
                    throw MergeError.input("\(m.reference.name): tensor '\(item.name)' has a non-finite value at element \(bad); pass --allow-nonfinite to merge anyway")
                }
                let n = base.count
                let tau = FloatBuffer(count: n)
                let tv = tau.mutable, bv = base.values, xv = x.values
                for j in 0..<n { tv[j] = xv[j] - bv[j]; tvNorm2 += Double(tv[j]) * Double(tv[j]) }
                let newD: FloatBuffer
                if let state, let old {
                    let d = FloatBuffer(try old.tensor(item.name))
                    let prevScale = Float(state.previousLambda * state.scale)
                    let added = isLinearWeight(item.name, shape: item.shape)
                        ? try project(tau, onto: d, rows: item.shape[0], cols: item.shape[1], alpha: plan.alpha)
                        : tau
                    newD = FloatBuffer(count: n)
                    let nd = newD.mutable, dv = d.values, av = added.values
                    // prev τ_M = c·D; D' = λₜ₋₁ · τ_M + added   (λₜ = 1 during the step, as in FusionBench)
                    for j in 0..<n { nd[j] = prevScale * dv[j] + av[j] }
                    old.releasePages(item.name)
                } else {
                    newD = tau
                }
                for v in newD.values { mergedNorm2 += Double(v) * Double(v) }
                try writer.write(item.name, tensor: newD.tensor(shape: item.shape))
                plan.base.release(item.name); m.release(item.name)
                done += n * 4
                progress(StreamProgress(tensorsDone: k + 1, tensorsTotal: floatItems.count, bytesDone: done, bytesTotal: total, current: item.name))
            }
            try writer.finish()
            let tvNorm = tvNorm2.squareRoot()
            if var s = state {
                s.norms.append(tvNorm)
                let avg = s.norms.reduce(0, +) / Double(s.norms.count)
                let norm = mergedNorm2.squareRoot()
                s.previousLambda = norm / avg
                s.scale = avg / norm
                s.models.append(m.reference.path)
                newState = s
            } else {
                newState = State(models: [m.reference.path], norms: [tvNorm], previousLambda: 1, scale: 1,
                                 basePath: plan.base.reference.path, alpha: plan.alpha)
            }
            try FileBytes.write(Data((newState.json().serialized(pretty: true) + "\n").utf8), to: out.path(stateFile))
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
        return newState
    }

    /// τ with the merged update's principal directions removed: with D = U Σ Vᵀ (thin) and
    /// P = Uᵀ τ V, returns τ − U Q Vᵀ where Q keeps P's diagonal and its leading s × s block.
    static func project(_ tau: FloatBuffer, onto d: FloatBuffer, rows: Int, cols: Int, alpha: Double) throws -> FloatBuffer {
        let r = min(rows, cols)
        let (u, s, vt) = try Linalg.svd(d.array, rows: rows, cols: cols)
        let total = s.reduce(0.0) { $0 + Double($1) }
        var split = 0
        if total > 0 {
            var cum = 0.0
            split = r  // argmax of an all-false mask is 0 in torch
            for (i, v) in s.enumerated() { cum += Double(v); if Float(cum / total) > Float(alpha) { split = i; break } }
            if split == r { split = 0 }
        }
        // P = Uᵀ τ V  (r × r): first Uᵀ τ (r × cols), then · Vᵀᵀ.
        let utTau = Linalg.matmul(u, tau.array, m: r, k: rows, n: cols, transA: true)
        let p = Linalg.matmul(utTau, vt, m: r, k: cols, n: r, transB: true)
        var q = [Float](repeating: 0, count: r * r)
        for i in 0..<r { q[i * r + i] = p[i * r + i] }
        for i in 0..<split { for j in 0..<split { q[i * r + j] = p[i * r + j] } }
        let uq = Linalg.matmul(u, q, m: rows, k: r, n: r)
        let removed = Linalg.matmul(uq, vt, m: rows, k: r, n: cols)
        let out = FloatBuffer(count: rows * cols)
        let o = out.mutable, t = tau.values
        for j in 0..<(rows * cols) { o[j] = t[j] - removed[j] }
        return out
    }

    /// θ₀ + λ·c·D for every tensor, as a model folder.
    static func writeModel(plan: Plan, state: State, stateDir: String, to outPath: String, options: MergeOptions) throws {
        let inputs = [plan.base.reference.path, stateDir] + plan.models.flatMap { [$0.path] + ($0.adapter.map { [$0] } ?? []) }
        let out = try OutputDirectory(outPath, overwrite: options.overwrite, inputs: inputs)
        do {
            let outDType = plan.config.outDtype ?? plan.config.dtype
            let writer = try ShardedSafetensorsWriter(
                directory: out.tempPath,
                specs: plan.items.map { TensorSpec(name: $0.name, dtype: $0.dtype.isFloatingPoint ? (outDType ?? $0.dtype) : $0.dtype, shape: $0.shape) },
                maxShardBytes: options.maxShardBytes)
            let delta = try SafetensorsFile(path: (stateDir as NSString).appendingPathComponent(deltaFile))
            let c = Float(state.scale * plan.lambda)
            for item in plan.items {
                guard item.dtype.isFloatingPoint else { try writer.write(item.name, tensor: try plan.base.tensor(item.name)); continue }
                let b = try plan.base.floats(item.name)
                let d = FloatBuffer(try delta.tensor(item.name))
                let r = FloatBuffer(count: b.count)
                let rv = r.mutable, bv = b.values, dv = d.values
                for j in 0..<b.count { rv[j] = bv[j] + c * dv[j] }
                try writer.write(item.name, tensor: r.tensor(shape: item.shape, dtype: outDType ?? item.dtype))
                plan.base.release(item.name); delta.releasePages(item.name)
            }
            try writer.finish()
            try MergeOutput.writeConfig(from: plan.base.checkpoint, dtype: outDType, to: out)
            if options.copyTokenizer { try MergeOutput.copyTokenizer(from: plan.base.checkpoint.directory, to: out) }
            var card = "---\ntags:\n- graft\n- merge\n---\n# Continual merge (OPCM)\n\nBase: `\(plan.base.reference.name)`, alpha \(plan.alpha), lambda \(plan.lambda).\n\nModels, in order:\n"
            card += state.models.map { "- `\($0)`" }.joined(separator: "\n") + "\n\n```yaml\n\(plan.config.text)\n```\n"
            try MergeOutput.writeModelCard(card, to: out)
            try FileBytes.write(Data(plan.config.text.utf8), to: out.path("graft_merge_config.yml"))
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
    }
}
