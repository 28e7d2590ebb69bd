/* SwiGLU experts on CPU for inference, float32 (moeplane.kernels.cpu_native).
 *
 * One call sorts the (token, k) pairs by expert (a counting sort), gathers the rows, runs
 * gate/up, SwiGLU, down, the routing weight and the sum over top-k: no Python work per
 * expert. Each expert's weights are read from memory once:
 * - few rows per expert (decode): dot products; each weight row is loaded once and
 *   multiplied with all of its expert's rows (ROWS at a time) while it sits in L1;
 * - XT_MIN_ROWS .. XT_MAX_ROWS rows (AVX2 builds: 9 - 96), where the caller keeps no packed
 *   copies of the weights: the expert's token rows are transposed into tiles and each weight
 *   element, read straight from memory, is broadcast against a tile (a GEMM microkernel with no
 *   packing of the weights);
 * - otherwise from PACKED_MIN_ROWS rows (COPIES_MIN_ROWS where the caller keeps copies): blocks
 *   of NR weight rows are transposed once into a packed buffer and multiplied as outer products
 *   (a GEMM microkernel), up to MR rows at a time; or the caller packed the weights before
 *   (moe_pack_weights) and the blocks are read as they are.
 * Vector width: LANES floats (16 with AVX-512, else 8); accumulators use explicit FMAs, so a
 * float's value does not depend on which code path or thread computed it.
 *
 * Threads: compiled with OpenMP, the work runs in torch's own OpenMP pool (the library
 * links the libgomp torch already loaded), so it takes the threads torch uses and no
 * second pool fights torch's spinning workers. Each thread works through its own contiguous
 * run of weight rows, then takes units left at the end of the others' runs (expert_rows).
 */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Tuning per CPU family, each measured with bench/kernel_variants.py on 2 cores: TUNE_ZEN = 1
 * (the build passes it on AMD CPUs before family 26) keeps what Zen 3 and Zen 4 hosts measured;
 * 5 (family 26 and later) is that and what a Zen 5 host measured (full-width AVX-512); 0 takes
 * what an Intel Xeon with AVX-512 measured (docs/benchmarks.md, 2026-11-30). The -D knobs below
 * override any of them. */
#ifndef TUNE_ZEN
#define TUNE_ZEN 0
#endif

#define ROWS 8 /* token rows per pass over a block of weights */
/* Weight rows that every pass of ROWS token rows reads before the next block: on Zen 32 rows
 * (kept in L2); on the Xeon 3 (one step of three rows, kept in L1, so that the passes follow
 * each other closely): 1.05-1.06x faster at 8 rows per expert (no rows left over for one-row
 * steps: 32 = 10 x 3 + 2), 1.12-1.13x at 16 when dot products ran there. */
#ifndef BLOCK_ROWS
#define BLOCK_ROWS (TUNE_ZEN ? 32 : 3)
#endif
/* Software prefetch into L2, this many floats (32 KiB) ahead of the weight row being
 * read: the hardware prefetchers alone left the stream waiting on DRAM while the FMAs
 * ran (at 4 rows per expert the layer took compute time plus transfer time). Measured
 * (E64 H1024 I384, 2 cores): 10-30 % faster at 8-128 tokens; nearer (2-4 KiB) or into
 * L1 was slower there, but not for passes of 1-2 rows (PREFETCH_NEAR below). */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 8192
#endif
#ifndef LANES /* floats per vector: one register (the tests also build 16 on AVX2) */
#ifdef __AVX512F__
#define LANES 16
#else
#define LANES 8
#endif
#endif
/* Passes of at most NEAR_ROWS token rows (decode: little work per weight byte) prefetch only
 * PREFETCH_NEAR floats (4 KiB) ahead. Measured on Zen 4 (bench/kernel_variants.py, 2 cores):
 * 1.02-1.05x faster at 1-16 tokens for E64 H1024 I384, 1.04-1.14x at 1-32 tokens for E128
 * (the most when the host had 58 GB/s free, not 34), equal from 64; 4 KiB for every pass was
 * 1.1-1.3x slower at 4 rows per expert. Not measured on AVX2 hosts, which keep 32 KiB. */
#ifndef PREFETCH_NEAR
#define PREFETCH_NEAR 1024
#endif
#ifndef NEAR_ROWS
#if LANES == 16
#define NEAR_ROWS 2
#else
#define NEAR_ROWS 0
#endif
#endif

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));
typedef float half __attribute__((vector_size(LANES / 2 * sizeof(float))));
typedef float quad __attribute__((vector_size(4 * sizeof(float))));

/* a * b + c rounded once, explicitly: GCC's -ffp-contract=fast left some instances of one
 * loop unfused (the copy with a prefetch), so the same output float differed by thread
 * count. */
