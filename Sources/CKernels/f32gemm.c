// float32 matrix products for inference over a frozen, pre-packed weight: C = act(A · B + bias + residual).
//
// B is packed once into 64-column panels (each k row of a panel is 64 contiguous floats), so no call
// repacks it — a general SGEMM packs B on every call, which on BERT-sized products (2048 × 384 × 384) is
// ~10 % of the time. The micro-kernel keeps a 6 × 64 tile of C in 24 zmm registers, reads A straight
// from its rows and does 24 FMAs per k (4 loads of B, 6 broadcasts of A). The bias, a residual and
// GELU are applied while the tile is still in registers. With AVX2 + FMA and no AVX-512 (16 ymm
// registers) the same panels are done as four 6 × 16 sub-tiles: 12 FMAs per k from 2 loads of B and
// 6 broadcasts of A. Without either, portable C gives the same results, slowly.
//
// Two layouts of the packed B:
// - classical (graft_f32_*): B's panels; m·k·n multiply-adds.
// - Strassen (graft_f32s_*): one level of Strassen's algorithm, with the weight-side sums done once at
//   packing time. B is split into quadrants and packed as the seven (k/2 × n/2) operands
//   B11+B22, B11, B12−B22, B21−B11, B22, B11+B12, B21+B22. Each block of 2 × 48 rows of A is split into
//   quadrants the same way, and the seven products Mi = (A-side sum) · (B operand) cost 7/8 of the
//   classical multiply-adds. The A-side sums (A11+A22, A21+A22, A11+A12, A21−A11, A12−A22) are formed
//   as A is read (one scalar add per row and k beside 4 FMAs; measured free), so nothing is copied.
//   Each tile of Mi is added, with its sign, straight from the registers into the quadrants of C it
//   belongs to:
//       C11 = M1 + M4 − M5 + M7    C12 = M3 + M5    C21 = M2 + M4    C22 = M1 − M2 + M3 + M6
//   The first contribution to a quadrant stores (with the bias); the last adds the residual and
//   applies GELU, so C is still finished in registers. Rounding differs from the classical order
//   (sums of two weights and of two activations are rounded once more): the tests bound it.
//   Measured (2 cores, BERT-small's products with their epilogues, m = 2048): 7–9 % faster at
//   k = 384 (FFN up with GELU 7 %, q/k/v 7.5 %, attention output 9 %), 12 % at k = 1536. Not the full
//   8/7: the products' k is halved, so a tile's fixed costs (loop start, epilogue, now to up to two
//   quadrants) weigh twice as much, and at k = 192 Strassen loses.
#include "ckernels.h"
#include "simd_math.h"
#include <math.h>

#define NV 4    // 16-float vectors per B panel row
#define MR 6    // rows per micro-kernel call (AVX-512: MR × NV accumulators + NV B vectors + 1 broadcast ≤ 32 registers)
#define NR (16 * NV)   // columns per B panel
#define MC 96  // rows of A per block (at most 96 × 1536 floats = 576 KB, held in L2 across the panels)
#define SH 48  // Strassen: rows per half block (a block is 2 × SH rows of A and C)
// Sub-tiles per panel: AVX2's 16 registers hold a 6 × 16 tile, so the kernel covers a 64-column panel
// in four passes (`sub`) over the same k block; AVX-512 (and the portable C) take the panel at once.
#if GRAFT_AVX2
#define NSUB 4
#else
#define NSUB 1
#endif
#define SUBW (NR / NSUB)

// k per block. AVX-512 on Zen 4: 1536, a BERT-small FFN's whole k, so C is written once (B micro-panel
// 1536 × 64 floats = 384 KB, streamed from L2; 1 MB L2). AVX2: 384, so a 16-column sub-panel (24 KB)
// stays in L1 across the strips and a 96-row block of A (144 KB) in L2 (Zen 3: 32 KB L1, 512 KB L2).
// `graft tune` measures the candidates and sets the fastest (graft_f32_set_kc).
#if GRAFT_AVX512
#define KC_DEFAULT 1536
#else
#define KC_DEFAULT 384
#endif
static int KC = KC_DEFAULT;

