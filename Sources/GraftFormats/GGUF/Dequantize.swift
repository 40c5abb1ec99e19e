import GraftTensor

/// float32 from ggml blocks, following llama.cpp's `dequantize_row_*` (ggml-quants.c) block by block.
/// Verified against gguf-py's `quants.dequantize` (Tests/Fixtures/gguf/dequant.safetensors).
public enum Dequantize {
    /// Dequantizes `count` elements of `type` from `src` into `dst` (count must be whole blocks).
    public static func run(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        let be = type.blockElements, bb = type.blockBytes
        precondition(count % be == 0)
        let blocks = count / be
        let s = UncheckedSendable(src), d = UncheckedSendable(dst)
        parallelFor(count: blocks, minChunk: max(1, 4096 / be)) { r in
            for i in r { block(type, s.value + i * bb, d.value + i * be) }
        }
    }

    @inline(__always) static func h(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(p.loadUnaligned(fromByteOffset: off, as: Float16.self))
    }

    @inline(__always) static func u8(_ p: UnsafeRawPointer, _ off: Int) -> UInt8 { p.load(fromByteOffset: off, as: UInt8.self) }

    static func block(_ type: GGMLType, _ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32: y[0] = p.loadUnaligned(as: Float.self)
        case .f16: y[0] = h(p, 0)
        case .bf16: y[0] = Float(bitPattern: UInt32(p.loadUnaligned(as: UInt16.self)) << 16)
        case .f64: y[0] = Float(p.loadUnaligned(as: Double.self))
        case .q4_0:
            let d = h(p, 0)
            for j in 0..<16 {
                let q = u8(p, 2 + j)
                y[j] = Float(Int(q & 0xF) - 8) * d
                y[j + 16] = Float(Int(q >> 4) - 8) * d
            }
        case .q4_1:
            let d = h(p, 0), m = h(p, 2)
            for j in 0..<16 {
                let q = u8(p, 4 + j)
                y[j] = Float(q & 0xF) * d + m
                y[j + 16] = Float(q >> 4) * d + m
            }
        case .q5_0, .q5_1:
            let hasMin = type == .q5_1
            let d = h(p, 0), m: Float = hasMin ? h(p, 2) : 0
            let o = hasMin ? 4 : 2
            let qh = p.loadUnaligned(fromByteOffset: o, as: UInt32.self)
            for j in 0..<16 {
                let q = u8(p, o + 4 + j)
                let xh0 = UInt8(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                let xh1 = UInt8(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                let x0 = Int((q & 0x0F) | xh0), x1 = Int((q >> 4) | xh1)
                if hasMin {
                    y[j] = Float(x0) * d + m; y[j + 16] = Float(x1) * d + m
                } else {
                    y[j] = Float(x0 - 16) * d; y[j + 16] = Float(x1 - 16) * d
                }
            }
        case .q8_0:
            let d = h(p, 0)
            for j in 0..<32 { y[j] = Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
        case .q8_K:
            let d = p.loadUnaligned(as: Float.self)
            for j in 0..<256 { y[j] = d * Float(p.load(fromByteOffset: 4 + j, as: Int8.self)) }
        case .q2_K:
            let d = h(p, 80), dmin = h(p, 82)
            var out = 0, isc = 0, qo = 16
            for _ in 0..<2 {
                var shift = 0
                for _ in 0..<4 {
                    for half in 0..<2 {
                        let sc = u8(p, isc); isc += 1
                        let dl = d * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
                        for l in 0..<16 { y[out] = dl * Float((u8(p, qo + half * 16 + l) >> UInt8(shift)) & 3) - ml; out += 1 }
                    }
                    shift += 2
                }
                qo += 32
            }
        case .q3_K:
            let d = h(p, 108)
            var aux = [UInt32](repeating: 0, count: 4)
            for k in 0..<3 { aux[k] = p.loadUnaligned(fromByteOffset: 96 + 4 * k, as: UInt32.self) }
            let k1: UInt32 = 0x0303_0303, k2: UInt32 = 0x0F0F_0F0F
            let tmp = aux[2]
            aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4)
            aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4)
            aux[0] = (aux[0] & k2) | (((tmp >> 0) & k1) << 4)
            aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4)
            let scales: [Int8] = aux.flatMap { w in (0..<4).map { Int8(bitPattern: UInt8(truncatingIfNeeded: w >> UInt32(8 * $0))) } }
            var out = 0, isc = 0, qo = 32
            var m: UInt8 = 1
            for _ in 0..<2 {
                var shift = 0
                for _ in 0..<4 {
                    for half in 0..<2 {
                        let dl = d * Float(Int(scales[isc]) - 32); isc += 1
                        for l in 0..<16 {
                            let q = Int((u8(p, qo + half * 16 + l) >> UInt8(shift)) & 3)
                            let hm = u8(p, half * 16 + l) & m
                            y[out] = dl * Float(q - (hm != 0 ? 0 : 4)); out += 1
                        }
                    }
                    shift += 2; m <<= 1
                }
                qo += 32
            }
        case .q4_K, .q5_K:
            let d = h(p, 0), dmin = h(p, 2)
            let five = type == .q5_K
            let qsOff = five ? 48 : 16, qhOff = 16
            var out = 0, isc = 0, qo = qsOff
            var u1: UInt8 = 1, u2: UInt8 = 2
            for _ in 0..<4 {
                let (sc1, m1) = scaleMin(p, isc), (sc2, m2) = scaleMin(p, isc + 1)
                let d1 = d * Float(sc1), mm1 = dmin * Float(m1), d2 = d * Float(sc2), mm2 = dmin * Float(m2)
                for l in 0..<32 {
                    let hi: Float = five && (u8(p, qhOff + l) & u1) != 0 ? 16 : 0
                    y[out] = d1 * (Float(u8(p, qo + l) & 0xF) + hi) - mm1; out += 1
                }
                for l in 0..<32 {
                    let hi: Float = five && (u8(p, qhOff + l) & u2) != 0 ? 16 : 0
                    y[out] = d2 * (Float(u8(p, qo + l) >> 4) + hi) - mm2; out += 1
                }
                qo += 32; isc += 2; u1 <<= 2; u2 <<= 2
            }
        case .q6_K:
            let d = h(p, 208)
            var ql = 0, qh = 128, sc = 192, out = 0
            for _ in 0..<2 {
                for l in 0..<32 {
                    let isx = l / 16
                    let a = u8(p, ql + l), b = u8(p, ql + l + 32), hb = u8(p, qh + l)
                    let q1 = Int((a & 0xF) | (((hb >> 0) & 3) << 4)) - 32
                    let q2 = Int((b & 0xF) | (((hb >> 2) & 3) << 4)) - 32
                    let q3 = Int((a >> 4) | (((hb >> 4) & 3) << 4)) - 32
                    let q4 = Int((b >> 4) | (((hb >> 6) & 3) << 4)) - 32
                    func s(_ k: Int) -> Float { Float(p.load(fromByteOffset: sc + k, as: Int8.self)) }
                    y[out + l] = d * s(isx) * Float(q1)
                    y[out + l + 32] = d * s(isx + 2) * Float(q2)
                    y[out + l + 64] = d * s(isx + 4) * Float(q3)
                    y[out + l + 96] = d * s(isx + 6) * Float(q4)
                }
                out += 128; ql += 64; qh += 32; sc += 8
            }
        case .i8, .i16, .i32, .i64, .q8_1:
            preconditionFailure("\(type.name) is not a float type")
        }
    }

    /// `get_scale_min_k4`: 6-bit scale and min j of a Q4_K/Q5_K block's 12 scale bytes (at offset 4).
    @inline(__always) static func scaleMin(_ p: UnsafeRawPointer, _ j: Int) -> (UInt8, UInt8) {
        let q = { (k: Int) in u8(p, 4 + k) }
        if j < 4 { return (q(j) & 63, q(j + 4) & 63) }
        return ((q(j + 4) & 0xF) | ((q(j - 4) >> 6) << 4), (q(j + 4) >> 4) | ((q(j) >> 6) << 4))
    }
}
