#include "ckernels.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__F16C__)
#define GRAFT_VNNI 1
#else
#define GRAFT_VNNI 0
#endif
// Without VNNI, AVX2 multiplies bytes with vpmaddubsw (pairs summed to 16 bits, then to 32), as llama.cpp.
#if !GRAFT_VNNI && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GRAFT_AVX2_INT 1
#else
#define GRAFT_AVX2_INT 0
#endif

int graft_has_vnni(void) { return GRAFT_VNNI; }

static inline float half_to_float(const uint8_t *p) {
    uint16_t h; memcpy(&h, p, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) { if (man == 0) bits = sign; else { exp = 127 - 15 + 1; while (!(man & 0x400)) { man <<= 1; exp--; } man &= 0x3FF; bits = sign | (exp << 23) | (man << 13); } }
    else if (exp == 31) bits = sign | 0x7F800000 | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f; memcpy(&f, &bits, 4); return f;
#endif
}

void graft_quantize_q8(const float *x, int n, int8_t *q, float *d, int32_t *s) {
    for (int b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0;
        for (int j = 0; j < 32; j++) { float a = fabsf(xb[j]); if (a > amax) amax = a; }
        float scale = amax / 127.0f, inv = scale > 0 ? 1.0f / scale : 0;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) { int v = (int)nearbyintf(xb[j] * inv); q[b * 32 + j] = (int8_t)v; sum += v; }
        d[b] = scale; s[b] = sum;
    }
}

// Σ_j u[j] · s[j] over 32 unsigned × signed bytes. (AVX2: the pairs' 16-bit sums saturate past
// 32767, so u stays below 128 — |w| with w's sign moved to x for Q8_0, nibbles for Q4.)
#if GRAFT_VNNI || GRAFT_AVX2_INT
static inline __m256 block_dot(__m256i u, __m256i x, float scale, __m256 acc) {
#if GRAFT_VNNI
    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x);
#else
    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
#endif
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), acc);
}
static inline float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a)); a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}
#endif

void graft_matvec_q8(int format, const uint8_t *w, int cols, int row0, int row1,
                     const int8_t *xq, const float *xd, const int32_t *xs, float *y) {
    const int nb = cols / 32;
    const int bb = format == 0 ? 34 : format == 1 ? 18 : 20;
    for (int r = row0; r < row1; r++) {
        const uint8_t *row = w + (size_t)r * nb * bb;
        float extra = 0;
#if GRAFT_VNNI || GRAFT_AVX2_INT
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bb;
            float dw = half_to_float(blk), dx = xd[b];
            __m256i x = _mm256_loadu_si256((const __m256i *)(xq + b * 32));
            __m256i u;
            if (format == 0) {
#if GRAFT_VNNI  // signed weights: (w + 128) as unsigned, minus 128·Σx
                u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
                extra -= dw * dx * 128.0f * (float)xs[b];
#else           // |w| · (x with w's sign)
                __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
                u = _mm256_sign_epi8(w, w);
                x = _mm256_sign_epi8(x, w);
#endif
            } else {
                __m128i q = _mm_loadu_si128((const __m128i *)(blk + (format == 2 ? 4 : 2)));
                __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0F)), hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F));
                u = _mm256_set_m128i(hi, lo);
                if (format == 1) extra -= dw * dx * 8.0f * (float)xs[b];
                else extra += half_to_float(blk + 2) * dx * (float)xs[b];
            }
            acc = block_dot(u, x, dw * dx, acc);
        }
        y[r] = hsum(acc) + extra;
#else
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bb;
            float dw = half_to_float(blk), dx = xd[b];
            int32_t sum = 0;
            for (int j = 0; j < 32; j++) {
                int wq;
                if (format == 0) wq = (int8_t)blk[2 + j];
                else { uint8_t byte = blk[(format == 2 ? 4 : 2) + (j & 15)]; wq = j < 16 ? (byte & 0x0F) : (byte >> 4); if (format == 1) wq -= 8; }
                sum += wq * xq[b * 32 + j];
            }
            acc += dw * dx * (float)sum;
            if (format == 2) extra += half_to_float(blk + 2) * dx * (float)xs[b];
        }
        y[r] = acc + extra;
#endif
    }
}

// y[r] = Σ_c W[r, c] · x[c] for rows row0..<row1 of a Q8_0 (format 0), Q4_0 (1) or Q4_1 (2) matrix with
// float activations: each block's quants become floats (AVX-512: 16 lanes per conversion) and multiply x
// in float32, so the result is the dequantised matrix times x up to float rounding. xsum[b] = Σ of x's
// block b (for Q4_0's −8 offset and Q4_1's minimum m).
void graft_matvec_float(int format, const uint8_t *w, int cols, int row0, int row1,
                        const float *x, const float *xsum, float *y) {
    const int nb = cols / 32;
    const int bb = format == 0 ? 34 : format == 1 ? 18 : 20;
    for (int r = row0; r < row1; r++) {
        const uint8_t *row = w + (size_t)r * nb * bb;
        float extra = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__F16C__)
        __m512 acc = _mm512_setzero_ps();
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bb;
            const float d = half_to_float(blk);
            __m512i lo, hi;
            if (format == 0) {
                lo = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)));
                hi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18)));
            } else {
                __m128i q = _mm_loadu_si128((const __m128i *)(blk + (format == 2 ? 4 : 2)));
                lo = _mm512_cvtepu8_epi32(_mm_and_si128(q, _mm_set1_epi8(0x0F)));
                hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F)));
                if (format == 1) extra -= d * 8.0f * xsum[b];
                else extra += half_to_float(blk + 2) * xsum[b];
            }
            __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), _mm512_loadu_ps(x + b * 32));
            t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_loadu_ps(x + b * 32 + 16), t);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc);
        }
        y[r] = _mm512_reduce_add_ps(acc) + extra;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bb;
            const float d = half_to_float(blk);
            __m256i q0, q1, q2, q3;  // the block's 32 quants, 8 at a time, as int32
            if (format == 0) {
                q0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2)));
                q1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 10)));
                q2 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 18)));
                q3 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 26)));
            } else {
                __m128i q = _mm_loadu_si128((const __m128i *)(blk + (format == 2 ? 4 : 2)));
                __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0F)), hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F));
                q0 = _mm256_cvtepu8_epi32(lo);
                q1 = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
                q2 = _mm256_cvtepu8_epi32(hi);
                q3 = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
                if (format == 1) extra -= d * 8.0f * xsum[b];
                else extra += half_to_float(blk + 2) * xsum[b];
            }
            const float *xb = x + b * 32;
            __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(q0), _mm256_loadu_ps(xb));
            t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q1), _mm256_loadu_ps(xb + 8), t);
            t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q2), _mm256_loadu_ps(xb + 16), t);
            t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q3), _mm256_loadu_ps(xb + 24), t);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
        }
        y[r] = hsum(acc) + extra;
#else
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bb;
            const float d = half_to_float(blk);
            float s = 0;
            for (int j = 0; j < 32; j++) {
                int q;
                if (format == 0) q = (int8_t)blk[2 + j];
                else { uint8_t byte = blk[(format == 2 ? 4 : 2) + (j & 15)]; q = j < 16 ? (byte & 0x0F) : (byte >> 4); }
                s += (float)q * x[b * 32 + j];
            }
            acc += d * s;
            if (format == 1) extra -= d * 8.0f * xsum[b];
            else if (format == 2) extra += half_to_float(blk + 2) * xsum[b];
        }
        y[r] = acc + extra;
#endif
    }
}