int graft_f32_kc(void) { return KC; }
int graft_f32_default_kc(void) { return KC_DEFAULT; }
void graft_f32_set_kc(int kc) { KC = kc >= 16 ? kc : KC_DEFAULT; }
int graft_f32_isa(void) { return GRAFT_AVX512 ? 2 : GRAFT_AVX2 ? 1 : 0; }

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

// Where one tile of a product goes: `mr` rows (≤ MR; none when ≤ 0) of C at `c`, added with `sign`.
// `first`: store (bias + sign · tile) instead of adding to C; `last`: then add the residual and apply
// the activation.
typedef struct {
    float *c;
    const float *bias, *res;
    int ldc, ldr, mr, first, last;
    float sign;
} target;

#if GRAFT_AVX512
// Adds a finished tile, with g's sign, to g's rows of C. The base is C itself (`from_c`), else the bias
// (or zero); `finish` then adds the residual and applies the activation. Always inlined with constant
// flags, and fully unrolled over the tile (rows past mr skipped), so the accumulators never leave
// registers.
static inline __attribute__((always_inline)) void add_tile(__m512 acc[MR][NV], const __mmask16 *mask, target g,
                                                          int from_c, int finish, int act) {
    const __m512 sign = _mm512_set1_ps(g.sign);
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++) {
        if (m >= g.mr) break;
        float *cr = g.c + (size_t)m * g.ldc;
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            __m512 base = from_c ? _mm512_maskz_loadu_ps(mask[j], cr + 16 * j)
                        : g.bias ? _mm512_maskz_loadu_ps(mask[j], g.bias + 16 * j) : _mm512_setzero_ps();
            __m512 v = _mm512_fmadd_ps(acc[m][j], sign, base);
            if (finish) {
                if (g.res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[j], g.res + (size_t)m * g.ldr + 16 * j));
                if (act == GRAFT_ACT_GELU) v = graft_gelu16(v);
            }
            _mm512_mask_storeu_ps(cr + 16 * j, mask[j], v);
        }
    }
}

// One 6 × 64 tile over kc values of k, written to each of its `nt` targets (nr ≤ 64 columns stored).
// Row m of the tile's A is a0[m] (mode 0), a0[m] + a1[m] (mode 1) or a0[m] − a1[m] (mode 2): the
// Strassen sums of two A quadrants are formed as they are read (the compiler adds the two scalars,
// then broadcasts; two vector broadcasts and a vector add measured 7 % slower).
static inline __attribute__((always_inline)) void kernel_mode(int mode, int kc, const float *const *a0, const float *const *a1,
                                                             const float *b, int nr, const target *tg, int nt, int act) {
    // The tile's C rows (and residual) are read and written only at the end; fetch them into L2 now,
    // while the k loop runs. Between a quadrant's contributions the Strassen operands stream through
    // the caches, so without this the epilogue waits on L3 (measured: 3 % of BERT's products).
    for (int t = 0; t < nt; t++) {
        const target *g = tg + t;
        for (int m = 0; m < g->mr; m++) {
            const float *cr = g->c + (size_t)m * g->ldc, *rr = g->last && g->res ? g->res + (size_t)m * g->ldr : NULL;
            for (int j = 0; j < NV; j++) {
                _mm_prefetch((const char *)(cr + 16 * j), _MM_HINT_T1);
                if (rr) _mm_prefetch((const char *)(rr + 16 * j), _MM_HINT_T1);
            }
        }
    }
    __m512 acc[MR][NV];
    for (int m = 0; m < MR; m++) for (int j = 0; j < NV; j++) acc[m][j] = _mm512_setzero_ps();
    for (int q = 0; q < kc; q++) {
        const float *bq = b + (size_t)q * NR;
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) bv[j] = _mm512_load_ps(bq + 16 * j);
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            __m512 av = _mm512_set1_ps(a0[m][q]);
            if (mode == 1) av = _mm512_add_ps(av, _mm512_set1_ps(a1[m][q]));
            if (mode == 2) av = _mm512_sub_ps(av, _mm512_set1_ps(a1[m][q]));
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) acc[m][j] = _mm512_fmadd_ps(av, bv[j], acc[m][j]);
        }
    }
    __mmask16 mask[NV];
    for (int j = 0; j < NV; j++) {
        int left = nr - 16 * j;
        mask[j] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0;
    }
    for (int t = 0; t < nt; t++) {
        // A local copy: the stores cannot alias it, so its fields stay in registers; with constant flags
        // each case compiles without per-element tests (measured 1 %).
        const target g = tg[t];
        if (!g.last) {
            if (g.first) add_tile(acc, mask, g, 0, 0, act);
            else add_tile(acc, mask, g, 1, 0, act);
        } else {
            if (g.first) add_tile(acc, mask, g, 0, 1, act);
            else add_tile(acc, mask, g, 1, 1, act);
        }
    }
}

