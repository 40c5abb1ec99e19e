import CKernels

/// Small SIMD kernels on raw float buffers (single-threaded; callers split work across cores).
public enum Kernels {
    /// The instruction set of the float32 product and attention kernels this build carries:
    /// "avx512", "avx2" (AVX2 + FMA) or "portable" (plain C, several times slower).
    public static var f32InstructionSet: String {
        switch graft_f32_isa() { case 2: "avx512"; case 1: "avx2"; default: "portable" }
    }

    /// Floats of scratch `attentionHead` needs for `length` positions of a `headSize`-wide head.
    public static func attentionScratchCount(length: Int, headSize: Int) -> Int {
        graft_attention_scratch(Int32(length), Int32(headSize))
    }

    /// One sequence's attention for one head: out[length × headSize] = softmax(scale·Q·Kᵀ)·V, with
    /// Q, K, V rows `stride` floats apart (a head's columns of [tokens × hidden] matrices) and out rows
    /// `outStride` apart. Every key is visible (positions past `length` are not part of the sequence).
    /// `next`: the head computed after this one (same strides), whose rows are prefetched meanwhile.
    public static func attentionHead(length: Int, headSize: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                     v: UnsafePointer<Float>, stride: Int, scale: Float,
                                     out: UnsafeMutablePointer<Float>, outStride: Int, scratch: UnsafeMutablePointer<Float>,
                                     next: (q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, length: Int)? = nil) {
        graft_attention_head(Int32(length), Int32(headSize), q, k, v, Int32(stride), scale, out, Int32(outStride), scratch,
                             next?.q, next?.k, next?.v, Int32(next?.length ?? 0))
    }

    /// out = a − b
    @inline(__always)
    public static func subtract(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count n: Int) {
        var i = 0
        while i + 16 <= n {
            let x = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD16<Float>.self)
            let y = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(out + i).storeBytes(of: x - y, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { out[i] = a[i] - b[i]; i += 1 }
    }

    /// x *= s
    @inline(__always)
    public static func scale(_ x: UnsafeMutablePointer<Float>, by s: Float, count n: Int) {
        if s == 1 { return }
        var i = 0
        while i + 16 <= n {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(x + i).storeBytes(of: v * s, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { x[i] *= s; i += 1 }
    }

    /// Zeroes x[i] whose magnitude is not in `keep` (indices offset by `start`).
    @inline(__always)
    public static func keepTopK(_ x: UnsafeMutablePointer<Float>, count n: Int, start: Int, _ keep: Selection.TopK) {
        let t = keep.bits
        let tv = SIMD16<UInt32>(repeating: t)
        var i = 0
        while i + 16 <= n {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            let bits = unsafeBitCast(v, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF
            if any(bits .== tv) {
                for e in 0..<16 where !keep.contains(magnitudeBits: bits[e], index: start + i + e) { x[i + e] = 0 }
            } else {
                UnsafeMutableRawPointer(x + i).storeBytes(of: v.replacing(with: 0, where: bits .< tv), as: SIMD16<Float>.self)
            }
            i += 16
        }
        while i < n {
            if !keep.contains(magnitudeBits: x[i].bitPattern & 0x7FFF_FFFF, index: start + i) { x[i] = 0 }
            i += 1
        }
    }
}
