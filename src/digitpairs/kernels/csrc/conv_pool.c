/* The convolution from one channel per member fused with its 2x2 max-pooling (pool.conv_pool2x2), in portable C
   with vector extensions and, behind a CPU feature test, AVX512-BF16 intrinsics. It uses the types, loads, stores
   and the pooling rule (VSTEP) of common.h: build.py joins it after common.h and pool.c into one translation unit.
   MAX_TAPS (below) bounds the taps; the Python side's largest kernel side, build.MAX_KERNEL, is its square root. */

/* ---- a convolution from one channel per member, fused with the pooling ---- */
/* Convolution from one channel per member, then 2x2 max-pooling, in one pass: no full-resolution map is written.
   x (n, k, s, s): member m's image of sample b, float32, or bfloat16 under autocast; w (k, ks, ks, c) float32
   (bfloat16 values under autocast): member m's taps, channels last; bias (k, c) or NULL. out, idx
   (n, s'/2, s'/2, k*c) with s' = s - ks + 1 (a valid convolution; pad the input first for another padding).
   Products and sums in float32 in a fixed order; the window's maximum and its position by the rule above. */
#define CONV_POOL_KS(T, NAME, PUT, GET)                                                            \
static inline __attribute__((always_inline)) void conv_pool_##NAME##_ks(const T *x, const float *w, \
        const float *bias, T *out, uint8_t *idx, i64 n, i64 k, i64 s, const i64 ks, i64 c) {       \
    i64 ho = (s - ks + 1) / 2, kc = k * c;                                                         \
    for (i64 b = 0; b < n; b++) for (i64 mb = 0; mb < k; mb++) {                                   \
        const T *img = x + (b * k + mb) * s * s;                                                   \
        for (i64 cb = 0; cb < c; cb += LANES) {                                                    \
            vf wv[MAX_TAPS], bv = {0};                                                             \
            for (i64 t = 0; t < ks * ks; t++) wv[t] = vload_f32(w + (mb * ks * ks + t) * c + cb);  \
            if (bias) bv = vload_f32(bias + mb * c + cb);                                          \
            for (i64 i = 0; i < ho; i++) for (i64 j = 0; j < ho; j++) {                            \
                vf a0 = bv, a1 = bv, a2 = bv, a3 = bv;  /* the window's 4 positions */             \
                for (i64 dy = 0; dy < ks; dy++) {                                                  \
                    const T *r0 = img + (2 * i + dy) * s + 2 * j, *r1 = r0 + s;                    \
                    for (i64 dx = 0; dx < ks; dx++) {                                              \
                        vf wt = wv[dy * ks + dx];                                                  \
                        a0 += load_##NAME(r0 + dx) * wt; a1 += load_##NAME(r0 + dx + 1) * wt;      \
                        a2 += load_##NAME(r1 + dx) * wt; a3 += load_##NAME(r1 + dx + 1) * wt;      \
                    }                                                                              \
                }                                                                                  \
                vf m = a0, a; vi pos = {0};                                                        \
                a = a1; VSTEP(a, 1); a = a2; VSTEP(a, 2); a = a3; VSTEP(a, 3);                     \
                i64 o = ((b * ho + i) * ho + j) * kc + mb * c + cb;                                \
                PUT(out + o, m);                                                                   \
                if (idx) { vb p8 = __builtin_convertvector(pos, vb); memcpy(idx + o, &p8, LANES); } \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
/* the gradient of w (k, ks, ks, c) and of bias (k, c; or NULL), overwritten, from the pooled gradient g and the   \
   positions idx: member by member, each sum in float32 in a fixed order */                        \
static inline __attribute__((always_inline)) void conv_pool_grad_##NAME##_ks(const T *x, const T *g, \
        const uint8_t *idx, float *gw, float *gb, i64 n, i64 k, i64 s, const i64 ks, i64 c) {     \
    i64 ho = (s - ks + 1) / 2, kc = k * c;                                                         \
    for (i64 mb = 0; mb < k; mb++) for (i64 cb = 0; cb < c; cb += LANES) {                         \
        vf acc[MAX_TAPS], bacc = {0};                                                              \
        for (i64 t = 0; t < ks * ks; t++) acc[t] = (vf){0};                                        \
        for (i64 b = 0; b < n; b++) {                                                              \
            const T *img = x + (b * k + mb) * s * s;                                               \
            for (i64 i = 0; i < ho; i++) for (i64 j = 0; j < ho; j++) {                            \
                i64 o = ((b * ho + i) * ho + j) * kc + mb * c + cb;                                \
                vi gv = (vi)GET(g + o), sel; vb a;                                                 \
                memcpy(&a, idx + o, LANES);                                                        \
                sel = __builtin_convertvector(a, vi);                                              \
                vf g0 = (vf)(gv & (sel == 0)), g1 = (vf)(gv & (sel == 1));                         \
                vf g2 = (vf)(gv & (sel == 2)), g3 = (vf)(gv & (sel == 3));                         \
                bacc += (vf)gv;                                                                    \
                for (i64 dy = 0; dy < ks; dy++) {                                                  \
                    const T *r0 = img + (2 * i + dy) * s + 2 * j, *r1 = r0 + s;                    \
                    for (i64 dx = 0; dx < ks; dx++)                                                \
                        acc[dy * ks + dx] += load_##NAME(r0 + dx) * g0 + load_##NAME(r0 + dx + 1) * g1 \
                                           + load_##NAME(r1 + dx) * g2 + load_##NAME(r1 + dx + 1) * g3; \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (i64 t = 0; t < ks * ks; t++) memcpy(gw + (mb * ks * ks + t) * c + cb, &acc[t], sizeof(vf)); \
        if (gb) memcpy(gb + mb * c + cb, &bacc, sizeof(vf));                                       \
    }                                                                                              \
}

/* the kernel sizes of this project (5 at 28x28, 3 at 14x14) unrolled, any other up to 7 in a loop */
#define CONV_POOL_ENTRY(T, NAME)                                                                   \
void conv_pool_##NAME(const T *x, const float *w, const float *bias, T *out, uint8_t *idx,        \
                      i64 n, i64 k, i64 s, i64 ks, i64 c) {                                        \
    if (ks == 5) conv_pool_##NAME##_ks(x, w, bias, out, idx, n, k, s, 5, c);                       \
    else if (ks == 3) conv_pool_##NAME##_ks(x, w, bias, out, idx, n, k, s, 3, c);                  \
    else conv_pool_##NAME##_ks(x, w, bias, out, idx, n, k, s, ks, c);                              \
}                                                                                                  \
void conv_pool_grad_##NAME(const T *x, const T *g, const uint8_t *idx, float *gw, float *gb,       \
                           i64 n, i64 k, i64 s, i64 ks, i64 c) {                                   \
    if (ks == 5) conv_pool_grad_##NAME##_ks(x, g, idx, gw, gb, n, k, s, 5, c);                     \
    else if (ks == 3) conv_pool_grad_##NAME##_ks(x, g, idx, gw, gb, n, k, s, 3, c);                \
    else conv_pool_grad_##NAME##_ks(x, g, idx, gw, gb, n, k, s, ks, c);                            \
}

#define MAX_TAPS 49
CONV_POOL_KS(float, f32, vstore_f32, vload_f32)
CONV_POOL_ENTRY(float, f32)

#if defined(__AVX512BF16__) && defined(__AVX512F__)
/* With AVX512-BF16 (-march=native on such a CPU), the bfloat16 convolution multiplies pairs of bfloat16 in one
   instruction (vdpbf16ps: a float32 lane gains a0 b0 + a1 b1, each product exact), pairing two adjacent taps of a
   row in the forward and two adjacent window positions in the backward: half the instructions of float32 FMAs. */
#include <immintrin.h>

static inline __m512i pair_at(const bf16 *p) { int32_t v; memcpy(&v, p, 4); return _mm512_set1_epi32(v); }
static inline __m512i single_at(const bf16 *p) { return _mm512_set1_epi32(*p); }  /* (p[0], 0) */
static inline __m512 dot(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

static inline __attribute__((always_inline)) void conv_pool_bf16_ks(const bf16 *x, const float *w,
        const float *bias, bf16 *out, uint8_t *idx, i64 n, i64 k, i64 s, const i64 ks, i64 c) {
    i64 ho = (s - ks + 1) / 2, kc = k * c, np = (ks + 1) / 2;  /* tap pairs per row; an odd last tap pairs with 0 */
    for (i64 b = 0; b < n; b++) for (i64 mb = 0; mb < k; mb++) {
        const bf16 *img = x + (b * k + mb) * s * s;
        for (i64 cb = 0; cb < c; cb += LANES) {
            __m512i wp[MAX_TAPS]; __m512 bv = _mm512_setzero_ps();
            for (i64 dy = 0; dy < ks; dy++) for (i64 pp = 0; pp < np; pp++) {  /* lane: (w[2pp], w[2pp + 1]) */
                const float *w0 = w + ((mb * ks + dy) * ks + 2 * pp) * c + cb;
                vu lo = (vu)vload_f32(w0) >> 16, hi = 2 * pp + 1 < ks ? (vu)vload_f32(w0 + c) & 0xFFFF0000u : (vu){0};
                vu both = lo | hi; memcpy(&wp[dy * np + pp], &both, sizeof both);
            }
            if (bias) bv = _mm512_loadu_ps(bias + mb * c + cb);
            for (i64 i = 0; i < ho; i++) for (i64 j = 0; j < ho; j++) {
                __m512 a0 = bv, a1 = bv, a2 = bv, a3 = bv;
                for (i64 dy = 0; dy < ks; dy++) {
                    const bf16 *r0 = img + (2 * i + dy) * s + 2 * j, *r1 = r0 + s;
                    for (i64 pp = 0; pp < np; pp++) {
                        __m512i wt = wp[dy * np + pp];
                        if (2 * pp + 1 < ks) {
                            a0 = dot(a0, pair_at(r0 + 2 * pp), wt); a1 = dot(a1, pair_at(r0 + 2 * pp + 1), wt);
                            a2 = dot(a2, pair_at(r1 + 2 * pp), wt); a3 = dot(a3, pair_at(r1 + 2 * pp + 1), wt);
                        } else {
                            a0 = dot(a0, single_at(r0 + 2 * pp), wt); a1 = dot(a1, single_at(r0 + 2 * pp + 1), wt);
                            a2 = dot(a2, single_at(r1 + 2 * pp), wt); a3 = dot(a3, single_at(r1 + 2 * pp + 1), wt);
                        }
                    }
                }
                vf m, a; vi pos = {0};
                memcpy(&m, &a0, sizeof m);
                memcpy(&a, &a1, sizeof a); VSTEP(a, 1);
                memcpy(&a, &a2, sizeof a); VSTEP(a, 2);
                memcpy(&a, &a3, sizeof a); VSTEP(a, 3);
                i64 o = ((b * ho + i) * ho + j) * kc + mb * c + cb;
                vround_bf16(out + o, m);
                if (idx) { vb p8 = __builtin_convertvector(pos, vb); memcpy(idx + o, &p8, LANES); }
            }
        }
    }
}

static inline __attribute__((always_inline)) void conv_pool_grad_bf16_ks(const bf16 *x, const bf16 *g,
        const uint8_t *idx, float *gw, float *gb, i64 n, i64 k, i64 s, const i64 ks, i64 c) {
    i64 ho = (s - ks + 1) / 2, kc = k * c;
    for (i64 mb = 0; mb < k; mb++) for (i64 cb = 0; cb < c; cb += LANES) {
        __m512 acc[MAX_TAPS], bacc = _mm512_setzero_ps();
        for (i64 t = 0; t < ks * ks; t++) acc[t] = _mm512_setzero_ps();
        for (i64 b = 0; b < n; b++) {
            const bf16 *img = x + (b * k + mb) * s * s;
            for (i64 i = 0; i < ho; i++) for (i64 j = 0; j < ho; j++) {
                i64 o = ((b * ho + i) * ho + j) * kc + mb * c + cb;
                __m512i g32 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(g + o)));
                __m512i sel = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(idx + o)));
                __m512i gm[4];
                for (int p = 0; p < 4; p++)
                    gm[p] = _mm512_maskz_mov_epi32(_mm512_cmpeq_epi32_mask(sel, _mm512_set1_epi32(p)), g32);
                /* lanes (g at (0,0), g at (0,1)) and (g at (1,0), g at (1,1)): they meet adjacent pixels */
                __m512i g01 = _mm512_or_si512(gm[0], _mm512_slli_epi32(gm[1], 16));
                __m512i g23 = _mm512_or_si512(gm[2], _mm512_slli_epi32(gm[3], 16));
                bacc = _mm512_add_ps(bacc, _mm512_castsi512_ps(_mm512_slli_epi32(g32, 16)));
                for (i64 dy = 0; dy < ks; dy++) {
                    const bf16 *r0 = img + (2 * i + dy) * s + 2 * j, *r1 = r0 + s;
                    for (i64 dx = 0; dx < ks; dx++)
                        acc[dy * ks + dx] = dot(dot(acc[dy * ks + dx], g01, pair_at(r0 + dx)), g23, pair_at(r1 + dx));
                }
            }
        }
        for (i64 t = 0; t < ks * ks; t++) _mm512_storeu_ps(gw + (mb * ks * ks + t) * c + cb, acc[t]);
        if (gb) _mm512_storeu_ps(gb + mb * c + cb, bacc);
    }
}
#else
CONV_POOL_KS(bf16, bf16, vround_bf16, vload_bf16)
#endif
CONV_POOL_ENTRY(bf16, bf16)

