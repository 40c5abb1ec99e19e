// Hand-written C where Swift has no equivalent: SIMD kernels (AVX-512, VNNI, BF16 with portable fallbacks),
// the fork–join pool and glibc allocator settings.
#ifndef GRAFT_CKERNELS_H
#define GRAFT_CKERNELS_H
#include <stddef.h>
#include <stdint.h>

// Instruction-set extensions (bits): of the running CPU (cpuid), and those this build was compiled for.
#define GRAFT_CPU_AVX2 1
#define GRAFT_CPU_FMA 2
#define GRAFT_CPU_F16C 4
#define GRAFT_CPU_AVX512F 8
#define GRAFT_CPU_AVX512BW 16
#define GRAFT_CPU_AVX512VL 32
#define GRAFT_CPU_AVX512DQ 64
#define GRAFT_CPU_AVX512VNNI 128
#define GRAFT_CPU_AVX512BF16 256
int graft_cpu_features(void);
int graft_build_features(void);

// 1 when the integer kernels below use VNNI instructions, 0 for the portable fallback.
int graft_has_vnni(void);

// Quantises n floats (n a multiple of 32) to int8 in blocks of 32: q = round(x / d), d = max|x| / 127.
// Per block: d[b] and the sum of its quants s[b].
void graft_quantize_q8(const float *x, int n, int8_t *q, float *d, int32_t *s);

// y[r] = Σ_c W[r, c] · x[c] for rows [row0, row1) of a ggml-block matrix (format 0 = Q8_0, 1 = Q4_0,
// 2 = Q4_1) with x given quantised by graft_quantize_q8.
void graft_matvec_q8(int format, const uint8_t *w, int cols, int row0, int row1,
                     const int8_t *xq, const float *xd, const int32_t *xs, float *y);

// bf16 products with float accumulation (AVX512-BF16 where the host has it; portable C otherwise).
// B [k × n] is packed once (`transposed`: the source is stored [n × k], e.g. a PyTorch weight for x·Wᵀ);
// then C[m × n] = A[m × k] · B + beta · C for B's 64-column panels [panel_begin, panel_end).
int graft_has_bf16(void);
size_t graft_bf16_packed_size(int k, int n);
void graft_bf16_pack_b(const float *src, int k, int n, int transposed, uint16_t *dst);
void graft_bf16_gemm(int m, int n, int k, const float *a, int lda, const uint16_t *b, float *c, int ldc, float beta,
                     int panel_begin, int panel_end);

// float32 products over a pre-packed B (see f32gemm.c). B [k × n] is packed once into column panels
// (`transposed`: the source is stored [n × k], a PyTorch weight for x·Wᵀ); the packed buffer must be
// 64-byte aligned. Then for B's panels [panel_begin, panel_end):
//   C[m × n] = act(A[m × k] · B + bias[n] + R[m × n])
// with bias and R (row stride ldr; must not alias C) optional (NULL) and act GRAFT_ACT_NONE or GRAFT_ACT_GELU.
#define GRAFT_ACT_NONE 0
#define GRAFT_ACT_GELU 1
// Which float32 kernel this build carries: 2 AVX-512, 1 AVX2 + FMA, 0 portable C.
int graft_f32_isa(void);
// k per cache block of the products (default per instruction set; graft tune measures and sets it).
int graft_f32_kc(void);
int graft_f32_default_kc(void);
void graft_f32_set_kc(int kc);
int graft_f32_panels(int n);
size_t graft_f32_packed_size(int k, int n);
void graft_f32_pack_b(const float *src, int k, int n, int transposed, float *dst);
void graft_f32_gemm(int m, int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                    const float *bias, const float *res, int ldr, int act, int panel_begin, int panel_end);
// The same product in one level of Strassen's algorithm (7/8 of the multiply-adds; k and n even, see
// graft_f32s_supported), for A's rows [row_begin, row_end). A and C must not overlap.
int graft_f32s_supported(int k, int n);
size_t graft_f32s_packed_size(int k, int n);
void graft_f32s_pack_b(const float *src, int k, int n, int transposed, float *dst);
void graft_f32s_gemm(int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                     const float *bias, const float *res, int ldr, int act, int row_begin, int row_end);
// All m rows in the classical order from the Strassen operands, for C's columns in units
// [unit_begin, unit_end) of 2 · graft_f32_panels(n / 2) (unit = column half · panels + 64-column panel):
// few rows, split over the cores by columns.
void graft_f32s_gemm_columns(int m, int n, int k, const float *a, int lda, const float *b, float *c, int ldc,
                             const float *bias, const float *res, int ldr, int act, int unit_begin, int unit_end);

// Attention for one sequence and head (see attention.c): out[len × dh] = softmax(scale · Q·Kᵀ) · V with
// Q, K, V rows of stride ld (a head's columns inside [tokens × hidden] matrices) and out rows of stride
// ldo; scratch holds graft_attention_scratch(len, dh) floats.
size_t graft_attention_scratch(int len, int dh);
// nq, nk, nv (nlen rows, same strides): the head computed next, whose rows are prefetched meanwhile
// (NULL: none).
void graft_attention_head(int len, int dh, const float *q, const float *k, const float *v, int ld, float scale,
                          float *out, int ldo, float *scratch, const float *nq, const float *nk, const float *nv, int nlen);

// glibc: keep freed blocks up to 32 MB in the heap and never trim it (see ProcessMemory in GraftTensor).
// No-op on other C libraries.
void graft_keep_freed_blocks(void);
// Bytes of the main heap (glibc's mallinfo2().arena); 0 on other C libraries.
size_t graft_heap_bytes(void);

// Fork–join pool for short jobs (see pool.c): runs fn(ctx, chunk, chunks) for chunk = 0..<chunks, each
// chunk claimed by whichever thread is free — the caller and spinning workers; returns when all are done.
// The threads: GRAFT_THREADS, else the online cores. Nested or concurrent calls run every chunk inline.
typedef void (*graft_job_fn)(void *ctx, int chunk, int chunks);
int graft_pool_threads(void);
void graft_pool_run(graft_job_fn fn, void *ctx, int chunks);

// Float-activation matrix–vector product over Q8_0 (0), Q4_0 (1) or Q4_1 (2) rows row0..<row1 (see kernels.c).
void graft_matvec_float(int format, const uint8_t *w, int cols, int row0, int row1,
                        const float *x, const float *xsum, float *y);

// Input files' memory maps and partial outputs, for the SIGBUS handler (guard.c): a mapped file truncated
// while it is read makes the process print the file's path, remove the registered partial outputs and
// exit 1. Registration returns a slot (or -1 when the table is full) for the matching unguard call.
int graft_guard_mapping(const void *base, size_t length, const char *path);
void graft_unguard_mapping(int slot);
int graft_guard_partial(const char *path);
void graft_unguard_partial(int slot);
// Ignore SIGXFSZ, so writing past RLIMIT_FSIZE fails with EFBIG (an error to report) instead of killing.
void graft_ignore_file_size_signal(void);
// Swaps two existing paths in one step (Linux renameat2 RENAME_EXCHANGE, macOS RENAME_SWAP); -1 with errno
// where the file system cannot.
int graft_exchange_paths(const char *a, const char *b);

#endif
