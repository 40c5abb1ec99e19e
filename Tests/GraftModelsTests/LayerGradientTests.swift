import GraftAdapters
import GraftModels
import GraftTensor
import XCTest
import GraftTestSupport

/// Each layer's backward against central finite differences of its forward, on small random shapes.
/// The scalar checked is L = Σ y ⊙ R for a fixed random R, so dL/dy = R.
final class LayerGradientTests: XCTestCase {
    var rng = SeededRNG(seed: 7)

    func random(_ n: Int, scale: Float = 1) -> FloatBuffer {
        FloatBuffer((0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale })
    }

    func dot(_ a: FloatBuffer, _ b: FloatBuffer) -> Double {
        zip(a.values, b.values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Compares `analytic` with (L(p + ε) − L(p − ε)) / 2ε for every element of `param`.
    func assertGradient(_ name: String, param: FloatBuffer, analytic: FloatBuffer, eps: Float = 1e-2, tolerance: Double = 2e-2,
                        loss: () -> Double, file: StaticString = #filePath, line: UInt = #line) {
        var num = 0.0, den = 0.0
        let p = param.mutable
        for i in 0..<param.count {
            let keep = p[i]
            p[i] = keep + eps; let up = loss()
            p[i] = keep - eps; let down = loss()
            p[i] = keep
            let fd = (up - down) / Double(2 * eps)
            num += (fd - Double(analytic[i])) * (fd - Double(analytic[i])); den += fd * fd
        }
        let rel = (num / max(den, 1e-20)).squareRoot()
        XCTAssertLessThan(rel, tolerance, "\(name): relative error \(rel)", file: file, line: line)
    }

    func testLinearWithLoRADoRADropoutAndFullHead() {
        let rows = 3, inF = 6, outF = 5, r = 2
        for (dora, dropout) in [(false, Float(0)), (true, Float(0)), (false, Float(0.3)), (true, Float(0.3))] {
            var l = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
            let a = random(r * inF), b = random(outF * r)
            let m = dora ? random(outF, scale: 0.5) : nil
            if let m { for j in 0..<outF { m.mutable[j] += 1.5 } }
            let u: any LayerUpdate = m.map { DoRAUpdate(a: a, b: b, magnitude: $0, rank: r, scale: 0.7, dropout: dropout) }
                ?? LoRAUpdate(a: a, b: b, rank: r, scale: 0.7, dropout: dropout)
            u.makeTrainable()
            l.updates = [u]
            let g = dora ? nil : LinearGradients.zeros(for: l)
            l.gradients = g
            let grad = Dictionary(uniqueKeysWithValues: u.parameters.map { ($0.suffix, $0.gradient!) })
            let x = random(rows * inF), dy = random(rows * outF)
            // The same dropout mask for every evaluation: a fresh generator from one seed each time.
            func run() -> (FloatBuffer, Linear.Saved) {
                var gen = SeededRNG(seed: 11)
                return withUnsafeMutablePointer(to: &gen) { l.forwardTraining(x, rows: rows, rng: $0) }
            }
            let (_, saved) = run()
            let dx = l.backward(dy, saved: saved, rows: rows)!
            let L = { self.dot(run().0, dy) }
            let tag = "dora \(dora) dropout \(dropout)"
            assertGradient("dx \(tag)", param: x, analytic: dx, loss: L)
            if let m {
                // DoRA treats the row norms ‖W + s·B·A‖ as constants (as PEFT does), so finite differences
                // of A and B (which move the norms) are not its gradient; x and m do not enter the norms.
                assertGradient("dm \(tag)", param: m, analytic: grad["lora_magnitude_vector"]!, loss: L)
            } else {
                assertGradient("dA \(tag)", param: a, analytic: grad["lora_A.weight"]!, loss: L)
                assertGradient("dB \(tag)", param: b, analytic: grad["lora_B.weight"]!, loss: L)
                assertGradient("dW \(tag)", param: l.weight, analytic: g!.weight!, loss: L)
                assertGradient("db \(tag)", param: l.bias!, analytic: g!.bias!, loss: L)
            }
        }
    }

    /// ALLoRA: the forward is LoRA's at scale 1; the input gradient is the true one (finite differences);
    /// A's and B's are the paper's rule written out directly — ∂L/∂ΔW = dyᵀ·x with row i scaled by
    /// cᵢ = 1/√(‖(B·A)ᵢ‖ + 1/η²), then gB = (C·G)·Aᵀ, gA = Bᵀ·(C·G) — in double precision from ΔW
    /// formed here, not the Gram-matrix shortcut the layer uses; and with B = 0 every cᵢ is η.
    func testLinearWithALLoRA() {
        let rows = 4, inF = 6, outF = 5, r = 2, eta: Float = 2
        for zeroB in [false, true] {
            var l = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
            let a = random(r * inF), b = zeroB ? FloatBuffer(repeating: 0, count: outF * r) : random(outF * r)
            let u = ALLoRAUpdate(lora: LoRAUpdate(a: a, b: b, rank: r, scale: 1), eta: eta)
            u.makeTrainable()
            l.updates = [u]
            let x = random(rows * inF), dy = random(rows * outF)
            let (_, saved) = l.forwardTraining(x, rows: rows, rng: nil)
            let dx = l.backward(dy, saved: saved, rows: rows)!
            assertGradient("ALLoRA dx zeroB \(zeroB)", param: x, analytic: dx, loss: { self.dot(l.forwardTraining(x, rows: rows, rng: nil).y, dy) })
            var c = [Double](repeating: 0, count: outF)
            for i in 0..<outF {
                var sq = 0.0
                for j in 0..<inF {
                    var d = 0.0
                    for k in 0..<r { d += Double(b[i * r + k]) * Double(a[k * inF + j]) }
                    sq += d * d
                }
                c[i] = 1 / (sq.squareRoot() + 1 / Double(eta * eta)).squareRoot()
                if zeroB { XCTAssertEqual(c[i], Double(eta), accuracy: 1e-12) }
            }
            // C·G, G = dyᵀ·x.
            var cg = [Double](repeating: 0, count: outF * inF)
            for i in 0..<outF { for j in 0..<inF { for t in 0..<rows { cg[i * inF + j] += c[i] * Double(dy[t * outF + i]) * Double(x[t * inF + j]) } } }
            let grad = Dictionary(uniqueKeysWithValues: u.parameters.map { ($0.suffix, $0.gradient!) })
            for i in 0..<outF {
                for k in 0..<r {
                    var want = 0.0
                    for j in 0..<inF { want += cg[i * inF + j] * Double(a[k * inF + j]) }
                    XCTAssertEqual(Double(grad["lora_B.weight"]![i * r + k]), want, accuracy: 1e-5 * max(1, abs(want)), "gB[\(i),\(k)] zeroB \(zeroB)")
                }
            }
            for k in 0..<r {
                for j in 0..<inF {
                    var want = 0.0
                    for i in 0..<outF { want += Double(b[i * r + k]) * cg[i * inF + j] }
                    XCTAssertEqual(Double(grad["lora_A.weight"]![k * inF + j]), want, accuracy: 1e-5 * max(1, abs(want)), "gA[\(k),\(j)] zeroB \(zeroB)")
                }
            }
        }
    }

    /// EPT's derived prompt: every parameter's gradient (short prompt, A, B, the subspaces' projections,
    /// the gate) against finite differences of L = Σ prompt ⊙ R₁ + Σ offsets ⊙ R₂, with all of them
    /// non-zero (at its start B, U and the gate are zero, which would leave terms untested); and at that
    /// start the prompt is P and the offsets zero.
    func testEPTPromptFusionAndProjection() {
        let m = 3, d = 5, r = 2, s = 4, K = 2
        let src = EPTPrompt(prompt: random(m * d), a: random(s * r), b: random(r * d), down: random(K * d * r), up: random(K * r * d),
                            gateWeight: random(K * d), gateBias: random(K), width: d, rank: r, spaces: K, scale: 0.7)
        let tokens = src.makeTokens()
        tokens.makeTrainable(); src.makeTrainable()
        let r1 = random(m * d), r2 = random(s * d)
        let L = { () -> Double in
            src.derive(into: tokens)
            return self.dot(tokens.values, r1) + self.dot(tokens.offsets!, r2)
        }
        _ = L()
        tokens.gradient!.mutable.baseAddress!.update(from: r1.array, count: r1.count)  // dL/dprompt = R₁, dL/doffsets = R₂
        tokens.offsetGradient!.mutable.baseAddress!.update(from: r2.array, count: r2.count)
        src.backward(tokens)
        for p in src.parameters {
            assertGradient("EPT \(p.suffix)", param: p.value, analytic: p.gradient!, eps: 1e-2, tolerance: 2e-2, loss: L)
        }
        var c = EPTConfig()
        c.embeddingPositions = s
        let layout = VirtualTokens.Layout(hidden: d, layers: 1, heads: 1, kvWidth: d, kvHeads: 1, contextLength: 64, vocabulary: 10)
        let fresh = try! c.makeVirtualTokens(layout: layout, embed: { _ in FloatBuffer(count: 0) }, tokenize: { _ in [] }, seed: 3)
        XCTAssertEqual(fresh.values.array, (fresh.source as! EPTPrompt).prompt.array, "B, U and the gate start at zero: the prompt is P")
        XCTAssertEqual(fresh.offsets!.array, [Float](repeating: 0, count: s * d))
    }

    /// IA³ scaling the output (keys, values: the bias scaled too) and the input (feed-forward layers).
    func testLinearWithIA3() {
        let rows = 4, inF = 6, outF = 5
        for feedforward in [false, true] {
            var l = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
            let scaling = random(feedforward ? inF : outF)
            let u = IA3Update(scaling: scaling, feedforward: feedforward)
            u.makeTrainable()
            l.updates = [u]
            let x = random(rows * inF), dy = random(rows * outF)
            let L = { self.dot(l.forwardTraining(x, rows: rows, rng: nil).y, dy) }
            // The forward is PEFT's: (x·Wᵀ + b) ⊙ l, or (x ⊙ l)·Wᵀ + b.
            let y = l.forwardTraining(x, rows: rows, rng: nil).y
            for r in 0..<rows {
                for j in 0..<outF {
                    var want: Float = l.bias![j]
                    for i in 0..<inF { want += x[r * inF + i] * (feedforward ? scaling[i] : 1) * l.weight[j * inF + i] }
                    if !feedforward { want *= scaling[j] }
                    XCTAssertEqual(y[r * outF + j], want, accuracy: 1e-5)
                }
            }
            let (_, saved) = l.forwardTraining(x, rows: rows, rng: nil)
            let dx = l.backward(dy, saved: saved, rows: rows)!
            assertGradient("IA³ dx feedforward \(feedforward)", param: x, analytic: dx, loss: L)
            assertGradient("IA³ dl feedforward \(feedforward)", param: scaling, analytic: u.parameters[0].gradient!, loss: L)
        }
    }

    /// AdaLoRA's SVD-form update against its formula y = x·Wᵀ + b + s·(x·(A ⊙ E)ᵀ)·Bᵀ, its A, E, B and
    /// input gradients against finite differences, and the ∂L/∂ΔW it collects for IncreLoRA (= dyᵀ·x).
    func testLinearWithAdaLoRA() {
        let rows = 3, inF = 6, outF = 5, r = 3
        var l = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
        let a = random(r * inF), e = random(r), b = random(outF * r)
        let u = AdaLoRAUpdate(a: a, e: e, b: b, rank: r, inFeatures: inF, outFeatures: outF, alpha: 2, ranknum: 4)
        u.makeTrainable()
        u.deltaGradient = FloatBuffer(repeating: 0, count: outF * inF)
        l.updates = [u]
        let x = random(rows * inF), dy = random(rows * outF)
        let L = { self.dot(l.forwardTraining(x, rows: rows, rng: nil).y, dy) }
        let y = l.forwardTraining(x, rows: rows, rng: nil).y
        let s = Float(2 / (4 + 1e-5))
        for q in 0..<rows {
            for o in 0..<outF {
                var want: Float = l.bias![o]
                for i in 0..<inF {
                    var delta: Float = 0
                    for k in 0..<r { delta += b[o * r + k] * a[k * inF + i] * e[k] }
                    want += x[q * inF + i] * (l.weight[o * inF + i] + s * delta)
                }
                XCTAssertEqual(y[q * outF + o], want, accuracy: 1e-5)
            }
        }
        let (_, saved) = l.forwardTraining(x, rows: rows, rng: nil)
        let dx = l.backward(dy, saved: saved, rows: rows)!
        let grad = Dictionary(uniqueKeysWithValues: u.parameters.map { ($0.suffix, $0.gradient!) })
        assertGradient("AdaLoRA dx", param: x, analytic: dx, loss: L)
        assertGradient("AdaLoRA dA", param: a, analytic: grad["lora_A"]!, loss: L)
        assertGradient("AdaLoRA dE", param: e, analytic: grad["lora_E"]!, loss: L)
        assertGradient("AdaLoRA dB", param: b, analytic: grad["lora_B"]!, loss: L)
        for o in 0..<outF {
            for i in 0..<inF {
                var g: Float = 0
                for q in 0..<rows { g += dy[q * outF + o] * x[q * inF + i] }
                XCTAssertEqual(u.deltaGradient![o * inF + i], g, accuracy: 1e-5, "∂L/∂ΔW")
            }
        }
    }

    /// TriAdaptLoRA's triangular core, y = x·Wᵀ + b + s·((x·Aᵀ)·(L + U)ᵀ)·Bᵀ, on 2 ranks in use of a bound
    /// of 4: its forward against the formula, its gradients against finite differences, the unused
    /// ranks and the triangles' other halves left without gradient, and its folded A' = C·A.
    func testLinearWithTriAdaptLoRA() {
        let rows = 3, inF = 6, outF = 5, cap = 4, used = 2
        var l = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
        func live(_ n: Int, rows: Int, cols: Int, keep: (Int, Int) -> Bool) -> FloatBuffer {
            let f = random(n), v = f.mutable
            for i in 0..<rows { for j in 0..<cols where !keep(i, j) { v[i * cols + j] = 0 } }
            return f
        }
        let a = live(cap * inF, rows: cap, cols: inF) { i, _ in i < used }
        let b = live(outF * cap, rows: outF, cols: cap) { _, j in j < used }
        let lower = live(cap * cap, rows: cap, cols: cap) { i, j in i < used && j <= i }
        let upper = live(cap * cap, rows: cap, cols: cap) { i, j in j < used && i <= j }
        let u = TriAdaptLoRAUpdate(a: a, b: b, lower: lower, upper: upper, capacity: cap, inFeatures: inF, outFeatures: outF, scale: 0.7)
        u.makeTrainable()
        l.updates = [u]
        let x = random(rows * inF), dy = random(rows * outF)
        let L = { self.dot(l.forwardTraining(x, rows: rows, rng: nil).y, dy) }
        let y = l.forwardTraining(x, rows: rows, rng: nil).y
        let c = (0..<(cap * cap)).map { lower[$0] + upper[$0] }
        var delta = [Float](repeating: 0, count: outF * inF)  // s·B·C·A
        for o in 0..<outF { for i in 0..<inF { for p in 0..<cap { for q in 0..<cap { delta[o * inF + i] += 0.7 * b[o * cap + p] * c[p * cap + q] * a[q * inF + i] } } } }
        for q in 0..<rows {
            for o in 0..<outF {
                var want: Float = l.bias![o]
                for i in 0..<inF { want += x[q * inF + i] * (l.weight[o * inF + i] + delta[o * inF + i]) }
                XCTAssertEqual(y[q * outF + o], want, accuracy: 1e-5)
            }
        }
        let (_, saved) = l.forwardTraining(x, rows: rows, rng: nil)
        let dx = l.backward(dy, saved: saved, rows: rows)!
        let grad = Dictionary(uniqueKeysWithValues: u.parameters.map { ($0.suffix, $0.gradient!) })
        assertGradient("TriAdaptLoRA dx", param: x, analytic: dx, loss: L)
        assertGradient("TriAdaptLoRA dA", param: a, analytic: grad["lora_A"]!, loss: L)
        assertGradient("TriAdaptLoRA dB", param: b, analytic: grad["lora_B"]!, loss: L)
        let gl = grad["lora_C_lower"]!, gu = grad["lora_C_upper"]!
        for i in 0..<cap {
            for j in 0..<cap {
                if j > i { XCTAssertEqual(gl[i * cap + j], 0, "L stays lower-triangular") }
                if j < i { XCTAssertEqual(gu[i * cap + j], 0, "U stays upper-triangular") }
                if i >= used || j >= used { XCTAssertEqual(gl[i * cap + j] + gu[i * cap + j], 0, "ranks not in use get no gradient") }
            }
        }
        for r in used..<cap { for i in 0..<inF { XCTAssertEqual(grad["lora_A"]![r * inF + i], 0) }; for o in 0..<outF { XCTAssertEqual(grad["lora_B"]![o * cap + r], 0) } }
        // Within each triangle, the gradient is the loss's: central differences entry by entry (the
        // entries outside are not parameters of the method — they stay zero).
        for (name, t, g, inside) in [("L", lower, gl, { (i: Int, j: Int) in j <= i }), ("U", upper, gu, { (i: Int, j: Int) in i <= j })] {
            let v = t.mutable
            for i in 0..<cap {
                for j in 0..<cap where inside(i, j) {
                    let k = i * cap + j, old = v[k]
                    v[k] = old + 1e-2; let up = L()
                    v[k] = old - 1e-2; let down = L()
                    v[k] = old
                    XCTAssertEqual(Double(g[k]), (up - down) / 2e-2, accuracy: 2e-2 * max(1, abs(Double(g[k]))), "TriAdaptLoRA d\(name)[\(i), \(j)]")
                }
            }
        }
        let (fa, fb) = u.folded(rank: used)
        for o in 0..<outF {
            for i in 0..<inF {
                var d: Float = 0
                for k in 0..<used { d += fb[o * used + k] * fa[k * inF + i] }
                XCTAssertEqual(0.7 * d, delta[o * inF + i], accuracy: 1e-5, "B·(C·A) cut to the ranks in use")
            }
        }
    }

    /// NOLA against a direct implementation of the paper's formula — A = A₀ + Σ αᵢAᵢ, B = Σ βⱼBⱼ,
    /// y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, written out with loops over the regenerated bases — and its
    /// coefficients' and input's gradients against finite differences, with and without dropout.
    func testLinearWithNOLA() {
        let rows = 3, inF = 6, outF = 5, r = 2, k = 4, l = 3, s: Float = 0.8
        let bases = NOLABases(seed: 9, module: "m", rank: r, inFeatures: inF, outFeatures: outF, countA: k, countB: l)
        let again = NOLABases(seed: 9, module: "m", rank: r, inFeatures: inF, outFeatures: outF, countA: k, countB: l)
        XCTAssertEqual(bases.a.array, again.a.array, "the bases are a function of the seed and module")
        XCTAssertNotEqual(bases.a.array, NOLABases(seed: 9, module: "other", rank: r, inFeatures: inF, outFeatures: outF, countA: k, countB: l).a.array)
        for dropout in [Float(0), 0.3] {
            var lin = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
            let alpha = random(k), beta = random(l)
            let u = NOLAUpdate(bases: bases, alpha: alpha, beta: beta, scale: s, dropout: dropout)
            u.makeTrainable()
            lin.updates = [u]
            let x = random(rows * inF), dy = random(rows * outF)
            if dropout == 0 {
                var a = [Float](repeating: 0, count: r * inF), b = [Float](repeating: 0, count: outF * r)
                for e in 0..<(r * inF) { a[e] = bases.a0[e]; for i in 0..<k { a[e] += alpha[i] * bases.a[i * r * inF + e] } }
                for e in 0..<(outF * r) { for j in 0..<l { b[e] += beta[j] * bases.b[j * outF * r + e] } }
                let y = lin.forwardTraining(x, rows: rows, rng: nil).y
                for row in 0..<rows {
                    for o in 0..<outF {
                        var want = lin.bias![o]
                        for i in 0..<inF { want += x[row * inF + i] * lin.weight[o * inF + i] }
                        for q in 0..<r {
                            var xa: Float = 0
                            for i in 0..<inF { xa += x[row * inF + i] * a[q * inF + i] }
                            want += s * xa * b[o * r + q]
                        }
                        XCTAssertEqual(y[row * outF + o], want, accuracy: 1e-4)
                    }
                }
            }
            func run() -> (FloatBuffer, Linear.Saved) {
                var gen = SeededRNG(seed: 11)
                return withUnsafeMutablePointer(to: &gen) { lin.forwardTraining(x, rows: rows, rng: $0) }
            }
            let (_, saved) = run()
            let dx = lin.backward(dy, saved: saved, rows: rows)!
            let L = { self.dot(run().0, dy) }
            assertGradient("NOLA dx dropout \(dropout)", param: x, analytic: dx, loss: L)
            assertGradient("NOLA dα dropout \(dropout)", param: alpha, analytic: u.parameters[0].gradient!, loss: L)
            assertGradient("NOLA dβ dropout \(dropout)", param: beta, analytic: u.parameters[1].gradient!, loss: L)
        }
    }

    /// Two updates attached to one layer at inference (several adapters served on one base) apply in
    /// order, each over the layer beneath it: two LoRAs add both products, an IA³ on top scales their sum.
    func testStackedUpdatesAtInference() {
        let rows = 3, inF = 6, outF = 5, r = 2
        var lin = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
        let x = random(rows * inF)
        let plain = lin.forward(x, rows: rows)
        let u1 = LoRAUpdate(a: random(r * inF), b: random(outF * r), rank: r, scale: 0.5)
        let u2 = LoRAUpdate(a: random(r * inF), b: random(outF * r), rank: r, scale: 2)
        let base = lin
        func alone(_ u: any LayerUpdate) -> FloatBuffer { var l = base; l.updates = [u]; return l.forward(x, rows: rows) }
        let y1 = alone(u1), y2 = alone(u2)
        lin.updates = [u1, u2]
        let both = lin.forward(x, rows: rows)
        for i in 0..<both.count { XCTAssertEqual(both[i], y1[i] + y2[i] - plain[i], accuracy: 1e-5) }
        let l = random(outF)
        lin.updates = [u1, u2, IA3Update(scaling: l, feedforward: false)]
        let scaled = lin.forward(x, rows: rows)
        for i in 0..<scaled.count { XCTAssertEqual(scaled[i], both[i] * l[i % outF], accuracy: 1e-5) }
    }

    func testLayerNormAndRMSNorm() {
        let rows = 4, d = 8
        let ln = LayerNorm(gamma: random(d), beta: random(d), eps: 1e-5)
        let x = random(rows * d), dy = random(rows * d)
        let (_, saved) = ln.forwardTraining(x, rows: rows)
        assertGradient("layernorm dx", param: x, analytic: ln.backward(dy, saved: saved, rows: rows), eps: 1e-3,
                       loss: { self.dot(ln.forwardTraining(x, rows: rows).y, dy) })
        let rms = RMSNorm(weight: random(d), eps: 1e-5)
        let (_, rstd) = rms.forwardTraining(x, rows: rows)
        assertGradient("rmsnorm dx", param: x, analytic: rms.backward(dy, input: x, rstd: rstd, rows: rows), eps: 1e-3,
                       loss: { self.dot(rms.forwardTraining(x, rows: rows).y, dy) })
    }

    func testGELUAndSwiGLU() {
        let n = 40
        let x = random(n, scale: 3), dy = random(n)
        let g = FloatBuffer(dy.array)
        Activation.geluBackward(g, input: x)
        assertGradient("gelu", param: x, analytic: g, eps: 1e-3, loss: {
            let y = FloatBuffer(x.array); Activation.gelu(y); return self.dot(y, dy)
        })
        let gate = random(n, scale: 3), up = random(n)
        let (dg, du) = Activation.swigluBackward(dy, gate: gate, up: up)
        let L = { self.dot(Activation.swiglu(gate: gate, up: up), dy) }
        assertGradient("swiglu gate", param: gate, analytic: dg, eps: 1e-3, loss: L)
        assertGradient("swiglu up", param: up, analytic: du, eps: 1e-3, loss: L)
        // Far into both tails (vector and scalar paths: 20 values), silu and its derivative stay exact.
        let big = FloatBuffer((0..<20).map { Float($0 % 2 == 0 ? 1 : -1) * Float(60 + 10 * $0) })
        let ones = FloatBuffer(repeating: 1, count: 20)
        let y = Activation.swiglu(gate: big, up: ones)
        let (dgBig, _) = Activation.swigluBackward(ones, gate: big, up: ones)
        for i in 0..<20 {
            XCTAssertEqual(y[i], big[i] > 0 ? big[i] : 0, accuracy: 1e-6, "silu(\(big[i]))")
            XCTAssertEqual(dgBig[i], big[i] > 0 ? 1 : 0, accuracy: 1e-6, "silu'(\(big[i]))")
        }
    }

    func testRoPEBackwardIsTheInverseRotation() {
        let rope = RoPE(headDim: 8, theta: 10000)
        let x = random(16), dy = random(16)
        let g = FloatBuffer(dy.array)
        rope.apply(g.mutable.baseAddress!, heads: 2, position: 5, inverse: true)
        assertGradient("rope", param: x, analytic: g, eps: 1e-3, loss: {
            let y = FloatBuffer(x.array); rope.apply(y.mutable.baseAddress!, heads: 2, position: 5); return self.dot(y, dy)
        })
    }

    func testAttentionWithPaddingCausalMaskGroupedHeadsDropoutAndPrefix() throws {
        let b = 2, t = 4, dh = 4, lengths = [4, 3]
        // The last cases put a prefix of 3 keys and values (prefix tuning) ahead of every sequence's.
        for (heads, kv, causal, dropout, n) in [(2, 2, false, Float(0), 0), (4, 2, true, Float(0), 0), (2, 2, false, Float(0.3), 0),
                                                (4, 2, true, Float(0), 3), (2, 2, false, Float(0.3), 3)] {
            let attn = SelfAttention(heads: heads, kvHeads: kv, headDim: dh, causal: causal)
            let q = random(b * t * heads * dh), k = random(b * t * kv * dh), v = random(b * t * kv * dh)
            // The prefix as prefix tuning stores it: rows of [keys | values] (stride 2·kv·dh).
            let kvw = kv * dh, prefixRows = random(max(n, 1) * 2 * kvw)
            let prefix = n == 0 ? nil : SelfAttention.Prefix(keys: prefixRows.values.baseAddress!, values: prefixRows.values.baseAddress! + kvw,
                                                             count: n, stride: 2 * kvw)
            let dctx = random(b * t * heads * dh)
            // Padding rows carry no output and no gradient.
            for j in 0..<(heads * dh) { dctx.mutable[(1 * t + 3) * heads * dh + j] = 0 }
            // The same mask on every evaluation: a fixed seed.
            let run = { attn.forwardTraining(q: q, k: k, v: v, batch: b, length: t, lengths: lengths, prefix: prefix, dropout: dropout, seed: 5) }
            let (_, saved) = run()
            if dropout > 0 { XCTAssertTrue(saved.dropScale!.values.contains(0), "some probabilities dropped") }
            let (dq, dk, dv, dPrefix) = attn.backward(dctx, q: q, k: k, v: v, saved: saved, batch: b, length: t, lengths: lengths, prefix: prefix)
            let L = { self.dot(run().ctx, dctx) }
            let tag = "\(heads)/\(kv) causal \(causal) dropout \(dropout) prefix \(n)"
            assertGradient("attention dq \(tag)", param: q, analytic: dq, eps: 1e-3, loss: L)
            assertGradient("attention dk \(tag)", param: k, analytic: dk, eps: 1e-3, loss: L)
            assertGradient("attention dv \(tag)", param: v, analytic: dv, eps: 1e-3, loss: L)
            if n > 0 {
                let (pk, pv) = try XCTUnwrap(dPrefix)
                // Interleave the two into the stored layout to check them against the same rows.
                let analytic = FloatBuffer(count: prefixRows.count)
                for r in 0..<n { for j in 0..<kvw {
                    analytic.mutable[r * 2 * kvw + j] = pk.values[r * kvw + j]; analytic.mutable[r * 2 * kvw + kvw + j] = pv.values[r * kvw + j]
                } }
                assertGradient("attention prefix \(tag)", param: prefixRows, analytic: analytic, eps: 1e-3, loss: L)
            } else {
                XCTAssertNil(dPrefix)
            }
        }
    }

    func testDropoutScalesKeptElementsAndIsSeeded() {
        let x = FloatBuffer(repeating: 1, count: 200_000)
        let scale = Dropout.apply(x, p: 0.25, seed: 3)!
        let kept = x.values.filter { $0 != 0 }
        XCTAssertEqual(Double(kept.count) / 200_000, 0.75, accuracy: 0.01)
        XCTAssertTrue(kept.allSatisfy { abs($0 - 4 / 3) < 1e-6 })
        let y = FloatBuffer(repeating: 1, count: 200_000)
        _ = Dropout.apply(y, p: 0.25, seed: 3)
        XCTAssertEqual(x.array, y.array, "same seed, same mask")
        let d = FloatBuffer(repeating: 2, count: 200_000)
        Dropout.backward(d, scale: scale)
        XCTAssertEqual(d.array, x.array.map { $0 * 2 })
    }

    func testCrossEntropyAndEmbedding() {
        let rows = 4, classes = 6
        let logits = random(rows * classes, scale: 3)
        let targets: [Int?] = [1, nil, 5, 0]
        let (_, count, grad) = Loss.crossEntropy(logits, classes: classes, targets: targets)
        XCTAssertEqual(count, 3)
        assertGradient("cross-entropy", param: logits, analytic: grad, eps: 1e-3, loss: {
            let (s, c, _) = Loss.crossEntropy(logits, classes: classes, targets: targets); return s / Double(c)
        })
        let table = random(5 * 3), emb = Embedding(table: table, width: 3)
        let ids = [4, 1, 4], dy = random(9)
        let g = FloatBuffer(repeating: 0, count: 15)
        emb.backward(ids, dy, into: g)
        assertGradient("embedding", param: table, analytic: g, eps: 1e-3, loss: {
            let out = FloatBuffer(count: 9); emb.gather(ids, into: out, accumulate: false); return self.dot(out, dy)
        })
    }
}

/// `Linear.forward` over a packed weight (`packForInference`: bias, residual and GELU inside the product)
/// equals the BLAS path followed by separate passes — with and without a LoRA update, which must be added
/// before the activation.
final class PackedLinearTests: XCTestCase {
    func testPackedForwardEqualsUnpacked() {
        var rng = SeededRNG(seed: 21)
        func random(_ n: Int) -> FloatBuffer { FloatBuffer((0..<n).map { _ in rng.nextUnitFloat() * 2 - 1 }) }
        let rows = 37, inF = 50, outF = 70, r = 4
        let x = random(rows * inF), res = random(rows * outF)
        for withLoRA in [false, true] {
            var plain = Linear(weight: random(outF * inF), bias: random(outF), inFeatures: inF, outFeatures: outF)
            if withLoRA { plain.updates = [LoRAUpdate(a: random(r * inF), b: random(outF * r), rank: r, scale: 0.5)] }
            for algorithm in [F32Matrix.Algorithm.classical, .strassen] {
            var packed = plain
            packed.packForInference(algorithm: algorithm)
            for (residual, act) in [(nil, F32Matrix.Activation.none), (res, .gelu), (res, .none), (nil, .gelu)] {
                let want = plain.forward(x, rows: rows, residual: residual, activation: act)
                let got = packed.forward(x, rows: rows, residual: residual, activation: act)
                var worst: Float = 0
                for i in 0..<want.count { let e = abs(want[i] - got[i]); if !(e <= worst) { worst = e } }  // NaN fails
                XCTAssertLessThan(worst, 1e-5, "\(algorithm) LoRA \(withLoRA) residual \(residual != nil) \(act)")
            }
            }
        }
    }
}
