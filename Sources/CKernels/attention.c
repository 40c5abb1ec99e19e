// Scaled dot-product attention for one sequence and one head, float32: out = softmax(scale · Q·Kᵀ) · V
// over the first `len` positions (no mask inside; keys past `len` do not exist). Four query rows at a
// time: their scores against every key (Kᵀ copied once into scratch so each k step is contiguous), the
// softmax, then their weighted sum of V — the score rows never leave L1. Replaces two small SGEMM calls
// (each packing its operands) and a separate softmax pass per head.
#include "ckernels.h"
#include "simd_math.h"
#include <math.h>

#define RB 4  // query rows per block

static int padded(int len) { return (len + 15) & ~15; }

size_t graft_attention_scratch(int len, int dh) { return (size_t)padded(len) * (size_t)(dh + RB) + (size_t)RB * dh; }

#if GRAFT_AVX512
void graft_attention_head(int len, int dh, const float *q, const float *k, const float *v, int ld, float scale,
                          float *out, int ldo, float *scratch, const float *nq, const float *nk, const float *nv, int nlen) {
    if (len <= 0) return;
    int blocks = (len + RB - 1) / RB, per_block = nq ? (nlen + blocks - 1) / blocks : 0;
    int lp = padded(len);
    float *kt = scratch, *p = scratch + (size_t)dh * lp, *qs = p + (size_t)RB * lp;
    for (int d = 0; d < dh; d++) {
        float *row = kt + (size_t)d * lp;
        for (int j = 0; j < len; j++) row[j] = k[(size_t)j * ld + d];
        for (int j = len; j < lp; j++) row[j] = 0;
    }
    for (int i0 = 0; i0 < len; i0 += RB) {
        int rows = len - i0 < RB ? len - i0 : RB;
        // A share of the next head's rows into L1, spread over the blocks (prefetches into L2, in one
        // burst or spread, left this head's query-row loads the hot spot).
        for (int j = i0 / RB * per_block; j < (i0 / RB + 1) * per_block && j < nlen; j++)
            for (int d = 0; d < dh; d += 16) {
                size_t o = (size_t)j * ld + d;
                _mm_prefetch((const char *)(nq + o), _MM_HINT_T0);
                _mm_prefetch((const char *)(nk + o), _MM_HINT_T0);
                _mm_prefetch((const char *)(nv + o), _MM_HINT_T0);
            }
        // The block's query rows, scaled, side by side (rows past len repeat the last one).
        for (int r = 0; r < RB; r++) {
            const float *src = q + (size_t)(i0 + (r < rows ? r : rows - 1)) * ld;
            for (int d = 0; d < dh; d++) qs[r * dh + d] = src[d] * scale;
        }
        // Scores, 64 keys at a time.
        for (int c = 0; c < lp; c += 64) {
            int nj = (lp - c) / 16 < 4 ? (lp - c) / 16 : 4;
            __m512 acc[RB][4];
            for (int r = 0; r < RB; r++) for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
            const float *kd = kt + c;
            for (int d = 0; d < dh; d++, kd += lp) {
                __m512 k0 = _mm512_loadu_ps(kd);
                __m512 k1 = nj > 1 ? _mm512_loadu_ps(kd + 16) : k0, k2 = nj > 2 ? _mm512_loadu_ps(kd + 32) : k0;
                __m512 k3 = nj > 3 ? _mm512_loadu_ps(kd + 48) : k0;
                for (int r = 0; r < RB; r++) {
                    __m512 qb = _mm512_set1_ps(qs[r * dh + d]);
                    acc[r][0] = _mm512_fmadd_ps(qb, k0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(qb, k1, acc[r][1]);
                    acc[r][2] = _mm512_fmadd_ps(qb, k2, acc[r][2]);
                    acc[r][3] = _mm512_fmadd_ps(qb, k3, acc[r][3]);
                }
            }
            // Fixed trip counts (guards inside) keep the accumulators in registers.
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++)
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++)
                    if (j < nj) _mm512_storeu_ps(p + (size_t)r * lp + c + 16 * j, acc[r][j]);
        }
        // Softmax of each row over its len keys; padding keys get probability 0.
        for (int r = 0; r < rows; r++) {
            float *pr = p + (size_t)r * lp;
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int j = 0; j < lp; j += 16) {
                __mmask16 m = len - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - j)) - 1);
                mx = _mm512_mask_max_ps(mx, m, mx, _mm512_loadu_ps(pr + j));
            }
            __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
            __m512 sum = _mm512_setzero_ps();
            for (int j = 0; j < lp; j += 16) {
                __mmask16 m = len - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - j)) - 1);
                __m512 e = _mm512_maskz_mov_ps(m, graft_exp16(_mm512_sub_ps(_mm512_loadu_ps(pr + j), vmax)));
                _mm512_storeu_ps(pr + j, e);
                sum = _mm512_add_ps(sum, e);
            }
            __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
            for (int j = 0; j < lp; j += 16) _mm512_storeu_ps(pr + j, _mm512_mul_ps(_mm512_loadu_ps(pr + j), inv));
        }
        // out rows = P · V, 32 head dimensions at a time.
        for (int e0 = 0; e0 < dh; e0 += 32) {
            int w0 = dh - e0 < 16 ? dh - e0 : 16, w1 = dh - e0 - 16 < 0 ? 0 : (dh - e0 - 16 < 16 ? dh - e0 - 16 : 16);
            __mmask16 m0 = w0 == 16 ? (__mmask16)0xffff : (__mmask16)((1u << w0) - 1);
            __mmask16 m1 = w1 == 16 ? (__mmask16)0xffff : (__mmask16)((1u << w1) - 1);
            __m512 acc[RB][2];
            for (int r = 0; r < RB; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
            for (int j = 0; j < len; j++) {
                const float *vj = v + (size_t)j * ld + e0;
                __m512 v0 = _mm512_maskz_loadu_ps(m0, vj), v1 = _mm512_maskz_loadu_ps(m1, vj + 16);
                for (int r = 0; r < RB; r++) {
                    __m512 pb = _mm512_set1_ps(p[(size_t)r * lp + j]);
                    acc[r][0] = _mm512_fmadd_ps(pb, v0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(pb, v1, acc[r][1]);
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++) {
                if (r >= rows) break;
                float *o = out + (size_t)(i0 + r) * ldo + e0;
                _mm512_mask_storeu_ps(o, m0, acc[r][0]);
                _mm512_mask_storeu_ps(o + 16, m1, acc[r][1]);
            }
        }
    }
}
#else
void graft_attention_head(int len, int dh, const float *q, const float *k, const float *v, int ld, float scale,
                          float *out, int ldo, float *scratch, const float *nq, const float *nk, const float *nv, int nlen) {
    (void)nq; (void)nk; (void)nv; (void)nlen;
    float *p = scratch;
    for (int i = 0; i < len; i++) {
        float mx = -INFINITY, sum = 0;
        for (int j = 0; j < len; j++) {
            float s = 0;
            for (int d = 0; d < dh; d++) s += q[(size_t)i * ld + d] * k[(size_t)j * ld + d];
            p[j] = s * scale;
            if (p[j] > mx) mx = p[j];
        }
        for (int j = 0; j < len; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
        for (int d = 0; d < dh; d++) {
            float o = 0;
            for (int j = 0; j < len; j++) o += p[j] * v[(size_t)j * ld + d];
            out[(size_t)i * ldo + d] = o / sum;
        }
    }
}
#endif
