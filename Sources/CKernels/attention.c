// Scaled dot-product attention for one sequence and one head, float32: out = softmax(scale · Q·Kᵀ) · V
// over the first `len` positions (no mask inside; keys past `len` do not exist). Four query rows at a
// time: their scores against every key (Kᵀ transposed once into scratch, 16 × 16 blocks in registers,
// so each k step is contiguous), the softmax, then their weighted sum of V — the score rows never
// leave L1. Up to 64 keys the softmax runs on the score tile still in registers and 1/Σ is applied to
// the output rows, not to P. Replaces two small SGEMM calls (each packing its operands) and a separate
// softmax pass per head.
#include "ckernels.h"
#include "simd_math.h"
#include <math.h>

#define RB 4  // query rows per block

static int padded(int len) { return (len + 15) & ~15; }

size_t graft_attention_scratch(int len, int dh) { return (size_t)padded(len) * (size_t)(dh + RB) + (size_t)RB * dh; }

#if GRAFT_AVX512 || GRAFT_AVX2
// Before query block i0 (`rows` real rows): prefetches a share of the next head's rows into L1, spread
// over the blocks (prefetches into L2, in one burst or spread, left this head's query-row loads the hot
// spot), and writes the block's query rows, scaled, side by side into qs (rows past len repeat the last).
static inline void start_block(int i0, int rows, int per_block, int nlen, int dh, int ld, const float *q, float scale,
                               float *qs, const float *nq, const float *nk, const float *nv) {
    for (int j = i0 / RB * per_block; j < (i0 / RB + 1) * per_block && j < nlen; j++)
        for (int d = 0; d < dh; d += 16) {
            size_t o = (size_t)j * ld + d;
            _mm_prefetch((const char *)(nq + o), _MM_HINT_T0);
            _mm_prefetch((const char *)(nk + o), _MM_HINT_T0);
            _mm_prefetch((const char *)(nv + o), _MM_HINT_T0);
        }
    for (int r = 0; r < RB; r++) {
        const float *src = q + (size_t)(i0 + (r < rows ? r : rows - 1)) * ld;
        for (int d = 0; d < dh; d++) qs[r * dh + d] = src[d] * scale;
    }
}
#endif

#if GRAFT_AVX512
// Transposes the 16 × 16 block held in r[0..15] (row i in r[i]) in place.
static inline void transpose16(__m512 *r) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // r[4q + c] now holds, in each 128-bit lane L, elements c of rows 4q..4q+3 for column 4L + c;
    // regroup the lanes across the four row quads.
    for (int c = 0; c < 4; c++) {
        __m512 a0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), a1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        __m512 b0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88), b1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        t[c] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        t[8 + c] = _mm512_shuffle_f32x4(a0, b0, 0xdd);
        t[4 + c] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(a1, b1, 0xdd);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

