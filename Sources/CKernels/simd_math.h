// Vector math shared by the float32 kernels (private to CKernels): e^x and GELU on 16 floats (AVX-512)
// or 8 (AVX2 + FMA).
#ifndef GRAFT_SIMD_MATH_H
#define GRAFT_SIMD_MATH_H

// The formulas' coefficients, once for both vector widths (Horner order, highest degree first).
// e^x's fraction polynomial p(f), degree 6:
static const float graft_exp_poly[7] = {0.0013888888889f, 0.0083333333333f, 0.041666666666f, 0.16666666666f, 0.5f, 1.0f, 1.0f};
// erf(z) ≈ z·P(z²)/Q(z²), the degree-13/8 rational approximation of Eigen and XLA:
static const float graft_erf_p[7] = {-2.72614225801306e-10f, 2.77068142495902e-08f, -2.10102402082508e-06f, -5.69250639462346e-05f,
                                     -7.34990630326855e-04f, -2.95459980854025e-03f, -1.60960333262415e-02f};
static const float graft_erf_q[5] = {-1.45660718464996e-05f, -2.13374055278905e-04f, -1.68282697438203e-03f, -7.37332916720468e-03f,
                                     -1.42647390514189e-02f};

#if defined(__AVX512F__)
#include <immintrin.h>
#define GRAFT_AVX512 1

// e^x, x clamped to [-87, 88]: 2^n · p(f) with n = floor(x·log2 e) and a degree-6 polynomial for the
// fraction (relative error ≈ 2e-7), as GraftModels' Activation.exp16.
static inline __m512 graft_exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 y = _mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f));
    __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(y, n), _mm512_set1_ps(0.6931471805599453f));
    __m512 p = _mm512_set1_ps(graft_exp_poly[0]);
    for (int i = 1; i < 7; i++) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(graft_exp_poly[i]));
    return _mm512_scalef_ps(p, n);
}

// GELU, exact (erf) form, with erf(z) ≈ z·P(z²)/Q(z²) on z clamped to [−4, 4] (beyond, erf is ±1 in
// float32): the degree-13/8 rational approximation used by Eigen and XLA for float erf. Max |error|
// of GELU on [−12, 12] against double precision: 1.5e-6 (the Abramowitz–Stegun form with e^(−z²) that
// GraftModels' Activation.gelu uses: 1.2e-6), for ~25 % fewer instructions — this runs in the epilogue
// of every FFN product (measured 2 % on BERT's FFN up).
static inline __m512 graft_gelu16(__m512 x) {
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
    z = _mm512_max_ps(_mm512_set1_ps(-4.0f), _mm512_min_ps(z, _mm512_set1_ps(4.0f)));
    __m512 z2 = _mm512_mul_ps(z, z);
    __m512 p = _mm512_set1_ps(graft_erf_p[0]);
    for (int i = 1; i < 7; i++) p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(graft_erf_p[i]));
    p = _mm512_mul_ps(p, z);
    __m512 q = _mm512_set1_ps(graft_erf_q[0]);
    for (int i = 1; i < 5; i++) q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(graft_erf_q[i]));
    __m512 erf = _mm512_div_ps(p, q);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}
#else
#define GRAFT_AVX512 0
#endif

// AVX2 + FMA without AVX-512 (AMD Zen 2/3, Intel Haswell to Alder Lake): the same functions on 8 floats,
// with the same formulas, so both paths give the same values to rounding.
#if !GRAFT_AVX512 && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GRAFT_AVX2 1

static inline __m256 graft_exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 y = _mm256_mul_ps(x, _mm256_set1_ps(1.4426950408889634f));
    __m256 n = _mm256_floor_ps(y);
    __m256 f = _mm256_mul_ps(_mm256_sub_ps(y, n), _mm256_set1_ps(0.6931471805599453f));
    __m256 p = _mm256_set1_ps(graft_exp_poly[0]);
    for (int i = 1; i < 7; i++) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(graft_exp_poly[i]));
    // 2^n for n in [−126, 127] (x is clamped): n + 127 in the exponent field.
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 graft_gelu8(__m256 x) {
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    z = _mm256_max_ps(_mm256_set1_ps(-4.0f), _mm256_min_ps(z, _mm256_set1_ps(4.0f)));
    __m256 z2 = _mm256_mul_ps(z, z);
    __m256 p = _mm256_set1_ps(graft_erf_p[0]);
    for (int i = 1; i < 7; i++) p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(graft_erf_p[i]));
    p = _mm256_mul_ps(p, z);
    __m256 q = _mm256_set1_ps(graft_erf_q[0]);
    for (int i = 1; i < 5; i++) q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(graft_erf_q[i]));
    __m256 erf = _mm256_div_ps(p, q);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
}

static inline float graft_hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

static inline float graft_hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

// Lanes i < left set (for _mm256_maskload_ps / _mm256_maskstore_ps).
static inline __m256i graft_lanes8(int left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#else
#define GRAFT_AVX2 0
#endif
#endif