#if defined(__AVX512F__) && LANES == 16
#include <immintrin.h>
static inline vec fmadd(vec a, vec b, vec c) {
    return (vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}
#elif defined(__FMA__) && LANES == 8
#include <immintrin.h>
static inline vec fmadd(vec a, vec b, vec c) {
    return (vec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
}
#else
static inline vec fmadd(vec a, vec b, vec c) { return a * b + c; }
#endif

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Sum of the lanes by halving. Shuffles, not memcpy of halves: taking the address of an
 * accumulator made GCC keep every accumulator in memory (1.5-2.5x slower loops). */
static inline float hsum(vec v) {
#if defined(__clang__) || __GNUC__ >= 12
#if LANES == 16
    const half h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const quad a = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
#else
    const quad a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#endif
    return (a[0] + a[2]) + (a[1] + a[3]);
#else
    float s = 0;
    for (int l = 0; l < LANES; l++) s += v[l];
    return s;
#endif
}

/* y[m * ldy + i] = dot(w[i, :k], x[m, :k]) for i < JB weight rows and m < NB token rows:
 * w is (JB, k) row-major, x (NB, k) with row stride ldx. Called with constants for NB, JB
 * and U, so the accumulators (U x JB x NB vectors) live in registers. Each x load serves JB
 * weight rows and each weight load NB token rows; k is unrolled U times so that
 * U * JB * NB >= 12 FMA chains are in flight. */
static inline __attribute__((always_inline)) void dot_block(const int NB, const int JB,
                                                            const int U, const float *w,
                                                            int64_t k, const float *x,
                                                            int64_t ldx, float *y, int64_t ldy) {
    const int64_t ku = k - k % (U * LANES), kv = k - k % LANES;
    const int64_t ahead = NB <= NEAR_ROWS ? PREFETCH_NEAR : PREFETCH_AHEAD;
    vec acc[4][3][ROWS];
    for (int u = 0; u < U; u++)
        for (int i = 0; i < JB; i++)
            for (int m = 0; m < NB; m++) acc[u][i][m] = (vec){0};
    for (int64_t c = 0; c < ku; c += U * LANES)
        for (int u = 0; u < U; u++) {
            vec wv[3];
            for (int i = 0; i < JB; i++) {
                wv[i] = load(w + i * k + c + u * LANES);
                if (ahead > 0) __builtin_prefetch(w + i * k + c + u * LANES + ahead, 0, 2);
            }
            for (int m = 0; m < NB; m++) {
                vec xv = load(x + m * ldx + c + u * LANES);
#if defined(__x86_64__) && defined(__AVX__) && (LANES == 8 || defined(__AVX512F__))
                if (JB > 1) __asm__("" : "+v"(xv)); /* one load for JB FMAs, not one each */
#endif
                for (int i = 0; i < JB; i++) acc[u][i][m] = fmadd(wv[i], xv, acc[u][i][m]);
            }
        }
    for (int64_t c = ku; c < kv; c += LANES)
        for (int m = 0; m < NB; m++) {
            const vec xv = load(x + m * ldx + c);
            for (int i = 0; i < JB; i++) acc[0][i][m] = fmadd(load(w + i * k + c), xv, acc[0][i][m]);
        }
    for (int i = 0; i < JB; i++)
        for (int m = 0; m < NB; m++) {
            for (int u = 1; u < U; u++) acc[0][i][m] += acc[u][i][m];
            float s = hsum(acc[0][i][m]);
            for (int64_t c = kv; c < k; c++) s = __builtin_fmaf(w[i * k + c], x[m * ldx + c], s);
            y[m * ldy + i] = s;
        }
}

/* y[m * ldy + j] = dot(w[j, :k], x[m, :k]) for j < n, m < NB, JB weight rows at a time.
 * Measured on a Zen 4 core with the weights in L2 (GFLOP/s; its peak is ~105): at 8 rows
 * two weight rows per step ran 80-87 against 60 for one; 1-4 rows gain nothing from it.
 * Three at 7-8 rows (24 accumulators): 1.12x faster again with the weights in L3, and the
 * layer 1.03-1.055x at 56-128 tokens (E64, E128; cold); at 5-6 rows three or four were
 * 1.02-1.04x slower than two. */
#define DEFINE_DOTS(NB, JB, U)                                                           \
    static void dots_##NB(const float *w, int64_t n, int64_t k, const float *x,          \
                          int64_t ldx, float *y, int64_t ldy) {                          \
        int64_t j = 0;                                                                   \
        for (; j + JB <= n; j += JB) dot_block(NB, JB, U, w + j * k, k, x, ldx, y + j, ldy); \
        for (; j < n; j++) dot_block(NB, 1, U, w + j * k, k, x, ldx, y + j, ldy);         \
    }

/* (NB, JB, U) per row count: U * JB * NB accumulators plus JB weight vectors and one x
 * vector must fit the register file (32 vectors with AVX-512, 16 with AVX2). */
DEFINE_DOTS(1, 1, 4)
DEFINE_DOTS(2, 1, 4)
DEFINE_DOTS(3, 1, 4)
DEFINE_DOTS(5, 2, 1)
DEFINE_DOTS(6, 2, 1)
#if LANES == 16
DEFINE_DOTS(4, 1, 4)
DEFINE_DOTS(7, 3, 1)
DEFINE_DOTS(8, 3, 1)
#else
DEFINE_DOTS(4, 1, 3)
DEFINE_DOTS(7, 1, 1)
DEFINE_DOTS(8, 1, 1)
#endif

static void dots(int nb, const float *w, int64_t n, int64_t k, const float *x, int64_t ldx,
                 float *y, int64_t ldy) {
    switch (nb) {
    case 1: dots_1(w, n, k, x, ldx, y, ldy); break;
    case 2: dots_2(w, n, k, x, ldx, y, ldy); break;
    case 3: dots_3(w, n, k, x, ldx, y, ldy); break;
    case 4: dots_4(w, n, k, x, ldx, y, ldy); break;
    case 5: dots_5(w, n, k, x, ldx, y, ldy); break;
    case 6: dots_6(w, n, k, x, ldx, y, ldy); break;
    case 7: dots_7(w, n, k, x, ldx, y, ldy); break;
    default: dots_8(w, n, k, x, ldx, y, ldy); break;
    }
}

/* exp(x) without a libm call, so that the SwiGLU loop vectorizes: 2^n * p(r) with
 * r = x - n ln 2 in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial (relative
 * error < 2e-7, under float32's rounding of the result). */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x; /* not fminf/fmaxf: they block vectorizing */
    const float n = rintf(x * 1.44269504f);
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f; /* ln 2 in two parts */
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* act[j] = silu(gate[j]) * up[j] for j < n. */
static void swiglu(const float *restrict gate, const float *restrict up, float *restrict act,
                   int64_t n) {
    for (int64_t j = 0; j < n; j++) act[j] = gate[j] / (1.0f + exp_approx(-gate[j])) * up[j];
}

/* Many token rows per expert: outer products on packed weights, no lane sums. NR weight rows
 * are transposed into wp (k, NR) once per block; then each pass of MR token rows keeps MR x 2
 * accumulator vectors (MR rows x NR outputs) in registers, and per k does 2 vector loads of wp,
 * MR broadcasts of x and 2 MR FMAs. Measured on a Zen 4 core, weights in L2, packing included:
 * 78 / 91 / 99 / 103 GFLOP/s at 16 / 32 / 64 / 128 rows (dot products: 80-87). */
#define NR (2 * LANES) /* weight rows per packed block */
/* token rows per pass over a packed block (at most; up to 12): MR x 2 accumulators, 2 weight
 * vectors and a broadcast fit the register file. On Zen 5, with balanced passes, 10 ran as fast
 * as 8 and 12 1.00-1.02x slower (E128, 64-512 tokens); without them 12 was 1.04x faster at 128
 * tokens and 1.09x slower at 256. */
#ifndef MR
#if LANES == 16
#define MR 8
#else
#define MR 6
#endif
#endif
/* Packing costs a transpose per block; with the next block prefetched during the passes the
 * packed path beat dot products from 16 rows per expert on Zen 4 (1.1x) and tied at 8. On the
 * Xeon, with the weights packed before the call (moe_pack_weights, what steady use runs), it beat
 * them from 9 rows (1.03-1.06x at 12-16 rows, 1.17x at 24, against dot products up to 24 rows);
 * packing in the call, dot products were 1.04-1.07x faster at 12-24 rows. This is the switch
 * point where the caller does not keep packed copies (moe_small_experts' `copies` 0). */
#ifndef PACKED_MIN_ROWS
#define PACKED_MIN_ROWS (TUNE_ZEN ? 12 : 9)
#endif
/* ... and where it does (`copies` 1: the panels come packed, except in the first call), from
 * this many rows and with no token tiles: on the Xeon 1.03-1.17x faster than dot products at
 * 12-24 rows; on Zen 3 1.00-1.11x faster than its token tiles at 8-48 rows per expert (E64,
 * E128), packed from 9 rows 1.07x faster than from 12 at 8-12, from 7 or 8 no faster. On Zen 5
 * from 3 rows: 1.10-1.14x faster than from 9 at 4-12 rows per expert (E64 at 32-64 tokens, E128
 * at 64-128), the same at 1-2 and from 16; from 1 row 1.03-1.05x slower at decode. One switch
 * point whether or not the panels came packed, so that packing before the call changes no
 * float. */
#ifndef COPIES_MIN_ROWS
#define COPIES_MIN_ROWS (TUNE_ZEN >= 5 ? 3 : 9)
#endif
/* How the passes over a packed block fetch the next one: spread over all of them (each its
 * share of the lines), so that the stream from memory runs through the whole block's compute;
 * Zen 3 and 4 builds keep the first two passes fetching one line per step. Xeon: 1.10x faster
 * at 256-512 tokens, 1.03-1.06x at 2048 (E64, E128); Zen 5: 1.02-1.06x at 256-1024, 1.01x at
 * 2048. */
#ifndef SPREAD_PASSES
#define SPREAD_PASSES (TUNE_ZEN == 0 || TUNE_ZEN >= 5)
#endif
/* Passes over a packed block of equal size (rows / passes, give or take one) instead of MR
 * rows each and the rest: a pass of 1-3 rows keeps only 2-6 FMA chains, fewer than the 8 that
 * two FMA pipes of 4 cycles' latency need, so 9 rows as 8 + 1 took longer than as 5 + 4. Which
 * pass computes a row changes no float. AVX-512 builds on Zen 5 (E128): 1.06-1.07x faster at
 * 128-192 tokens, 1.10-1.12x at 256, 1.06x at 512, the same at 1024-2048; E64 1.01-1.05x at
 * 64-256, 1.00 at 512, 1.01-1.02x slower at 1024. The AVX2 build on that host: the same
 * (0.99-1.02). Zen 4 and the Xeon have not measured it. */
#ifndef BALANCED_PASSES
#define BALANCED_PASSES (LANES == 16)
#endif
/* A block's only pass (at most MR rows) fetches all of the next block, up to 2 lines per step,
 * instead of half of it (the hardware prefetchers bringing the rest). AVX-512 on Zen 5, calls in
 * a new order each round, two runs: E64 1.02-1.04x faster at 32-64 tokens (4-8 rows per expert)
 * in the first, 1.015 in the second; E128 1.03x at 64 tokens, 1.01-1.02x at 96-128 and 1.01 at
 * 24, then 1.01 at 64-128. No effect with 2 or more passes, nor on AVX2 builds (whose blocks
 * are k lines). */
#ifndef ONE_PASS_FETCHES_ALL
#define ONE_PASS_FETCHES_ALL (TUNE_ZEN >= 5)
#endif

/* LANES x LANES transpose of r[] by swapping off-diagonal blocks of LANES / 2, ..., 1. */
#define SWAP_BLOCKS(D, LO, HI)                                                          \
    for (int i = 0; i < LANES; i++)                                                     \
        if (!(i & D)) {                                                                 \
            const vec a = r[i], b = r[i + D];                                           \
            r[i] = __builtin_shufflevector(a, b, LO);                                   \
            r[i + D] = __builtin_shufflevector(a, b, HI);                               \
        }
#if LANES == 16
#define TRANSPOSE                                                                       \
    SWAP_BLOCKS(8, LO8, HI8) SWAP_BLOCKS(4, LO4, HI4) SWAP_BLOCKS(2, LO2, HI2)          \
    SWAP_BLOCKS(1, LO1, HI1)
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#else
#define TRANSPOSE SWAP_BLOCKS(4, LO4, HI4) SWAP_BLOCKS(2, LO2, HI2) SWAP_BLOCKS(1, LO1, HI1)
#define LO4 0, 1, 2, 3, 8, 9, 10, 11
#define HI4 4, 5, 6, 7, 12, 13, 14, 15
#define LO2 0, 1, 8, 9, 4, 5, 12, 13
#define HI2 2, 3, 10, 11, 6, 7, 14, 15
#define LO1 0, 8, 2, 10, 4, 12, 6, 14
#define HI1 1, 9, 3, 11, 5, 13, 7, 15
#endif

static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* out[c * width + i] = w[i * ld + c] for i < n (<= width) and c < k; rows n .. width - 1 are
 * zero. width is LANES or 2 * LANES. */
static void pack(const float *w, int64_t ld, int64_t n, int64_t k, float *out, int width) {
    int64_t done = 0;
#if defined(__clang__) || __GNUC__ >= 12
    done = k - k % LANES;
    for (int h = 0; h < width / LANES; h++)
        for (int64_t c = 0; c < done; c += LANES) {
            vec r[LANES];
            for (int i = 0; i < LANES; i++)
                r[i] = h * LANES + i < n ? load(w + (h * LANES + i) * ld + c) : (vec){0};
            TRANSPOSE
            for (int i = 0; i < LANES; i++) store(out + (c + i) * width + h * LANES, r[i]);
        }
#endif
    for (int64_t c = done; c < k; c++)
        for (int64_t i = 0; i < width; i++) out[c * width + i] = i < n ? w[i * ld + c] : 0.0f;
}

/* y[m * ldy + i] = sum_c x[m * ldx + c] * wp[c * NR + off + i] for m < M, i < n
 * (off + n <= NR). */
static inline __attribute__((always_inline)) void outer_block(const int M, const float *wp,
                                                              int64_t k, const float *x,
                                                              int64_t ldx, float *y,
                                                              int64_t ldy, int64_t off,
                                                              int64_t n, const float *ahead,
                                                              uint64_t lines_per_step) {
    vec acc[MR][2];
    for (int m = 0; m < M; m++) acc[m][0] = acc[m][1] = (vec){0};
    for (int64_t c = 0; c < k; c++) {
        if (ahead) { /* lines_per_step: 32.32 fixed point, up to 1 line of 64 bytes per step */
            const int64_t line = (int64_t)((uint64_t)c * lines_per_step >> 32);
            __builtin_prefetch(ahead + line * 16, 0, 2);
            if (ONE_PASS_FETCHES_ALL && lines_per_step > (uint64_t)1 << 32) /* up to 2 */
                __builtin_prefetch(ahead + (line + 1) * 16, 0, 2);
        }
        const vec w0 = load(wp + c * NR), w1 = load(wp + c * NR + LANES);
        for (int m = 0; m < M; m++) {
            const vec xb = x[m * ldx + c] - (vec){0}; /* broadcast: x - 0 folds to x, x + 0 does not */
            acc[m][0] = fmadd(xb, w0, acc[m][0]);
            acc[m][1] = fmadd(xb, w1, acc[m][1]);
        }
    }
    for (int m = 0; m < M; m++) {
        if (n == NR) {
            store(y + m * ldy, acc[m][0]);
            store(y + m * ldy + LANES, acc[m][1]);
        } else {
            float t[NR];
            store(t, acc[m][0]);
            store(t + LANES, acc[m][1]);
            memcpy(y + m * ldy, t + off, n * sizeof(float));
        }
    }
}

static void outer(int m, const float *wp, int64_t k, const float *x, int64_t ldx, float *y,
                  int64_t ldy, int64_t off, int64_t n, const float *ahead,
                  uint64_t lines_per_step) {
    switch (m) {
    case 1: outer_block(1, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    case 2: outer_block(2, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    case 3: outer_block(3, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    case 4: outer_block(4, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    case 5: outer_block(5, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
#if MR > 6
    case 6: outer_block(6, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    case 7: outer_block(7, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
#endif
#if MR > 8
    case 8: outer_block(8, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    case 9: outer_block(9, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
#endif
#if MR > 10
    case 10: outer_block(10, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    case 11: outer_block(11, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
#endif
    default: outer_block(MR, wp, k, x, ldx, y, ldy, off, n, ahead, lines_per_step); break;
    }
}

/* Token rows packed instead of weights (XT_MIN_ROWS .. XT_MAX_ROWS rows per expert): tiles of
 * one or two vectors of tokens, xt[c * NV * LANES + r], packed once per expert (small), times
 * weight rows read straight from memory: each pass of WR weight rows broadcasts w[i, c] against
 * the tile (WR x NV accumulators). No transpose of the weights, which come from DRAM once.
 * Measured on AVX2 (Zen 3) only, so AVX-512 keeps the packed-weights path unless built with
 * -DXT_MIN_ROWS=9 -DXT_MAX_ROWS=96 (the tests check that build too). */
#ifndef XT_MIN_ROWS
#if LANES == 8
#define XT_MIN_ROWS 9 /* at 8 rows and fewer dot products were faster */
#else
#define XT_MIN_ROWS 1 /* with XT_MAX_ROWS 0: off */
#endif
#endif
#ifndef XT_MAX_ROWS
#if LANES == 8
#define XT_MAX_ROWS 96 /* at 128 rows and more the packed weights were as fast or faster */
#else
#define XT_MAX_ROWS 0
#endif
#endif
/* Whether callers should keep packed copies of the weights by default (moe_pack_weights; as
 * much memory again for them), and run the packed path from COPIES_MIN_ROWS rows instead of the
 * token tiles. Against no copies: on the Xeon 1.11-1.30x faster at 64-512 tokens; on Zen 3
 * 1.02-1.14x at 64-512 (E64, E128). */
#ifndef PREPACK_PAYS
#define PREPACK_PAYS 1
#endif
/* weight rows per pass: WR lines at the same offset of rows 4 KiB apart share an L1 set, so no
 * more than the 8 ways; AVX2 has registers for 6 x 2 accumulators */
#ifndef WR
#if LANES == 16
#define WR 8
#else
#define WR 6
#endif
#endif

/* y[t * ldy + i] = sum_{c < k} w[i * k + c] * xt[c * NV * LANES + t] for i < W weight rows and
 * t < nt tokens. ahead: the next pass's weight rows, prefetched into L2 one line per row every
 * 16 steps. */
static inline __attribute__((always_inline)) void wx_block(const int NV, const int W,
                                                           const float *w, int64_t k,
                                                           const float *xt, float *y,
                                                           int64_t ldy, int64_t nt,
                                                           const float *ahead) {
    vec acc[WR][2];
    for (int i = 0; i < W; i++)
        for (int v = 0; v < NV; v++) acc[i][v] = (vec){0};
    for (int64_t c = 0; c < k; c++) {
        if (ahead && !(c & 15))
            for (int i = 0; i < W; i++) __builtin_prefetch(ahead + i * k + c, 0, 2);
        vec xv[2];
        for (int v = 0; v < NV; v++) xv[v] = load(xt + c * NV * LANES + v * LANES);
        for (int i = 0; i < W; i++) {
            const vec wb = w[i * k + c] - (vec){0}; /* broadcast */
            for (int v = 0; v < NV; v++) acc[i][v] = fmadd(wb, xv[v], acc[i][v]);
        }
    }
    for (int v = 0; v < NV; v++)
        for (int i = 0; i < W; i++) {
            float t[LANES];
            store(t, acc[i][v]);
            for (int64_t l = 0; l < min64(LANES, nt - v * LANES); l++)
                y[(v * LANES + l) * ldy + i] = t[l];
        }
}

/* wx_block with W = wr (<= WR) as a constant, over a tile of NV vectors (nv) */
#define WX_CASE(W) \
    case W: wx_block(nv, W, w, k, xt, y, ldy, nt, ahead); break;
#define DEFINE_WX(NV)                                                                            \
    static void wx_##NV(int wr, const float *w, int64_t k, const float *xt, float *y,         \
                        int64_t ldy, int64_t nt, const float *ahead) {                        \
        const int nv = NV;                                                                     \
        switch (wr) {                                                                          \
            WX_CASE(1) WX_CASE(2) WX_CASE(3) WX_CASE(4) WX_CASE(5) WX_CASES_6_7                \
        default: wx_block(nv, WR, w, k, xt, y, ldy, nt, ahead); break;                        \
        }                                                                                      \
    }
#if WR > 6
#define WX_CASES_6_7 WX_CASE(6) WX_CASE(7)
#else
#define WX_CASES_6_7
#endif
#if WR < 6 || WR > 8
#error "WR must be 6, 7 or 8"
#endif
DEFINE_WX(1)
DEFINE_WX(2)

/* Weight rows j0 .. j1 - 1 of one expert (we, rows of k) times its `rows` token rows x (row
 * stride ldx): y[r * ldy + j]. The token rows are packed into tiles of 2 LANES rows, the last
 * one LANES wide if it has no more rows, in xt (scratch, XT_MAX_ROWS + 2 LANES rows of k). */
static void expert_wx(const float *we, int64_t j0, int64_t j1, int64_t k, const float *x,
                      int64_t ldx, int64_t rows, float *y, int64_t ldy, float *xt) {
    int64_t tile_rows[XT_MAX_ROWS / LANES + 2], n_tiles = 0;
    for (int64_t r = 0; r < rows; r += tile_rows[n_tiles++]) {
        tile_rows[n_tiles] = rows - r <= LANES ? rows - r : min64(rows - r, 2 * LANES);
        pack(x + r * ldx, ldx, tile_rows[n_tiles], k, xt + r * k,
             tile_rows[n_tiles] <= LANES ? LANES : 2 * LANES);
    }
    for (int64_t j = j0; j < j1; j += WR) {
        const int64_t wr = min64(WR, j1 - j);
        for (int64_t t = 0, r = 0; t < n_tiles; r += tile_rows[t++]) {
            const float *ahead = t == 0 && j + wr < j1 ? we + (j + wr) * k : NULL;
            (tile_rows[t] <= LANES ? wx_1 : wx_2)((int)wr, we + j * k, k, xt + r * k,
                                                  y + r * ldy + j, ldy, tile_rows[t], ahead);
        }
    }
}

/* Rows of k floats of per-thread packing scratch: packed weights or packed token tiles. */
#define PACK_ROWS (XT_MAX_ROWS + 2 * LANES > NR ? XT_MAX_ROWS + 2 * LANES : NR)

/* Row strides of the gathered rows and the SwiGLU output: padded so that the MR rows a pass
 * reads do not all fall in one L1 set (rows of 4 KiB would). */
#define PAD 16

/* Scratch one call needs, for `rows` (token, k) pairs on `threads` threads: floats ... */
int64_t moe_small_scratch_floats(int64_t rows, int64_t hidden, int64_t inter, int64_t threads) {
    const int64_t k = hidden > inter ? hidden : inter;
    return rows * (2 * hidden + 3 * inter + 2 * PAD + 1) + threads * PACK_ROWS * k;
}

/* ... and int64s. */
int64_t moe_small_scratch_ints(int64_t rows, int64_t n_experts) {
    return rows + 3 * (n_experts + 1);
}

/* Relative cost of one weight row of an expert with `rows` token rows: its transfer
 * (ROW_TRANSFER) plus one unit per token row it is multiplied with. */
#define ROW_TRANSFER 4

/* The first weight row (flat index a * per_expert + j over the active experts) at or after
 * `cost` in a walk over all of them. */
static int64_t row_at_cost(int64_t cost, const int64_t *counts, int64_t n_active,
                           int64_t per_expert) {
    for (int64_t a = 0; a < n_active; a++) {
        const int64_t row_cost = ROW_TRANSFER + counts[a];
        if (cost < row_cost * per_expert)
            return a * per_expert + (cost + row_cost - 1) / row_cost;
        cost -= row_cost * per_expert;
    }
    return n_active * per_expert;
}

/* Token rows per expert from which the packed path runs, with or without packed copies kept
 * (for callers deciding to pack). */
int64_t moe_packed_min_rows(int copies) { return copies ? COPIES_MIN_ROWS : PACKED_MIN_ROWS; }

/* 1 where keeping packed copies of the weights pays (PREPACK_PAYS), else 0. */
int64_t moe_prepack_pays(void) { return PREPACK_PAYS; }

/* Floats of n_experts experts' (rows, k) weights packed by moe_pack_weights. */
int64_t moe_packed_floats(int64_t n_experts, int64_t rows, int64_t k) {
    return n_experts * ((rows + NR - 1) / NR) * NR * k;
}

/* Weight rows lo .. hi - 1 (flat index a * per_expert + j over the active experts) times their
 * experts' token rows: y[r, j] = dot(w_e[j, :k], x[r, :k]). */
static void rows_between(int64_t lo, int64_t hi, const float *w, const float *packed,
                         int64_t per_expert, int64_t k, const float *x, int64_t ldx, float *y,
                         int64_t ldy, const int64_t *active, const int64_t *start,
                         const int64_t *counts, int64_t n_active, float *wp, int copies) {
    const int64_t packed_from = copies ? COPIES_MIN_ROWS : PACKED_MIN_ROWS;
    for (int64_t a = lo / per_expert; a < n_active && a * per_expert < hi; a++) {
        const int64_t j0 = max64(lo - a * per_expert, 0), j1 = min64(hi - a * per_expert, per_expert);
        const float *we = w + active[a] * per_expert * k;
        const int64_t first = start[active[a]], rows = counts[a];
        if (!copies && rows >= XT_MIN_ROWS && rows <= XT_MAX_ROWS) {
            expert_wx(we, j0, j1, k, x + first * ldx, ldx, rows, y + first * ldy, ldy, wp);
            continue;
        }
        if (rows >= packed_from) {
            for (int64_t b = j0, n; b < j1; b += n) {
                /* a block of NR rows: packed now, or the panel of the weights packed before
                 * (moe_pack_weights) that holds row b, of which rows off .. off + n - 1 */
                const int64_t off = packed ? b % NR : 0;
                n = min64(NR - off, j1 - b);
                const float *block, *next;
                if (packed) {
                    block = packed + active[a] * moe_packed_floats(1, per_expert, k);
                    block += (b - off) * k;
                    next = block + NR * k; /* the next panel, or the next expert's first */
                } else {
                    pack(we + b * k, k, n, k, wp, NR);
                    block = wp;
                    next = we + (b + NR) * k;
                }
                /* while the passes compute, they fetch the next block into L2, so that packing
                 * it (or reading its panel) does not wait on memory: pass p of P its lines
                 * L p / P .. L (p + 1) / P */
                const int64_t lines = NR * k / 16, passes = (rows + MR - 1) / MR;
                const int64_t fetch_max = ONE_PASS_FETCHES_ALL && passes == 1 ? 2 * k : k;
                for (int64_t r0 = 0, r1, p = 0; r0 < rows; r0 = r1, p++) {
                    r1 = BALANCED_PASSES ? rows * (p + 1) / passes : min64(r0 + MR, rows);
                    const int64_t from = SPREAD_PASSES ? lines * p / passes : p * k;
                    const int64_t to =
                        SPREAD_PASSES ? lines * (p + 1) / passes : min64((p + 1) * k, lines);
                    outer((int)(r1 - r0), block, k, x + (first + r0) * ldx, ldx,
                          y + (first + r0) * ldy + b, ldy, off, n,
                          from < to ? next + from * 16 : NULL,
                          (uint64_t)min64(to - from, fetch_max) * ((uint64_t)1 << 32) /
                              (uint64_t)k);
                }
            }
            continue;
        }
        /* blocks of weight rows stay in L2 while every pass of ROWS token rows reads them */
        for (int64_t b = j0; b < j1; b += BLOCK_ROWS)
            for (int64_t r0 = 0; r0 < rows; r0 += ROWS)
                dots((int)min64(ROWS, rows - r0), we + b * k, min64(BLOCK_ROWS, j1 - b), k,
                     x + (first + r0) * ldx, ldx, y + (first + r0) * ldy + b, ldy);
    }
}

/* Work units of one phase: thread t starts on queue t, units front .. back - 1 of its own
 * contiguous run, taken from the front; a thread with none left takes the back unit of the
 * queue with the most left. One 64-bit word (front << 32 | back) per queue, on its own line. */
#ifndef UNITS_PER_THREAD
#define UNITS_PER_THREAD 16
#endif
typedef struct {
    _Alignas(64) _Atomic uint64_t front_back;
} queue;

static int take(queue *q, int from_front, int64_t *unit) {
    uint64_t v = atomic_load_explicit(&q->front_back, memory_order_relaxed);
    for (;;) {
        const uint64_t f = v >> 32, b = v & 0xffffffffu;
        if (f >= b) return 0;
        const uint64_t n = from_front ? (f + 1) << 32 | b : f << 32 | (b - 1);
        if (atomic_compare_exchange_weak_explicit(&q->front_back, &v, n, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *unit = (int64_t)(from_front ? f : b - 1);
            return 1;
        }
    }
}

static void fill_queues(queue *queues, int threads) {
    for (int t = 0; t < threads; t++)
        atomic_init(&queues[t].front_back, (uint64_t)t * UNITS_PER_THREAD << 32 |
                                               (uint64_t)(t + 1) * UNITS_PER_THREAD);
}

/* y rows of every active expert: y[r, j] = dot(w_e[j, :k], x[r, :k]) for j < per_expert.
 * The weight rows are cut into units of about equal cost (threads * UNITS_PER_THREAD), each
 * a contiguous run; thread t works through its own run in order, so it streams contiguous
 * memory (the prefetchers and PREFETCH_AHEAD run on into its next rows), then takes units
 * left at the end of others' runs: on a shared host one core can run 1.2-1.5x slower than the
 * other for a while. Which thread computes a unit does not change any float. */
static void expert_rows(const float *w, const float *packed, int64_t per_expert, int64_t k,
                        const float *x, int64_t ldx, float *y, int64_t ldy, const int64_t *active,
                        const int64_t *start, const int64_t *counts, int64_t n_active,
                        queue *queues, int threads, int t, float *wp, int copies) {
    int64_t total = 0;
    for (int64_t a = 0; a < n_active; a++) total += (ROW_TRANSFER + counts[a]) * per_expert;
    const int64_t units = (int64_t)threads * UNITS_PER_THREAD;
    for (;;) {
        int64_t u;
        if (!take(&queues[t], 1, &u)) {
            int victim = -1;
            uint64_t most = 0;
            for (int o = 0; o < threads; o++) {
                const uint64_t v = atomic_load_explicit(&queues[o].front_back,
                                                        memory_order_relaxed);
                const uint64_t f = v >> 32, b = v & 0xffffffffu;
                if (b > f && b - f > most) most = b - f, victim = o;
            }
            if (victim < 0) return;
            if (!take(&queues[victim], 0, &u)) continue;
        }
        rows_between(row_at_cost(total * u / units, counts, n_active, per_expert),
                     row_at_cost(total * (u + 1) / units, counts, n_active, per_expert), w,
                     packed, per_expert, k, x, ldx, y, ldy, active, start, counts, n_active, wp,
                     copies);
    }
}

/* Weights packed once for the packed path, so that a call does not transpose them again (the
 * same floats as packing in the call): w (n_experts, rows, k) as panels of NR rows (the last
 * one zero-padded), out[e * moe_packed_floats(1, rows, k) + p * NR * k + c * NR + i] =
 * w[e, p * NR + i, c]. The caller keeps the copy while the weights do not change (cpu_native).
 * On the Xeon (E64): 1.12x faster at 128 tokens, 1.18-1.24x at 192-512, 1.08x at 2048. */
void moe_pack_weights(const float *w, int64_t n_experts, int64_t rows, int64_t k, float *out) {
    const int64_t panels = (rows + NR - 1) / NR;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n_experts * panels; i++) {
        const int64_t e = i / panels, p = i % panels;
        pack(w + (e * rows + p * NR) * k, k, min64(NR, rows - p * NR), k,
             out + e * moe_packed_floats(1, rows, k) + p * NR * k, NR);
    }
}

/* out[t] = sum over k of weights[t, k] * expert_{ids[t, k]}(hidden[t]), over the experts
 * first .. first + n_experts - 1 only (pairs routed elsewhere add zero).
 *
 * hidden (T, H); gate_up (n_experts, 2I, H) and down (n_experts, H, I), contiguous, for
 * those experts; gate_up_packed and down_packed: the same packed by moe_pack_weights, or NULL
 * (packed block by block in the call); expert_ids (T, K) global ids; weights (T, K); out (T, H),
 * fully written.
 * Scratch: moe_small_scratch_floats(T * K, H, I, threads) floats, moe_small_scratch_ints(T * K,
 * n_experts) int64s. Runs on `threads` threads of the calling thread's OpenMP pool. copies: 1
 * where the caller keeps packed copies of these weights (or will, from its next call), which
 * picks the paths' switch points (moe_packed_min_rows), 0 where it does not; the packed pointers
 * may be NULL either way. Returns the most rows any of the experts had (what a caller deciding
 * to pack the weights needs).
 */
int64_t moe_small_experts(const float *hidden, const float *gate_up, const float *down,
                       const float *gate_up_packed, const float *down_packed,
                       const int64_t *expert_ids, const float *weights, int64_t T, int64_t K,
                       int64_t first, int64_t n_experts, int64_t H, int64_t I, float *out,
                       float *fscratch, int64_t *iscratch, int threads, int copies) {
    /* Counting sort of the pairs by expert (stable: tokens stay in order). */
    int64_t *token_of = iscratch;            /* (R,) token of each sorted row */
    int64_t *start = token_of + T * K;       /* (n_experts + 1,) first row per expert */
    int64_t *active = start + n_experts + 1; /* experts with rows */
    int64_t *counts = active + n_experts + 1; /* rows of each active expert; first a fill
                                                 pointer per expert */
    float *row_w = fscratch;                 /* (R,) routing weight of each row */
    memset(start, 0, (n_experts + 1) * sizeof *start);
    for (int64_t p = 0; p < T * K; p++) {
        const int64_t e = expert_ids[p] - first;
        if (e >= 0 && e < n_experts) start[e + 1]++;
    }
    for (int64_t e = 0; e < n_experts; e++) {
        start[e + 1] += start[e];
        counts[e] = start[e];
    }
    for (int64_t p = 0; p < T * K; p++) {
        const int64_t e = expert_ids[p] - first;
        if (e >= 0 && e < n_experts) {
            token_of[counts[e]] = p / K;
            row_w[counts[e]++] = weights[p];
        }
    }
    int64_t n_active = 0;
    for (int64_t e = 0; e < n_experts; e++)
        if (start[e + 1] > start[e]) {
            active[n_active] = e;
            counts[n_active++] = start[e + 1] - start[e];
        }
    const int64_t R = start[n_experts];
    int64_t most = 0;
    for (int64_t a = 0; a < n_active; a++) most = max64(most, counts[a]);
    const int64_t ldh = H + PAD, ldi = I + PAD;
    float *xs = row_w + T * K;     /* (R, ldh) gathered rows */
    float *gu = xs + R * ldh;      /* (R, 2I) gate | up */
    float *act = gu + R * 2 * I;   /* (R, ldi) SwiGLU output */
    float *ys = act + R * ldi;     /* (R, H) expert output */
    float *packed = ys + R * H;    /* (threads, PACK_ROWS * max(H, I)) packed weights or tiles */
    queue gate_up_units[threads], down_units[threads];
    fill_queues(gate_up_units, threads);
    fill_queues(down_units, threads);
#pragma omp parallel num_threads(threads)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++)
            memcpy(xs + r * ldh, hidden + token_of[r] * H, H * sizeof(float));
        float *wp = packed + t * PACK_ROWS * (H > I ? H : I);
        expert_rows(gate_up, gate_up_packed, 2 * I, H, xs, ldh, gu, 2 * I, active, start, counts,
                    n_active, gate_up_units, threads, t, wp, copies);
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++)
            swiglu(gu + r * 2 * I, gu + r * 2 * I + I, act + r * ldi, I);
        expert_rows(down, down_packed, H, I, act, ldi, ys, H, active, start, counts, n_active,
                    down_units, threads, t, wp, copies);
#pragma omp barrier
        /* Combine: each thread owns a range of columns of out, so no two write one float. */
        const int64_t c0 = H * t / nt, c1 = H * (t + 1) / nt;
        for (int64_t token = 0; token < T; token++)
            memset(out + token * H + c0, 0, (c1 - c0) * sizeof(float));
        for (int64_t r = 0; r < R; r++) {
            float *o = out + token_of[r] * H;
            const float w = row_w[r];
            const float *y = ys + r * H;
            for (int64_t c = c0; c < c1; c++) o[c] = __builtin_fmaf(w, y[c], o[c]);
        }
    }
    return most;
}