static void kernel(int mode, int kc, const float *const *a0, const float *const *a1, const float *b, int nr,
                   const target *tg, int nt, int act, int sub) {
    (void)sub;
    if (mode == 1) kernel_mode(1, kc, a0, a1, b, nr, tg, nt, act);
    else if (mode == 2) kernel_mode(2, kc, a0, a1, b, nr, tg, nt, act);
    else kernel_mode(0, kc, a0, a1, b, nr, tg, nt, act);
}
#elif GRAFT_AVX2
// A full 8-float vector, or the lanes set in `lanes` (the others read as 0 and are not written).
static inline __attribute__((always_inline)) __m256 load8(const float *p, int masked, __m256i lanes) {
    return masked ? _mm256_maskload_ps(p, lanes) : _mm256_loadu_ps(p);
}
static inline __attribute__((always_inline)) void store8(float *p, __m256 v, int masked, __m256i lanes) {
    if (masked) _mm256_maskstore_ps(p, lanes, v); else _mm256_storeu_ps(p, v);
}

// As the AVX-512 add_tile, for a 6 × 16 tile at column `col0` of g's panel; `masked` when fewer than
// 16 columns are left (lanes[j]: vector j's columns).
static inline __attribute__((always_inline)) void add_tile(__m256 acc[MR][2], int masked, const __m256i *lanes, target g,
                                                          int col0, int from_c, int finish, int act) {
    const __m256 sign = _mm256_set1_ps(g.sign);
#pragma GCC unroll 8
    for (int m = 0; m < MR; m++) {
        if (m >= g.mr) break;
        float *cr = g.c + (size_t)m * g.ldc + col0;
#pragma GCC unroll 2
        for (int j = 0; j < 2; j++) {
            __m256 base = from_c ? load8(cr + 8 * j, masked, lanes[j])
                        : g.bias ? load8(g.bias + col0 + 8 * j, masked, lanes[j]) : _mm256_setzero_ps();
            __m256 v = _mm256_fmadd_ps(acc[m][j], sign, base);
            if (finish) {
                if (g.res) v = _mm256_add_ps(v, load8(g.res + (size_t)m * g.ldr + col0 + 8 * j, masked, lanes[j]));
                if (act == GRAFT_ACT_GELU) v = graft_gelu8(v);
            }
            store8(cr + 8 * j, v, masked, lanes[j]);
        }
    }
}

static inline __attribute__((always_inline)) void finish_targets(__m256 acc[MR][2], int masked, const __m256i *lanes,
                                                                const target *tg, int nt, int col0, int act) {
    for (int t = 0; t < nt; t++) {
        const target g = tg[t];
        if (!g.last) {
            if (g.first) add_tile(acc, masked, lanes, g, col0, 0, 0, act);
            else add_tile(acc, masked, lanes, g, col0, 1, 0, act);
        } else {
            if (g.first) add_tile(acc, masked, lanes, g, col0, 0, 1, act);
            else add_tile(acc, masked, lanes, g, col0, 1, 1, act);
        }
    }
}

