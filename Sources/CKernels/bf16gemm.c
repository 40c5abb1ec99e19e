// bf16 matrix products with float32 accumulation: C = A · B (+ beta·C) where B is a frozen matrix packed
// once into bf16 panels and A is converted to bf16 on the fly. With AVX512-BF16 each VDPBF16PS does 32
// multiply-adds (pairs of k), twice an FP32 FMA's 16. Without it, a portable loop gives the same
// result (same rounding of the inputs, float accumulation).
#include "ckernels.h"
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define GRAFT_BF16 1
#else
#define GRAFT_BF16 0
#endif

#define NR 64   // columns per B panel (4 zmm of 16 floats)
#define MR 6    // rows per micro-kernel call
#define KCP 256 // k pairs per block (B micro-panel 256 × 256 B = 64 KB: streamed from L2 while A and C stay in registers and L1)
#define MC 96   // rows of A converted per block

int graft_has_bf16(void) { return GRAFT_BF16; }

// Round to nearest even (NaN stays NaN: its quiet bit survives the truncation).
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

size_t graft_bf16_packed_size(int k, int n) {
    size_t panels = (size_t)(n + NR - 1) / NR, kp = (size_t)(k + 1) / 2;
    return panels * kp * NR * 2;
}

void graft_bf16_pack_b(const float *src, int k, int n, int transposed, uint16_t *dst) {
    int kp = (k + 1) / 2, panels = (n + NR - 1) / NR;
    for (int p = 0; p < panels; p++) {
        for (int q = 0; q < kp; q++) {
            uint16_t *o = dst + ((size_t)p * kp + q) * NR * 2;
            for (int j = 0; j < NR; j++) {
                int col = p * NR + j;
                for (int h = 0; h < 2; h++) {
                    int row = 2 * q + h;
                    float v = 0;
                    if (col < n && row < k) v = transposed ? src[(size_t)col * k + row] : src[(size_t)row * n + col];
                    o[2 * j + h] = to_bf16(v);
                }
            }
        }
    }
}

// Rows [0, rows) of A (f32, row stride lda), k pairs [q0, q0 + nq), into bf16 pairs: out[r * nq + q].
static void pack_a(const float *a, int lda, int rows, int k, int q0, int nq, uint32_t *out) {
    for (int r = 0; r < rows; r++) {
        const float *src = a + (size_t)r * lda;
        uint32_t *o = out + (size_t)r * nq;
        int q = 0;
#if GRAFT_BF16
        for (; q + 16 <= nq && 2 * (q0 + q) + 32 <= k; q += 16) {
            __m512 lo = _mm512_loadu_ps(src + 2 * (q0 + q)), hi = _mm512_loadu_ps(src + 2 * (q0 + q) + 16);
            _mm512_storeu_si512((void *)(o + q), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
#endif
        for (; q < nq; q++) {
            int c = 2 * (q0 + q);
            uint16_t l = to_bf16(src[c]), h = c + 1 < k ? to_bf16(src[c + 1]) : 0;
            o[q] = (uint32_t)l | ((uint32_t)h << 16);
        }
    }
}

#if GRAFT_BF16
// C[mr × nr] (+)= A[mr rows of nq pairs] · B panel (nq pairs × 64 columns). `accumulate`: add to C
// (scaled by beta on the first k block).
static void kernel(int nq, const uint32_t *a, int mr, const uint16_t *b, float *c, int ldc, int nr, float beta) {
    __m512 acc[MR][4];
    for (int m = 0; m < MR; m++) for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();
    const uint32_t *ar[MR];
    for (int m = 0; m < MR; m++) ar[m] = a + (size_t)(m < mr ? m : 0) * nq;
    for (int q = 0; q < nq; q++) {
        const uint16_t *bq = b + (size_t)q * NR * 2;
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bq), b1 = (__m512bh)_mm512_loadu_si512(bq + 32);
        __m512bh b2 = (__m512bh)_mm512_loadu_si512(bq + 64), b3 = (__m512bh)_mm512_loadu_si512(bq + 96);
#pragma GCC unroll 6
        for (int m = 0; m < MR; m++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)ar[m][q]);
            acc[m][0] = _mm512_dpbf16_ps(acc[m][0], av, b0);
            acc[m][1] = _mm512_dpbf16_ps(acc[m][1], av, b1);
            acc[m][2] = _mm512_dpbf16_ps(acc[m][2], av, b2);
            acc[m][3] = _mm512_dpbf16_ps(acc[m][3], av, b3);
        }
    }
    __m512 vb = _mm512_set1_ps(beta);
    for (int m = 0; m < mr; m++) {
        float *cr = c + (size_t)m * ldc;
        for (int j = 0; j < 4; j++) {
            int left = nr - 16 * j;
            if (left <= 0) break;
            __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512 v = acc[m][j];
            if (beta != 0) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, cr + 16 * j), v);
            _mm512_mask_storeu_ps(cr + 16 * j, mask, v);
        }
    }
}
#else
static void kernel(int nq, const uint32_t *a, int mr, const uint16_t *b, float *c, int ldc, int nr, float beta) {
    for (int m = 0; m < mr; m++) {
        for (int j = 0; j < nr; j++) {
            float s = 0;
            for (int q = 0; q < nq; q++) {
                uint32_t w = a[(size_t)m * nq + q];
                s += from_bf16((uint16_t)(w & 0xffff)) * from_bf16(b[(size_t)q * NR * 2 + 2 * j]);
                s += from_bf16((uint16_t)(w >> 16)) * from_bf16(b[(size_t)q * NR * 2 + 2 * j + 1]);
            }
            float *o = c + (size_t)m * ldc + j;
            *o = beta != 0 ? beta * *o + s : s;
        }
    }
}
#endif

void graft_bf16_gemm(int m, int n, int k, const float *a, int lda, const uint16_t *b, float *c, int ldc, float beta,
                     int panel_begin, int panel_end) {
    int kp = (k + 1) / 2;
    uint32_t *abuf = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)MC * KCP + 64);
    if (!abuf) return;
    for (int q0 = 0; q0 < kp; q0 += KCP) {
        int nq = kp - q0 < KCP ? kp - q0 : KCP;
        float bt = q0 == 0 ? beta : 1.0f;
        for (int i0 = 0; i0 < m; i0 += MC) {
            int mc = m - i0 < MC ? m - i0 : MC;
            pack_a(a + (size_t)i0 * lda, lda, mc, k, q0, nq, abuf);
            for (int p = panel_begin; p < panel_end; p++) {
                const uint16_t *bp = b + ((size_t)p * kp + q0) * NR * 2;
                int nr = n - p * NR < NR ? n - p * NR : NR;
                for (int r = 0; r < mc; r += MR) {
                    int mr = mc - r < MR ? mc - r : MR;
                    kernel(nq, abuf + (size_t)r * nq, mr, bp, c + (size_t)(i0 + r) * ldc + (size_t)p * NR, ldc, nr, bt);
                }
            }
        }
    }
    free(abuf);
}