void graft_attention_head(int len, int dh, const float *q, const float *k, const float *v, int ld, float scale,
                          float *out, int ldo, float *scratch, const float *nq, const float *nk, const float *nv, int nlen) {
    if (len <= 0) return;
    int blocks = (len + RB - 1) / RB, per_block = nq ? (nlen + blocks - 1) / blocks : 0;
    int lp = padded(len);
    float *kt = scratch, *p = scratch + (size_t)dh * lp, *qs = p + (size_t)RB * lp;
    // Kᵀ [dh × lp], keys past len zero: 16 keys × 16 dimensions at a time.
    for (int j0 = 0; j0 < lp; j0 += 16) {
        for (int d0 = 0; d0 < dh; d0 += 16) {
            int w = dh - d0 < 16 ? dh - d0 : 16;
            __mmask16 m = w == 16 ? (__mmask16)0xffff : (__mmask16)((1u << w) - 1);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = j0 + i < len ? _mm512_maskz_loadu_ps(m, k + (size_t)(j0 + i) * ld + d0) : _mm512_setzero_ps();
            transpose16(r);
            for (int i = 0; i < w; i++) _mm512_storeu_ps(kt + (size_t)(d0 + i) * lp + j0, r[i]);
        }
    }
    for (int i0 = 0; i0 < len; i0 += RB) {
        int rows = len - i0 < RB ? len - i0 : RB;
        start_block(i0, rows, per_block, nlen, dh, ld, q, scale, qs, nq, nk, nv);
        float inv[RB];  // 1 / Σ_j e^(s_j − max) per query row
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
            if (lp <= 64) {
                // Every key is in this tile: softmax on the registers. P keeps e^(s − max); 1/Σ scales
                // the output rows below. Keys past len get probability 0.
                __mmask16 km[4];
                for (int j = 0; j < 4; j++) {
                    int left = len - 16 * j;
                    km[j] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0;
                }
#pragma GCC unroll 4
                for (int r = 0; r < RB; r++) {
                    __m512 mx = _mm512_set1_ps(-INFINITY);
#pragma GCC unroll 4
                    for (int j = 0; j < 4; j++) if (j < nj) mx = _mm512_mask_max_ps(mx, km[j], mx, acc[r][j]);
                    __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
                    __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 4
                    for (int j = 0; j < 4; j++) {
                        if (j < nj) {
                            __m512 e = _mm512_maskz_mov_ps(km[j], graft_exp16(_mm512_sub_ps(acc[r][j], vmax)));
                            _mm512_storeu_ps(p + (size_t)r * lp + 16 * j, e);
                            sum = _mm512_add_ps(sum, e);
                        }
                    }
                    inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
                }
            } else {
                // Fixed trip counts (guards inside) keep the accumulators in registers.
#pragma GCC unroll 4
                for (int r = 0; r < RB; r++)
#pragma GCC unroll 4
                    for (int j = 0; j < 4; j++)
                        if (j < nj) _mm512_storeu_ps(p + (size_t)r * lp + c + 16 * j, acc[r][j]);
            }
        }
        // More than 64 keys: softmax of each row from the stored scores; padding keys get probability 0.
        if (lp > 64)
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
                inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
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
                __m512 scale_r = _mm512_set1_ps(inv[r]);
                _mm512_mask_storeu_ps(o, m0, _mm512_mul_ps(acc[r][0], scale_r));
                _mm512_mask_storeu_ps(o + 16, m1, _mm512_mul_ps(acc[r][1], scale_r));
            }
        }
    }
}
#elif GRAFT_AVX2
// AVX2 + FMA: the same passes with 8-float vectors. Kᵀ is transposed in 8 × 8 blocks; scores are
// computed 16 keys × 4 query rows at a time (8 accumulators) and stored, then each row's softmax runs
// on the stored scores; P · V 16 head dimensions at a time.
static inline void transpose8(__m256 *r) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // u[4h + c] holds, per 128-bit lane L, element c of rows 4h..4h+3 for column 4L + c.
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

