// Vector math shared by the float32 kernels (private to CKernels): e^x and GELU on 16 floats.
#ifndef GRAFT_SIMD_MATH_H
#define GRAFT_SIMD_MATH_H
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
    __m512 p = _mm512_set1_ps(0.0013888888889f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.0083333333333f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.041666666666f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.16666666666f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// GELU with erf(z) = 1 − t·e^(−z²)·P(t), t = 1/(1 + 0.3275911·|z|) (Abramowitz & Stegun 7.1.26,
// |error| ≤ 1.5e-7): the formula of GraftModels' Activation.gelu, so fused and unfused GELU agree.
static inline __m512 graft_gelu16(__m512 x) {
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
    __m512 az = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(az, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 e = graft_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(az, az)));
    __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
    // erf is odd: copy z's sign onto erf(|z|).
    __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs),
                                     _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32((int)0x80000000u))));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}
#else
#define GRAFT_AVX512 0
#endif
#endif
