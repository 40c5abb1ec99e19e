// float32 matrix products for inference over a frozen, pre-packed weight: C = act(A · B + bias + residual).
// B is packed once into 64-column panels (each k row of a panel is 64 contiguous floats), so no call
// repacks it — a general SGEMM packs B on every call, which on BERT-sized products (2048 × 384 × 384) is
// ~10 % of the time. The micro-kernel keeps a 6 × 64 tile of C in 24 zmm registers, reads A straight
// from its rows and does 24 FMAs per k (4 loads of B, 6 broadcasts of A). The bias, a residual and
// GELU are applied while the tile is still in registers.
#include "ckernels.h"
#include "simd_math.h"
#include <math.h>

#define NV 4    // 16-float vectors per B panel row
#define MR 6    // rows per micro-kernel call (MR × NV accumulators + NV B vectors + 1 broadcast ≤ 32 registers)
#define NR (16 * NV)   // columns per B panel
#define KC 1536 // k per block (B micro-panel 1536 × 64 floats = 384 KB, streamed from L2): a BERT-small FFN's whole k, so C is written once
#define MC 96  // rows of A per block (at most 96 × 1536 floats = 576 KB, held in L2 across the panels)

int graft_f32_panels(int n) { return (n + NR - 1) / NR; }

size_t graft_f32_packed_size(int k, int n) {
    return (size_t)graft_f32_panels(n) * (size_t)k * NR;
}

void graft_f32_pack_b(const float *src, int k, int n, int transposed, float *dst) {
    for (int p = 0; p < graft_f32_panels(n); p++) {
        for (int r = 0; r < k; r++) {
            float *o = dst + ((size_t)p * k + r) * NR;
            for (int j = 0; j < NR; j++) {
                int col = p * NR + j;
                o[j] = col < n ? (transposed ? src[(size_t)col * k + r] : src[(size_t)r * n + col]) : 0;
            }
        }
    }
}


#if GRAFT_AVX512
// One 6 × 64 tile (mr ≤ 6 rows, nr ≤ 64 columns stored) over kc values of k.
static void kernel(int kc, const float *a, int lda, int mr, const float *b, float *c, int ldc, int nr,
                   int first, int last, const float *bias, const float *res, int ldr, int act) {
    __m512 acc[MR][NV];
    for (int m = 0; m < MR; m++) for (int j = 0; j < NV; j++) acc[m][j] = _mm512_setzero_ps();
    const float *ar[MR];
    for (int m = 0; m < MR; m++) ar[m] = a + (size_t)(m < mr ? m : 0) * lda;
    for (int q = 0; q < kc; q++) {
        const float *bq = b + (size_t)q * NR;
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) bv[j] = _mm512_load_ps(bq + 16 * j);
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            __m512 av = _mm512_set1_ps(ar[m][q]);
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) acc[m][j] = _mm512_fmadd_ps(av, bv[j], acc[m][j]);
        }
    }
    // Fully unrolled over the tile (rows past mr skipped) so the accumulators never leave registers.
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++) {
        if (m < mr) {
            float *cr = c + (size_t)m * ldc;
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) {
                int left = nr - 16 * j;
                __mmask16 mask = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0;
                __m512 v = acc[m][j];
                if (!first) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, cr + 16 * j));
                else if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias + 16 * j));
                if (last) {
                    if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res + (size_t)m * ldr + 16 * j));
                    if (act == GRAFT_ACT_GELU) v = graft_gelu16(v);
                }
                _mm512_mask_storeu_ps(cr + 16 * j, mask, v);
            }
        }
    }
}
#else
// GELU, exact (erf) form as HF's "gelu" (portable path: libm's erf).
static inline float gelu1(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static void kernel(int kc, const float *a, int lda, int mr, const float *b, float *c, int ldc, int nr,
                   int first, int last, const float *bias, const float *res, int ldr, int act) {
    for (int m = 0; m < mr; m++) {
        for (int j = 0; j < nr; j++) {
            float s = 0;
            for (int q = 0; q < kc; q++) s += a[(size_t)m * lda + q] * b[(size_t)q * NR + j];
            float *o = c + (size_t)m * ldc + j;
            float v = first ? s + (bias ? bias[j] : 0) : *o + s;
            if (last) {
                if (res) v += res[(size_t)m * ldr + j];
                if (act == GRAFT_ACT_GELU) v = gelu1(v);
            }
            *o = v;
        }
    }
}
#endif

void graft_f32_gemm(int m, int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                    const float *bias, const float *res, int ldr, int act, int panel_begin, int panel_end) {
    int blocks = k > 0 ? (k + KC - 1) / KC : 1;  // k = 0 still writes act(bias + residual)
    for (int kb = 0; kb < blocks; kb++) {
        int k0 = kb * KC, kc = k - k0 < KC ? k - k0 : KC;
        int first = kb == 0, last = kb == blocks - 1;
        for (int i0 = 0; i0 < m; i0 += MC) {
            int mc = m - i0 < MC ? m - i0 : MC;
            for (int p = panel_begin; p < panel_end; p++) {
                const float *bp = b + ((size_t)p * k + k0) * NR;
                int nr = n - p * NR < NR ? n - p * NR : NR;
                for (int r = 0; r < mc; r += MR) {
                    int mr = mc - r < MR ? mc - r : MR;
                    size_t row = (size_t)(i0 + r);
                    kernel(kc, a + row * lda + k0, lda, mr, bp, c + row * ldc + (size_t)p * NR, ldc, nr, first, last,
                           bias ? bias + p * NR : NULL, res ? res + row * ldr + (size_t)p * NR : NULL, ldr, act);
                }
            }
        }
    }
}
