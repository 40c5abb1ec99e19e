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

    public var rowBytes: Int {
        switch format {
        case .q8_0: return cols / 32 * 34
        case .q4_0: return cols / 32 * 18
        case .q4_1: return cols / 32 * 20
        case .f16, .bf16: return cols * 2
        }
    }

    /// y[r] = Σ_c W[r, c] · x[c] for one input vector, rows split across the cores.
    ///
    /// The integer quants are turned into floats with bit operations and F16C alone: a 4- or 8-bit value q
    /// OR-ed into the half-precision pattern 0x6400 is the half 1024 + q. Lanes then come out in the
    /// bytes' natural interleaved order, so x is permuted once per call to match.
    public func matvec(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        let nb = cols / 32
        let plain = format == .f16 || format == .bf16
        var xp = [Float](repeating: 0, count: plain ? 0 : cols)
        var blockSums = [Float](repeating: 0, count: format == .q4_1 ? nb : 0)
        for b in 0..<(plain ? 0 : nb) {
            let src = x + b * 32
            for i in 0..<16 {
                switch format {
                case .q8_0:  // [x0 x2 … x30 | x1 x3 … x31]
                    xp[b * 32 + i] = src[2 * i]; xp[b * 32 + 16 + i] = src[2 * i + 1]
                default:     // [even of 0..15 | odd of 0..15 | even of 16..31 | odd of 16..31]
                    let half = i / 8, k = i % 8
                    xp[b * 32 + half * 16 + k] = src[half * 16 + 2 * k]
                    xp[b * 32 + half * 16 + 8 + k] = src[half * 16 + 2 * k + 1]
                }
            }
            if format == .q4_1 { var s: Float = 0; for j in 0..<32 { s += src[j] }; blockSums[b] = s }
        }
        let me = self
        xp.withUnsafeBufferPointer { xpb in
            blockSums.withUnsafeBufferPointer { sums in
                let ctx = UncheckedSendable((x, y, xpb.baseAddress, sums.baseAddress))
                // Every product is split over the cores through the spinning fork–join pool: a decode step
                // runs ~200 of them, too short for GCD's hand-offs (with those, one thread was faster).
                forkJoinRanges(count: rows) { rr in
                    let (x, y, xp, sums) = ctx.value
                    for r in rr {
                        let v = plain ? me.dotF16(row: r, x) : me.dot(row: r, xp!, sums)
                        y[r] = v
                    }
                }
            }
        }
    }

    /// Like `matvec`, but with x quantised to 8 bits per 32-element block and integer dot products
    /// (AVX-512 VNNI), as llama.cpp computes decode steps: several times faster, at the cost of ~0.4 %
    /// relative error per activation. F16/BF16 matrices use the float path.
    public func matvecInt8(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        let code: Int32
        switch format {
        case .q8_0: code = 0
        case .q4_0: code = 1
        case .q4_1: code = 2
        default: return matvec(x, into: y)
        }
        let nb = cols / 32
        var xq = [Int8](repeating: 0, count: cols)
        var xd = [Float](repeating: 0, count: nb)
        var xs = [Int32](repeating: 0, count: nb)
        graft_quantize_q8(x, Int32(cols), &xq, &xd, &xs)
        let me = self
        xq.withUnsafeBufferPointer { q in xd.withUnsafeBufferPointer { d in xs.withUnsafeBufferPointer { s in
            let ctx = UncheckedSendable((q.baseAddress!, d.baseAddress!, s.baseAddress!, y))
            forkJoinRanges(count: rows) { rr in
                let (q, d, s, y) = ctx.value
                graft_matvec_q8(code, me.data.assumingMemoryBound(to: UInt8.self), Int32(me.cols), Int32(rr.lowerBound), Int32(rr.upperBound),
                                q, d, s, y)
            }
        } } }
    }

    @inline(__always)
    func dot(row r: Int, _ x: UnsafePointer<Float>, _ sums: UnsafePointer<Float>?) -> Float {
        let p = data + r * rowBytes
        var scalar: Float = 0
        typealias F8 = SIMD8<Float>
        typealias F16 = SIMD16<Float>
        @inline(__always) func halves8(_ u: SIMD8<UInt16>) -> F8 { F8(unsafeBitCast(u | 0x6400, to: SIMD8<Float16>.self)) }
        @inline(__always) func halves16(_ u: SIMD16<UInt16>) -> F16 { F16(unsafeBitCast(u | 0x6400, to: SIMD16<Float16>.self)) }
        @inline(__always) func ld8(_ o: Int) -> F8 { UnsafeRawPointer(x + o).loadUnaligned(as: F8.self) }
        @inline(__always) func ld16(_ o: Int) -> F16 { UnsafeRawPointer(x + o).loadUnaligned(as: F16.self) }
        switch format {
        case .q8_0:
            var acc = F16(repeating: 0)
            for b in 0..<(cols / 32) {
                let blk = p + b * 34
                let d = Float(blk.loadUnaligned(as: Float16.self))
                let w = blk.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt16>.self)
                let even: F16 = halves16((w & 0x00FF) ^ 0x0080) - 1152
                let odd: F16 = halves16((w &>> 8) ^ 0x0080) - 1152
                var t: F16 = even * ld16(b * 32)
                t += odd * ld16(b * 32 + 16)
                acc += d * t
            }
            return acc.sum()
        case .q4_0, .q4_1:
            let hasMin = format == .q4_1
            let off = hasMin ? 4 : 2, bb = hasMin ? 20 : 18
            let bias: Float = hasMin ? 1024 : 1032
            var acc = F8(repeating: 0)
            for b in 0..<(cols / 32) {
                let blk = p + b * bb
                let d = Float(blk.loadUnaligned(as: Float16.self))
                let u = blk.loadUnaligned(fromByteOffset: off, as: SIMD8<UInt16>.self)
                let a: F8 = halves8(u & 0x000F) - bias
                let bq: F8 = halves8((u &>> 8) & 0x000F) - bias
                let c: F8 = halves8((u &>> 4) & 0x000F) - bias
                let e: F8 = halves8((u &>> 12) & 0x000F) - bias
                let o = b * 32
                var t: F8 = a * ld8(o)
                t += bq * ld8(o + 8)
                t += c * ld8(o + 16)
                t += e * ld8(o + 24)
                acc += d * t
                if hasMin { scalar += Float(blk.loadUnaligned(fromByteOffset: 2, as: Float16.self)) * sums![b] }
            }
            return acc.sum() + scalar
        case .f16, .bf16:
            return dotF16(row: r, x)
        }
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