// Sub-tile `sub` (columns 16·sub …) of a 6 × 64 tile over kc values of k: 12 FMAs per k (2 loads of
// B, 6 broadcasts of A). Rows of A as in the AVX-512 kernel (modes 0, 1, 2).
static inline __attribute__((always_inline)) void kernel_mode(int mode, int kc, const float *const *a0, const float *const *a1,
                                                             const float *b, int nr, const target *tg, int nt, int act, int sub) {
    const int col0 = SUBW * sub;
    for (int t = 0; t < nt; t++) {
        const target *g = tg + t;
        for (int m = 0; m < g->mr; m++) {
            _mm_prefetch((const char *)(g->c + (size_t)m * g->ldc + col0), _MM_HINT_T1);
            if (g->last && g->res) _mm_prefetch((const char *)(g->res + (size_t)m * g->ldr + col0), _MM_HINT_T1);
        }
    }
    __m256 acc[MR][2];
    for (int m = 0; m < MR; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    const float *bq = b + col0;
    for (int q = 0; q < kc; q++, bq += NR) {
        __m256 b0 = _mm256_load_ps(bq), b1 = _mm256_load_ps(bq + 8);
#pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            __m256 av = _mm256_set1_ps(a0[m][q]);
            if (mode == 1) av = _mm256_add_ps(av, _mm256_set1_ps(a1[m][q]));
            if (mode == 2) av = _mm256_sub_ps(av, _mm256_set1_ps(a1[m][q]));
            acc[m][0] = _mm256_fmadd_ps(av, b0, acc[m][0]);
            acc[m][1] = _mm256_fmadd_ps(av, b1, acc[m][1]);
        }
    }
    int left = nr - col0;
    if (left >= SUBW) {
        // Unused when not masked, but read by the calls' arguments: all lanes, not a null pointer (UB).
        __m256i all[2] = {_mm256_set1_epi32(-1), _mm256_set1_epi32(-1)};
        finish_targets(acc, 0, all, tg, nt, col0, act);
    } else {
        __m256i lanes[2] = {graft_lanes8(left), graft_lanes8(left - 8)};
        finish_targets(acc, 1, lanes, tg, nt, col0, act);
    }
}

