import GraftAdapters
import GraftFormats
import GraftTensor

/// One model a merge reads: a checkpoint, optionally with a LoRA adapter applied on the fly to the
/// tensors it targets (mergekit's `model+adapter`). Tensors are read lazily through the memory map
/// and their pages released after use, so reading a model costs no more memory than its largest tensor.
public final class ModelSource: @unchecked Sendable {
    public let reference: ModelReference
    public let checkpoint: Checkpoint
    public let adapter: LoRAAdapter?
    private let saved: [String: Tensor]

    public init(_ reference: ModelReference) throws {
        self.reference = reference
        checkpoint = try Checkpoint(path: reference.path)
        if let a = reference.adapter {
            let adapter = try LoRAAdapter(path: a)
            self.adapter = adapter
            // Fail now, not halfway through the merge, when the adapter does not fit this model.
            var matched: [String: String] = [:]
            for tn in checkpoint.names { if let m = adapter.module(forTensor: tn) { matched[m.name] = tn } }
            for (name, m) in adapter.modules.sorted(by: { $0.key < $1.key }) {
                guard let tn = matched[name], let info = checkpoint.info(tn) else {
                    throw MergeError.input("\(a): adapter module '\(name)' has no matching weight in \(reference.path)")
                }
                let want = adapter.config.fanInFanOut ? [m.a.shape[1], m.b.shape[0]] : [m.b.shape[0], m.a.shape[1]]
                guard info.shape == want else {
                    throw MergeError.input("\(a): adapter module '\(name)' gives a \(want) update but \(reference.path) has '\(tn)' of shape \(info.shape)")
                }
            }
            var s: [String: Tensor] = [:]
            for (n, t) in adapter.savedTensors where checkpoint.info(n) != nil { s[n] = t }
            saved = s
        } else {
            adapter = nil
            saved = [:]
        }
    }

    public var names: [String] { checkpoint.names }
    public func info(_ name: String) -> TensorInfo? { checkpoint.info(name) }

    /// The tensor as float32, with the adapter's update or saved replacement applied.
    public func floats(_ name: String) throws -> FloatBuffer {
        if let t = saved[name] { return FloatBuffer(t) }
        let t = try checkpoint.tensor(name)
        guard let adapter, let m = adapter.module(forTensor: name) else { return FloatBuffer(t) }
        let w = FloatBuffer(t)
        let out = FloatBuffer(count: w.count)
        let d = adapter.delta(m)
        let (o, wv, dv) = (out.mutable, w.values, d.values)
        parallelFor(count: w.count) { r in for j in r { o[j] = wv[j] + dv[j] } }
        return out
    }

    public func tensor(_ name: String) throws -> Tensor { try checkpoint.tensor(name) }

    public func release(_ name: String) { checkpoint.releasePages(name) }
}
