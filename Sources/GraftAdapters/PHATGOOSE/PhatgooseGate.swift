import Foundation
import GraftFormats
import GraftTensor

/// PHATGOOSE's gate on one LoRA module (Muqeeth et al. 2024, "Learning to Route Among Specialized Experts
/// for Zero-Shot Generalization"; reference code r-three/phatgoose): after an adapter is trained, each of
/// its modules gets a vector v [in], trained with everything else frozen on the adapter's own data, that
/// scales the module's update per token: y = x·Wᵀ + b + σ(x·v)·s·(x·Aᵀ)·Bᵀ. v starts at zero (every gate
/// half open). At inference the gate is not applied: v becomes the module's routing vector
/// (`PhatgooseRouting`). Forward and backward side by side.
public final class PhatgooseGate: LayerUpdate, @unchecked Sendable {
    public let lora: LoRAUpdate
    /// v [in].
    public let gate: FloatBuffer
    private var gradGate: FloatBuffer?
    let inFeatures: Int

    public init(lora: LoRAUpdate, gate: FloatBuffer? = nil) {
        self.lora = lora
        inFeatures = lora.a.count / lora.rank
        self.gate = gate ?? FloatBuffer(repeating: 0, count: inFeatures)
    }

    public var method: String { "phatgoose-gate" }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        lora.fit(module: module, inFeatures: i, outFeatures: o) ?? (gate.count == i ? nil : "its gate has \(gate.count) entries for \(i) inputs")
    }

    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: PhatgooseGates.suffix, value: gate, gradient: gradGate, shape: [inFeatures], decay: false)]
    }

    /// Only the gate trains; the LoRA module stays as it was trained.
    public func makeTrainable() { gradGate = FloatBuffer(repeating: 0, count: gate.count) }

    final class Saved {
        /// The update alone, s·(x·Aᵀ)·Bᵀ [rows × out], and each row's gate σ(x·v).
        let delta: FloatBuffer, open: [Float]
        init(delta: FloatBuffer, open: [Float]) { self.delta = delta; self.open = open }
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let y = base.forward(x, rows: rows)
        let out = base.outFeatures
        let delta = FloatBuffer(repeating: 0, count: rows * out)
        let t = LowRankBranch.down(x, rows: rows, a: lora.a, rank: lora.rank, inFeatures: inFeatures)
        LowRankBranch.up(t, rows: rows, b: lora.b, rank: lora.rank, outFeatures: out, scale: lora.scale, into: delta.mutable.baseAddress!)
        let xv = x.values, gv = gate.values, dv = delta.values, yv = y.mutable
        var open = [Float](repeating: 0, count: rows)
        for r in 0..<rows {
            var score: Float = 0
            for k in 0..<inFeatures { score += xv[r * inFeatures + k] * gv[k] }
            let g = 1 / (1 + exp(-score))
            open[r] = g
            for j in 0..<out { yv[r * out + j] += g * dv[r * out + j] }
        }
        return (y, Saved(delta: delta, open: open))
    }

    /// With g = σ(x·v) per row and Δ the update: dL/dv = Σ_rows (dy·Δ)·g(1−g)·x; dL/dx = dy·W + g·dy·s·B·A + (dy·Δ)·g(1−g)·v.
    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        let s = saved as! Saved
        let out = base.outFeatures
        let dyv = dy.values, dv = s.delta.values, xv = x.values
        // The gate's score gradient per row, and the update's output gradient g·dy.
        var scoreGrad = [Float](repeating: 0, count: rows)
        let dDelta = FloatBuffer(count: rows * out), ddv = dDelta.mutable
        for r in 0..<rows {
            let g = s.open[r]
            var dot: Float = 0
            for j in 0..<out { dot += dyv[r * out + j] * dv[r * out + j]; ddv[r * out + j] = g * dyv[r * out + j] }
            scoreGrad[r] = dot * g * (1 - g)
        }
        if let gradGate {
            let gg = gradGate.mutable
            for r in 0..<rows where scoreGrad[r] != 0 {
                let c = scoreGrad[r]
                for k in 0..<inFeatures { gg[k] += c * xv[r * inFeatures + k] }
            }
        }
        guard needInput else { return nil }
        let dx = base.inputGradient(dy, rows: rows)
        let u = FloatBuffer(count: rows * lora.rank)  // dΔ·B
        Linalg.gemm(m: rows, n: lora.rank, k: out, a: dDelta.values.baseAddress!, b: lora.b.values.baseAddress!, c: u.mutable.baseAddress!)
        let branch = LowRankBranch.inputGradient(u, rows: rows, a: lora.a, rank: lora.rank, inFeatures: inFeatures, scale: lora.scale)
        let dxv = dx.mutable, bv = branch.values, gv = gate.values
        for r in 0..<rows {
            let c = scoreGrad[r]
            for k in 0..<inFeatures { dxv[r * inFeatures + k] += bv[r * inFeatures + k] + c * gv[k] }
        }
        return dx
    }
}

/// The gates of an adapter's modules, in `phatgoose_gates.safetensors` beside its adapter files: one
/// tensor [in] per module, named by the module's path in the model plus `.phatgoose_gate`.
public enum PhatgooseGates {
    public static let fileName = "phatgoose_gates.safetensors"
    public static let suffix = "phatgoose_gate"

    /// The gates by module path, or nil when the adapter has none.
    public static func read(adapter path: String) throws -> [String: FloatBuffer]? {
        let file = (path as NSString).appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        let st = try SafetensorsFile(path: file)
        var out: [String: FloatBuffer] = [:]
        for name in st.tensors.map(\.name) {
            guard name.hasSuffix("." + suffix) else { throw FormatError(file, name, "is not a gate (names end in .\(suffix))") }
            let t = try st.tensor(name)
            guard t.shape.count == 1 else { throw FormatError(file, name, "a gate is a vector, not shape \(t.shape)") }
            out[String(name.dropLast(suffix.count + 1))] = FloatBuffer(t)
        }
        guard !out.isEmpty else { throw FormatError(file, nil, "holds no gates") }
        return out
    }

    /// Writes the gates into the adapter's folder, replacing any there (atomically: the old file or the new, never half).
    public static func write(_ gates: [(module: String, gate: FloatBuffer)], adapter path: String, metadata: [String: String]) throws {
        let file = (path as NSString).appendingPathComponent(fileName)
        // A small file: its safetensors bytes built here, then written durably in one piece.
        var header: [(String, JSONValue)] = [("__metadata__", .object(metadata.merging(["format": "pt"]) { a, _ in a }.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))]
        var blob = Data()
        for (module, g) in gates.sorted(by: { $0.module < $1.module }) {
            let start = blob.count
            withExtendedLifetime(g) { blob.append(UnsafeRawBufferPointer(g.values).bindMemory(to: UInt8.self)) }  // little-endian hosts
            header.append((module + "." + suffix, .object([("dtype", .string("F32")), ("shape", .array([.int(Int64(g.count))])),
                                                          ("data_offsets", .array([.int(Int64(start)), .int(Int64(blob.count))]))])))
        }
        var json = Data(JSONValue.object(header).serialized().utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var length = UInt64(json.count).littleEndian
        var bytes = Data(bytes: &length, count: 8)
        bytes.append(json); bytes.append(blob)
        try DurableFile.write(bytes, to: file)
    }
}