static void kernel(int mode, int kc, const float *const *a0, const float *const *a1, const float *b, int nr,
                   const target *tg, int nt, int act, int sub) {
    if (mode == 1) kernel_mode(1, kc, a0, a1, b, nr, tg, nt, act, sub);
    else if (mode == 2) kernel_mode(2, kc, a0, a1, b, nr, tg, nt, act, sub);
    else kernel_mode(0, kc, a0, a1, b, nr, tg, nt, act, sub);
}
#else
// GELU, exact (erf) form as HF's "gelu" (portable path: libm's erf).
static inline float gelu1(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static void kernel(int mode, int kc, const float *const *a0, const float *const *a1, const float *b, int nr,
                   const target *tg, int nt, int act, int sub) {
    (void)sub;
    float acc[MR][NR];
    for (int m = 0; m < MR; m++) {
        for (int j = 0; j < nr; j++) {
            float s = 0;
            for (int q = 0; q < kc; q++) {
                float x = mode == 1 ? a0[m][q] + a1[m][q] : mode == 2 ? a0[m][q] - a1[m][q] : a0[m][q];
                s += x * b[(size_t)q * NR + j];
            }
            acc[m][j] = s;
        }
    }
    for (int t = 0; t < nt; t++) {
        const target *g = tg + t;
        for (int m = 0; m < g->mr; m++) {
            for (int j = 0; j < nr; j++) {
                float *o = g->c + (size_t)m * g->ldc + j;
                float v = (g->first ? (g->bias ? g->bias[j] : 0) : *o) + g->sign * acc[m][j];
                if (g->last) {
                    if (g->res) v += g->res[(size_t)m * g->ldr + j];
                    if (act == GRAFT_ACT_GELU) v = gelu1(v);
                }
                *o = v;
            }
        }
    }
}
#endif

void graft_f32_gemm(int m, int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                    const float *bias, const float *res, int ldr, int act, int panel_begin, int panel_end) {
    int blocks = k > 0 ? (k + KC - 1) / KC : 1;  // k = 0 still writes act(bias + residual)
    for (int kb = 0; kb < blocks; kb++) {
        int k0 = kb * KC, kc = k - k0 < KC ? k - k0 : KC;
        for (int i0 = 0; i0 < m; i0 += MC) {
            int mc = m - i0 < MC ? m - i0 : MC;
            for (int p = panel_begin; p < panel_end; p++) {
                const float *bp = b + ((size_t)p * k + k0) * NR;
                int nr = n - p * NR < NR ? n - p * NR : NR;
                for (int sub = 0; sub < NSUB && sub * SUBW < nr; sub++)
                for (int r = 0; r < mc; r += MR) {
                    int mr = mc - r < MR ? mc - r : MR;
                    size_t row = (size_t)(i0 + r);
                    target t = {c + row * ldc + (size_t)p * NR, bias ? bias + p * NR : NULL,
                                res ? res + row * ldr + (size_t)p * NR : NULL, ldc, ldr, mr, kb == 0, kb == blocks - 1, 1.0f};
                    const float *ar[MR];
                    for (int i = 0; i < MR; i++) ar[i] = a + (row + (size_t)(i < mr ? i : 0)) * lda + k0;
                    kernel(0, kc, ar, NULL, bp, nr, &t, 1, act, sub);
                }
            }
        }
    }
}

// ---- Strassen layout ----

// A term: quadrant (row half, column half) and sign.
typedef struct { int r, c, s; } term;
// Per product Mi: the sum of A quadrants, the sum of B quadrants packed as its operand, and the C
// quadrants it is added to.
static const term A_TERMS[7][2] = {{{0,0,1},{1,1,1}}, {{1,0,1},{1,1,1}}, {{0,0,1},{0,0,0}}, {{1,1,1},{0,0,0}},
                                   {{0,0,1},{0,1,1}}, {{1,0,1},{0,0,-1}}, {{0,1,1},{1,1,-1}}};
static const term B_TERMS[7][2] = {{{0,0,1},{1,1,1}}, {{0,0,1},{0,0,0}}, {{0,1,1},{1,1,-1}}, {{1,0,1},{0,0,-1}},
                                   {{1,1,1},{0,0,0}}, {{0,0,1},{0,1,1}}, {{1,0,1},{1,1,1}}};
static const term C_TERMS[7][2] = {{{0,0,1},{1,1,1}}, {{1,0,1},{1,1,-1}}, {{0,1,1},{1,1,1}}, {{0,0,1},{1,0,1}},
                                   {{0,0,-1},{0,1,1}}, {{1,1,1},{0,0,0}}, {{0,0,1},{0,0,0}}};
// (Terms with s = 0 are absent.) Products run in order 1…7: C11, C22 are first written by M1, C21
// by M2, C12 by M3; C21 is finished by M4, C12 by M5, C22 by M6, C11 by M7.
static const int FIRST[2][2] = {{0, 2}, {1, 0}}, LAST[2][2] = {{6, 4}, {3, 5}};

int graft_f32s_supported(int k, int n) { return k >= 2 && n >= 2 && k % 2 == 0 && n % 2 == 0; }

// The seven operands, then k/2 zeros (the missing row of an odd block's bottom half reads them).
size_t graft_f32s_packed_size(int k, int n) { return 7 * graft_f32_packed_size(k / 2, n / 2) + (size_t)k / 2; }

void graft_f32s_pack_b(const float *src, int k, int n, int transposed, float *dst) {
    int kh = k / 2, nh = n / 2;
    size_t op = graft_f32_packed_size(kh, nh);
    for (int i = 0; i < 7; i++) {
        const term *t0 = &B_TERMS[i][0], *t1 = &B_TERMS[i][1];
        float s1 = (float)t1->s;
        for (int p = 0; p < graft_f32_panels(nh); p++) {
            float *panel = dst + (size_t)i * op + (size_t)p * kh * NR;
            for (int j = 0; j < NR; j++) {
                int col = p * NR + j;
                if (col >= nh) {
                    for (int r = 0; r < kh; r++) panel[(size_t)r * NR + j] = 0;
                } else if (transposed) {
                    // Source rows are B's columns: read each term's column of the quadrant contiguously.
                    const float *x0 = src + (size_t)(t0->c * nh + col) * k + (size_t)t0->r * kh;
                    const float *x1 = src + (size_t)(t1->c * nh + col) * k + (size_t)t1->r * kh;
                    for (int r = 0; r < kh; r++) panel[(size_t)r * NR + j] = t1->s ? x0[r] + s1 * x1[r] : x0[r];
                } else {
                    const float *x0 = src + (size_t)(t0->r * kh) * n + (size_t)t0->c * nh + col;
                    const float *x1 = src + (size_t)(t1->r * kh) * n + (size_t)t1->c * nh + col;
                    for (int r = 0; r < kh; r++)
                        panel[(size_t)r * NR + j] = t1->s ? x0[(size_t)r * n] + s1 * x1[(size_t)r * n] : x0[(size_t)r * n];
                }
            }
        }
    }
    float *zero = dst + 7 * op;
    for (int q = 0; q < kh; q++) zero[q] = 0;
}

static int strips(int rows) { return (rows + MR - 1) / MR; }

// Row pointers (from column k0) of rows s..<s+MR of the A quadrant `tm` of a block whose top half has
// `top` rows and bottom half `bottom` ≤ top rows. The bottom half's missing row reads `zero`; strip
// rows past the top half's end repeat the strip's first row (computed, never stored).
static void quadrant_rows(const float **p, const term *tm, const float *a, int lda, int top, int bottom, int kh,
                          int s, int k0, const float *zero) {
    int have = tm->r ? bottom : top;
    for (int i = 0; i < MR; i++) {
        int r = s + i < top ? s + i : s;
        p[i] = r < have ? a + (size_t)(tm->r * top + r) * lda + (size_t)tm->c * kh + k0 : zero + k0;
    }
}

// One strip of MR rows against a panel, in its NSUB passes. With more than one pass (AVX2) the A-side
// sums of a Strassen product (modes 1, 2) are formed once into `sums` and the passes read them as plain
// rows: formed in the k loop they cost each pass a load, an add and a broadcast from a register per row
// and k, which compete with the FMAs for the same pipes (measured: Strassen at half the classical speed).
static void run_strip(int mode, int kc, const float **a0, const float *const *a1, const float *b, int nr,
                      const target *tg, int nt, int act) {
    float sums[NSUB > 1 && mode ? MR * kc : 1];  // lives until the passes below have read it
    if (NSUB > 1 && mode) {
        for (int i = 0; i < MR; i++) {
            float *o = sums + (size_t)i * kc;
            const float *x = a0[i], *y = a1[i];
            if (mode == 1) for (int q = 0; q < kc; q++) o[q] = x[q] + y[q];
            else for (int q = 0; q < kc; q++) o[q] = x[q] - y[q];
            a0[i] = o;
        }
        mode = 0;
    }
    for (int sub = 0; sub < NSUB && sub * SUBW < nr; sub++) kernel(mode, kc, a0, a1, b, nr, tg, nt, act, sub);
}

// One Strassen block of `rows` ≤ 2·SH rows.
static void strassen_block(int rows, int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                           const float *bias, const float *res, int ldr, int act, const float *zero) {
    int kh = k / 2, nh = n / 2, top = (rows + 1) / 2, bottom = rows - top, panels = graft_f32_panels(nh);
    int kblocks = (kh + KC - 1) / KC;
    size_t op = graft_f32_packed_size(kh, nh);
    for (int i = 0; i < 7; i++) {
        const term *tm = A_TERMS[i];
        int mode = !tm[1].s ? 0 : tm[1].s > 0 ? 1 : 2;
        const float *bi = b + (size_t)i * op;
        for (int kb = 0; kb < kblocks; kb++) {
            int k0 = kb * KC, kc = kh - k0 < KC ? kh - k0 : KC;
            for (int p = 0; p < panels; p++) {
                int nr = nh - p * NR < NR ? nh - p * NR : NR;
                const float *bp = bi + ((size_t)p * kh + k0) * NR;
                for (int s = 0; s < top; s += MR) {
                    target t[2];
                    int nt = 0;
                    for (int u = 0; u < 2; u++) {
                        const term *ct = &C_TERMS[i][u];
                        if (!ct->s) continue;
                        int half = ct->r ? bottom : top, mr = half - s < MR ? half - s : MR;
                        if (mr <= 0) continue;
                        size_t row = (size_t)(ct->r * top + s), col = (size_t)(ct->c * nh + p * NR);
                        t[nt++] = (target){c + row * ldc + col, bias ? bias + col : NULL, res ? res + row * ldr + col : NULL,
                                           ldc, ldr, mr, FIRST[ct->r][ct->c] == i && kb == 0,
                                           LAST[ct->r][ct->c] == i && kb == kblocks - 1, (float)ct->s};
                    }
                    const float *a0[MR], *a1[MR];
                    quadrant_rows(a0, &tm[0], a, lda, top, bottom, kh, s, k0, zero);
                    if (mode) quadrant_rows(a1, &tm[1], a, lda, top, bottom, kh, s, k0, zero);
                    run_strip(mode, kc, a0, a1, bp, nr, t, nt, act);
                }
            }
        }
    }
}

// A block of rows multiplied classically from the Strassen operands (cheaper for very few rows):
// with A = [A1 A2], C1 = (A1 + A2)·B11 + A2·(B21 − B11) and C2 = A1·(B12 − B22) + (A1 + A2)·B22.
// Only the units [unit_begin, unit_end) of C's columns, unit = column half · panels + 64-column panel.
static void classical_block(int rows, int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                            const float *bias, const float *res, int ldr, int act, int unit_begin, int unit_end) {
    int kh = k / 2, nh = n / 2, panels = graft_f32_panels(nh);
    int kblocks = (kh + KC - 1) / KC;
    size_t op = graft_f32_packed_size(kh, nh);
    // (mode, column half of A for a0, B operand, C column half, first, last); a1 is always A2.
    static const int steps[4][6] = {{1, 0, 1, 0, 1, 0}, {0, 1, 3, 0, 0, 1}, {0, 0, 2, 1, 1, 0}, {1, 0, 4, 1, 0, 1}};
    for (int st = 0; st < 4; st++) {
        const int *sp = steps[st];
        for (int kb = 0; kb < kblocks; kb++) {
            int k0 = kb * KC, kc = kh - k0 < KC ? kh - k0 : KC;
            int p0 = unit_begin - sp[3] * panels, p1 = unit_end - sp[3] * panels;
            for (int p = p0 < 0 ? 0 : p0; p < (p1 < panels ? p1 : panels); p++) {
                int nr = nh - p * NR < NR ? nh - p * NR : NR;
                const float *bp = b + (size_t)sp[2] * op + ((size_t)p * kh + k0) * NR;
                for (int s = 0; s < rows; s += MR) {
                    int mr = rows - s < MR ? rows - s : MR;
                    size_t col = (size_t)(sp[3] * nh + p * NR);
                    target t = {c + (size_t)s * ldc + col, bias ? bias + col : NULL, res ? res + (size_t)s * ldr + col : NULL,
                                ldc, ldr, mr, sp[4] && kb == 0, sp[5] && kb == kblocks - 1, 1.0f};
                    const float *a0[MR], *a1[MR];
                    for (int i = 0; i < MR; i++) {
                        const float *row = a + (size_t)(s + (i < mr ? i : 0)) * lda + k0;
                        a0[i] = row + (size_t)sp[1] * kh;
                        a1[i] = row + kh;
                    }
                    run_strip(sp[0], kc, a0, a1, bp, nr, &t, 1, act);
                }
            }
        }
    }
}

void graft_f32s_gemm(int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                     const float *bias, const float *res, int ldr, int act, int row_begin, int row_end) {
    const float *zero = b + 7 * graft_f32_packed_size(k / 2, n / 2);
    for (int r0 = row_begin; r0 < row_end; r0 += 2 * SH) {
        int rows = row_end - r0 < 2 * SH ? row_end - r0 : 2 * SH;
        const float *ab = a + (size_t)r0 * lda;
        float *cb = c + (size_t)r0 * ldc;
        const float *rb = res ? res + (size_t)r0 * ldr : NULL;
        if (7 * strips((rows + 1) / 2) < 4 * strips(rows))
            strassen_block(rows, n, k, ab, lda, b, cb, ldc, bias, rb, ldr, act, zero);
        else
            classical_block(rows, n, k, ab, lda, b, cb, ldc, bias, rb, ldr, act, 0, 2 * graft_f32_panels(n / 2));
    }
}

// Few rows (see F32Matrix.columnSplitBelow): the weight streams once and bounds the time, so the
// classical order (four operands, the weight's size, instead of seven) split by columns, in blocks of MC rows.
void graft_f32s_gemm_columns(int m, int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                             const float *bias, const float *res, int ldr, int act, int unit_begin, int unit_end) {
    for (int r0 = 0; r0 < m; r0 += MC) {
        int rows = m - r0 < MC ? m - r0 : MC;
        classical_block(rows, n, k, a + (size_t)r0 * lda, lda, b, c + (size_t)r0 * ldc, ldc, bias,
                        res ? res + (size_t)r0 * ldr : NULL, ldr, act, unit_begin, unit_end);
    }
}
