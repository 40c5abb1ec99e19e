import CKernels

/// A weight matrix kept in its stored block format for matrix–vector products (decode time), so a
/// token reads ~4.5 bits per weight instead of 32. Rows are `cols` elements of consecutive blocks.
/// Block layouts are ggml's: Q8_0 {f16 d; i8 q[32]}, Q4_0 {f16 d; u8 q[16]}, Q4_1 {f16 d; f16 m; u8 q[16]},
/// F16 and BF16 (plain 16-bit floats).
public struct QuantizedMatrix: @unchecked Sendable {
    public enum Format: Sendable { case q8_0, q4_0, q4_1, f16, bf16 }

    public let format: Format
    public let rows: Int
    public let cols: Int
    public let data: UnsafeRawPointer
    /// Keeps the memory `data` points into alive (a memory-mapped file).
    let owner: AnyObject?

    public init(format: Format, rows: Int, cols: Int, data: UnsafeRawPointer, owner: AnyObject?) {
        precondition(format == .f16 || format == .bf16 || cols % 32 == 0)
        self.format = format; self.rows = rows; self.cols = cols; self.data = data; self.owner = owner
    }

    /// The block format as the C kernels number it (Q8_0 0, Q4_0 1, Q4_1 2); nil for F16/BF16.
    var blockCode: Int32? {
        switch format {
        case .q8_0: return 0
        case .q4_0: return 1
        case .q4_1: return 2
        case .f16, .bf16: return nil
        }
    }

    public var rowBytes: Int {
        switch format {
        case .q8_0: return cols / 32 * 34
        case .q4_0: return cols / 32 * 18
        case .q4_1: return cols / 32 * 20
        case .f16, .bf16: return cols * 2
        }
    }

    /// Rows per chunk of work at least, when the products split over the cores: 576-row products run in
    /// one chunk per thread, the 1536-row and vocabulary-sized ones in more (`forkJoinRanges`).
    static let rowsPerChunk = 256

    /// y[r] = Σ_c W[r, c] · x[c] for one input vector, rows split across the cores: the dequantised
    /// matrix times x up to float rounding. Q8_0/Q4_0/Q4_1 run `graft_matvec_float` (quants turned into
    /// floats 16 lanes at a time, float32 products); F16/BF16 rows convert through F16C here.
    public func matvec(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        guard let code = blockCode else {
            let ctx = UncheckedSendable((x, y))
            let me = self
            forkJoinRanges(count: rows, minChunk: Self.rowsPerChunk) { rr in
                let (x, y) = ctx.value
                for r in rr { y[r] = me.dotF16(row: r, x) }
            }
            return
        }
        let nb = cols / 32
        var sums = [Float](repeating: 0, count: nb)
        for b in 0..<nb { var s: Float = 0; for j in 0..<32 { s += x[b * 32 + j] }; sums[b] = s }
        let me = self
        sums.withUnsafeBufferPointer { sb in
            let ctx = UncheckedSendable((x, y, sb.baseAddress!))
            // Every product is split over the cores through the spinning fork–join pool: a decode step
            // runs ~200 of them, too short for GCD's hand-offs.
            forkJoinRanges(count: rows, minChunk: Self.rowsPerChunk) { rr in
                let (x, y, sums) = ctx.value
                graft_matvec_float(code, me.data.assumingMemoryBound(to: UInt8.self), Int32(me.cols), Int32(rr.lowerBound), Int32(rr.upperBound),
                                   x, sums, y)
            }
        }
    }

    /// Like `matvec`, but with x quantised to 8 bits per 32-element block and integer dot products
    /// (AVX-512 VNNI), as llama.cpp computes decode steps: several times faster, at the cost of ~0.4 %
    /// relative error per activation. F16/BF16 matrices use the float path.
    public func matvecInt8(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        guard let code = blockCode else { return matvec(x, into: y) }
        let nb = cols / 32
        var xq = [Int8](repeating: 0, count: cols)
        var xd = [Float](repeating: 0, count: nb)
        var xs = [Int32](repeating: 0, count: nb)
        graft_quantize_q8(x, Int32(cols), &xq, &xd, &xs)
        let me = self
        xq.withUnsafeBufferPointer { q in xd.withUnsafeBufferPointer { d in xs.withUnsafeBufferPointer { s in
            let ctx = UncheckedSendable((q.baseAddress!, d.baseAddress!, s.baseAddress!, y))
            forkJoinRanges(count: rows, minChunk: Self.rowsPerChunk) { rr in
                let (q, d, s, y) = ctx.value
                graft_matvec_q8(code, me.data.assumingMemoryBound(to: UInt8.self), Int32(me.cols), Int32(rr.lowerBound), Int32(rr.upperBound),
                                q, d, s, y)
            }
        } } }
    }

    /// Rows of plain 16-bit floats (F16 through F16C; BF16 by a 16-bit shift).
    @inline(__always)
    func dotF16(row r: Int, _ x: UnsafePointer<Float>) -> Float {
        let p = data + r * rowBytes
        let brain = format == .bf16
        var acc = SIMD16<Float>(repeating: 0)
        var scalar: Float = 0
        var c = 0
        while c + 16 <= cols {
            let w: SIMD16<Float>
            if brain {
                let u = SIMD16<UInt32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: c * 2, as: SIMD16<UInt16>.self))
                w = unsafeBitCast(u &<< 16, to: SIMD16<Float>.self)
            } else {
                w = SIMD16<Float>(p.loadUnaligned(fromByteOffset: c * 2, as: SIMD16<Float16>.self))
            }
            acc += w * UnsafeRawPointer(x + c).loadUnaligned(as: SIMD16<Float>.self)
            c += 16
        }
        while c < cols {
            let bits = p.loadUnaligned(fromByteOffset: c * 2, as: UInt16.self)
            scalar += (brain ? Float(bitPattern: UInt32(bits) << 16) : Float(Float16(bitPattern: bits))) * x[c]
            c += 1
        }
        return acc.sum() + scalar
    }
}
