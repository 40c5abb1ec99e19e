import GraftTensor

/// TSV-M (Task Singular Vectors: Merge). For each 2-D tensor: the thin SVD of every task vector
/// τᵢ = Uᵢ Σᵢ Vᵢᵀ (τᵢ first scaled by its model's `weight`), keep each task's top k = ⌊r/T⌋ singular
/// triplets (r = min(rows, cols), T tasks) and place them side by side in U [rows × r], Σ [r], Vᵀ [r × cols]
/// (unfilled slots stay zero); orthogonalise U and Vᵀ by their polar factors (U⊥ = P Qᵀ for U = P S Qᵀ)
/// and merge Δ = U⊥ · diag(Σ) · V⊥ᵀ. Other tensors take the mean task vector. θ = θ₀ + α·Δ.
///
/// Source: Gargiulo et al. 2025, "Task Singular Vectors: Reducing Task Interference in Model Merging"
/// (CVPR 2025); matches FusionBench 0.2.33 `compute_and_sum_svd_mem_reduction`
/// (fusion_bench/method/task_singular_vector/utils/TSVM_utils.py) with `alpha` as in `TaskSingularVectorMerging`.
public struct TSVMerge: MergeMethod {
    public let name = "tsv"
    public let summary = "Task Singular Vectors merge: per-task top singular vectors, orthogonalised (Gargiulo et al. 2025)"
    public var basePolicy: BasePolicy { .required }
    public var parameters: [ParameterSpec] {
        [ParameterSpec("alpha", .global, default: .number(1), help: "scale of the merged task vector"),
         ParameterSpec("weight", .perModel, default: .number(1), help: "scale applied to this task vector before its SVD")]
    }

    public init() {}

    public func merge(_ g: TensorGroup) throws -> FloatBuffer {
        guard let baseBuf = g.base else { throw MergeError.method("tsv needs base_model") }
        let n = g.count, t = g.inputs.count
        let base = baseBuf.values
        let alpha = Float(g.number("alpha"))
        let taskVectors: [[Float]] = g.inputs.map { inp in
            let x = inp.values.values, w = Float(inp.number("weight"))
            return (0..<n).map { w == 1 ? x[$0] - base[$0] : (x[$0] - base[$0]) * w }
        }
        let result = FloatBuffer(count: n)
        let out = result.mutable
        guard g.shape.count == 2 else {
            // Running mean, as FusionBench computes it.
            var mean = taskVectors[0]
            for i in 1..<t { for j in 0..<n { mean[j] += (taskVectors[i][j] - mean[j]) / Float(i + 1) } }
            for j in 0..<n { out[j] = base[j] + alpha * mean[j] }
            return result
        }
        let rows = g.shape[0], cols = g.shape[1], r = min(rows, cols)
        let k = Int(Double(r) * (1.0 / Double(t)))
        var sumU = [Float](repeating: 0, count: rows * r)
        var sumS = [Float](repeating: 0, count: r)
        var sumVt = [Float](repeating: 0, count: r * cols)
        for i in 0..<t {
            let (u, s, vt) = try Linalg.svd(taskVectors[i], rows: rows, cols: cols)
            for c in 0..<k {
                let dst = i * k + c
                for row in 0..<rows { sumU[row * r + dst] = u[row * r + c] }
                sumS[dst] = s[c]
                for col in 0..<cols { sumVt[dst * cols + col] = vt[c * cols + col] }
            }
        }
        let uOrth = try polarFactor(sumU, rows: rows, cols: r)
        let vtOrth = try polarFactor(sumVt, rows: r, cols: cols)
        // Δ = U⊥ · diag(Σ) · V⊥ᵀ
        var scaled = uOrth
        for row in 0..<rows { for c in 0..<r { scaled[row * r + c] *= sumS[c] } }
        let delta = Linalg.matmul(scaled, vtOrth, m: rows, k: r, n: cols)
        for j in 0..<n { out[j] = base[j] + alpha * delta[j] }
        return result
    }

    /// P Qᵀ for the thin SVD M = P S Qᵀ: the closest matrix with orthonormal columns (rows, if wide).
    private func polarFactor(_ m: [Float], rows: Int, cols: Int) throws -> [Float] {
        let (p, _, qt) = try Linalg.svd(m, rows: rows, cols: cols)
        return Linalg.matmul(p, qt, m: rows, k: min(rows, cols), n: cols)
    }
}