void graft_attention_head(int len, int dh, const float *q, const float *k, const float *v, int ld, float scale,
                          float *out, int ldo, float *scratch, const float *nq, const float *nk, const float *nv, int nlen) {
    if (len <= 0) return;
    int blocks = (len + RB - 1) / RB, per_block = nq ? (nlen + blocks - 1) / blocks : 0;
    int lp = padded(len);
    float *kt = scratch, *p = scratch + (size_t)dh * lp, *qs = p + (size_t)RB * lp;
    // Kᵀ [dh × lp], keys past len zero: 8 keys × 8 dimensions at a time.
    for (int j0 = 0; j0 < lp; j0 += 8) {
        for (int d0 = 0; d0 < dh; d0 += 8) {
            int w = dh - d0 < 8 ? dh - d0 : 8;
            __m256i lanes = graft_lanes8(w);
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = j0 + i >= len ? _mm256_setzero_ps()
                     : w == 8 ? _mm256_loadu_ps(k + (size_t)(j0 + i) * ld + d0) : _mm256_maskload_ps(k + (size_t)(j0 + i) * ld + d0, lanes);
            transpose8(r);
            for (int i = 0; i < w; i++) _mm256_storeu_ps(kt + (size_t)(d0 + i) * lp + j0, r[i]);
        }
    }
    for (int i0 = 0; i0 < len; i0 += RB) {
        int rows = len - i0 < RB ? len - i0 : RB;
        start_block(i0, rows, per_block, nlen, dh, ld, q, scale, qs, nq, nk, nv);
        // Scores, 16 keys at a time (lp is a multiple of 16).
        for (int c = 0; c < lp; c += 16) {
            __m256 acc[RB][2];
            for (int r = 0; r < RB; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
            const float *kd = kt + c;
            for (int d = 0; d < dh; d++, kd += lp) {
                __m256 k0 = _mm256_loadu_ps(kd), k1 = _mm256_loadu_ps(kd + 8);
#pragma GCC unroll 4
                for (int r = 0; r < RB; r++) {
                    __m256 qb = _mm256_set1_ps(qs[r * dh + d]);
                    acc[r][0] = _mm256_fmadd_ps(qb, k0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(qb, k1, acc[r][1]);
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++) {
                _mm256_storeu_ps(p + (size_t)r * lp + c, acc[r][0]);
                _mm256_storeu_ps(p + (size_t)r * lp + c + 8, acc[r][1]);
            }
        }
        // Softmax of each row; P keeps e^(s − max), padding keys 0; 1/Σ scales the output rows.
        float inv[RB];
        for (int r = 0; r < rows; r++) {
            float *pr = p + (size_t)r * lp;
            __m256 mx = _mm256_set1_ps(-INFINITY);
            for (int j = 0; j < lp; j += 8) {
                __m256 x = _mm256_loadu_ps(pr + j);
                if (len - j < 8) x = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, _mm256_castsi256_ps(graft_lanes8(len - j)));
                mx = _mm256_max_ps(mx, x);
            }
            __m256 vmax = _mm256_set1_ps(graft_hmax8(mx));
            __m256 sum = _mm256_setzero_ps();
            for (int j = 0; j < lp; j += 8) {
                __m256 e = graft_exp8(_mm256_sub_ps(_mm256_loadu_ps(pr + j), vmax));
                if (len - j < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(graft_lanes8(len - j)));
                _mm256_storeu_ps(pr + j, e);
                sum = _mm256_add_ps(sum, e);
            }
            inv[r] = 1.0f / graft_hsum8(sum);
        }
        // out rows = P · V, 16 head dimensions at a time.
        for (int e0 = 0; e0 < dh; e0 += 16) {
            int full = dh - e0 >= 16;
            __m256i l0 = graft_lanes8(dh - e0), l1 = graft_lanes8(dh - e0 - 8);
            __m256 acc[RB][2];
            for (int r = 0; r < RB; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
            for (int j = 0; j < len; j++) {
                const float *vj = v + (size_t)j * ld + e0;
                __m256 v0 = full ? _mm256_loadu_ps(vj) : _mm256_maskload_ps(vj, l0);
                __m256 v1 = full ? _mm256_loadu_ps(vj + 8) : _mm256_maskload_ps(vj + 8, l1);
#pragma GCC unroll 4
                for (int r = 0; r < RB; r++) {
                    __m256 pb = _mm256_set1_ps(p[(size_t)r * lp + j]);
                    acc[r][0] = _mm256_fmadd_ps(pb, v0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(pb, v1, acc[r][1]);
                }
            }
            for (int r = 0; r < rows; r++) {
                float *o = out + (size_t)(i0 + r) * ldo + e0;
                __m256 sr = _mm256_set1_ps(inv[r]);
                __m256 o0 = _mm256_mul_ps(acc[r][0], sr), o1 = _mm256_mul_ps(acc[r][1], sr);
                if (full) { _mm256_storeu_ps(o, o0); _mm256_storeu_ps(o + 8, o1); }
                else { _mm256_maskstore_ps(o, l0, o0); _mm256_maskstore_ps(o + 8, l1, o1); }
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
