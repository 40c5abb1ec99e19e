// The running CPU's instruction-set extensions, asked of the CPU itself (cpuid through the compiler's
// builtin), whatever this build was compiled for: the kernels a build carries are chosen at compile
// time (-march=native), so `graft doctor` compares the two, and the BLAS check needs the truth.
#include "ckernels.h"

int graft_cpu_features(void) {
    int f = 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) f |= GRAFT_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= GRAFT_CPU_FMA;
    if (__builtin_cpu_supports("f16c")) f |= GRAFT_CPU_F16C;
    if (__builtin_cpu_supports("avx512f")) f |= GRAFT_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= GRAFT_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) f |= GRAFT_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512dq")) f |= GRAFT_CPU_AVX512DQ;
    if (__builtin_cpu_supports("avx512vnni")) f |= GRAFT_CPU_AVX512VNNI;
    if (__builtin_cpu_supports("avx512bf16")) f |= GRAFT_CPU_AVX512BF16;
#endif
    return f;
}

int graft_build_features(void) {
    int f = 0;
#if defined(__AVX2__)
    f |= GRAFT_CPU_AVX2;
#endif
#if defined(__FMA__)
    f |= GRAFT_CPU_FMA;
#endif
#if defined(__F16C__)
    f |= GRAFT_CPU_F16C;
#endif
#if defined(__AVX512F__)
    f |= GRAFT_CPU_AVX512F;
#endif
#if defined(__AVX512BW__)
    f |= GRAFT_CPU_AVX512BW;
#endif
#if defined(__AVX512VL__)
    f |= GRAFT_CPU_AVX512VL;
#endif
#if defined(__AVX512DQ__)
    f |= GRAFT_CPU_AVX512DQ;
#endif
#if defined(__AVX512VNNI__)
    f |= GRAFT_CPU_AVX512VNNI;
#endif
#if defined(__AVX512BF16__)
    f |= GRAFT_CPU_AVX512BF16;
#endif
    return f;
}
