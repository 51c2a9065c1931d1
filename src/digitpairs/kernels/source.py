"""The C source of the memory-bound kernels of ops.py and bnrelu.py (kernels_conv.py has the fused convolution);
ops.library compiles SOURCE, the parts joined, once per machine.

Portable C99 with GCC/Clang vector extensions (16 float lanes: one AVX-512 register, two AVX2 or four NEON ones);
intrinsics only behind a CPU feature test, so any target these compilers know runs it, at the speed of its vector
unit. Kept in Python modules so that the package's source hash (the provenance of every stored run) covers it.
"""

from digitpairs.kernels.source_conv import CONV

HEADER = r"""
#include <stdint.h>
#include <string.h>

typedef long long i64;
typedef uint16_t bf16;
#define LANES 16  /* one AVX-512 register of floats, two AVX2 ones: GCC/Clang vector extensions, any target */
#define BUF 1024  /* NCHW: windows gathered into 4 contiguous buffers, then picked like NHWC channels */
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));
typedef uint32_t vu __attribute__((vector_size(4 * LANES)));
typedef int16_t vs __attribute__((vector_size(2 * LANES)));
typedef uint16_t vh __attribute__((vector_size(2 * LANES)));
typedef uint8_t vb __attribute__((vector_size(LANES)));

/* bfloat16 is the top half of a float32: widening is exact, and so is narrowing a widened value */
static inline float load_f32(const float *p) { return *p; }
static inline float load_bf16(const bf16 *p) { uint32_t w = (uint32_t)*p << 16; float f; memcpy(&f, &w, 4); return f; }
static inline vf vload_f32(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline vf vload_bf16(const bf16 *p) { vh h; memcpy(&h, p, sizeof h); return (vf)(__builtin_convertvector(h, vu) << 16); }
static inline void vstore_f32(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline void vstore_bf16(bf16 *p, vf v) { vh h = __builtin_convertvector((vu)v >> 16, vh); memcpy(p, &h, sizeof h); }
/* float32 -> bfloat16 rounded to nearest even, NaN kept a (quiet) NaN: torch's .to(torch.bfloat16) */
static inline void vround_bf16(bf16 *p, vf v) {
    vu u = (vu)v, r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16, nan = (vu)(v != v);
    vh h = __builtin_convertvector((r & ~nan) | (((u >> 16) | 0x40) & nan), vh);
    memcpy(p, &h, sizeof h);
}

/* F.max_pool2d's rule: scanning the window in order, a greater value, or a NaN, replaces the maximum */
#define VSTEP(a, k) do { vi t = (a > m) | (a != a); m = (vf)(((vi)a & t) | ((vi)m & ~t)); pos = (k & t) | (pos & ~t); } while (0)


"""

POOL = r"""/* ---- 2x2 max-pooling, F.max_pool2d(x, 2) ---- */
#define KERNELS(T, NAME, VBITS)                                                                \
/* n windows side by side, window k = p0[k] p1[k] / p2[k] p3[k]: maxima to out, positions to idx */ \
static void pick_##NAME(const T *restrict p0, const T *restrict p1, const T *restrict p2,       \
                        const T *restrict p3, T *restrict out, uint8_t *restrict idx, i64 n) {  \
    i64 k = 0;                                                                                 \
    for (; k + LANES <= n; k += LANES) {                                                       \
        vf m = vload_##NAME(p0 + k), a; vi pos = {0};                                          \
        a = vload_##NAME(p1 + k); VSTEP(a, 1);                                                 \
        a = vload_##NAME(p2 + k); VSTEP(a, 2);                                                 \
        a = vload_##NAME(p3 + k); VSTEP(a, 3);                                                 \
        vstore_##NAME(out + k, m);                                                             \
        if (idx) { vb b = __builtin_convertvector(pos, vb); memcpy(idx + k, &b, LANES); }      \
    }                                                                                          \
    for (; k < n; k++) {                                                                       \
        T r = p0[k]; float m = load_##NAME(p0 + k); uint8_t pos = 0;                           \
        float v = load_##NAME(p1 + k); if (v > m || v != v) { m = v; r = p1[k]; pos = 1; }      \
        v = load_##NAME(p2 + k); if (v > m || v != v) { m = v; r = p2[k]; pos = 2; }            \
        v = load_##NAME(p3 + k); if (v > m || v != v) { r = p3[k]; pos = 3; }                   \
        out[k] = r; if (idx) idx[k] = pos;                                                     \
    }                                                                                          \
}                                                                                              \
/* the gradient g of n windows to the positions idx, zero elsewhere: q0[k] q1[k] / q2[k] q3[k] */ \
static void spread_##NAME(const T *restrict g, const uint8_t *restrict idx, T *restrict q0,     \
                          T *restrict q1, T *restrict q2, T *restrict q3, i64 n) {             \
    i64 k = 0;                                                                                 \
    for (; k + LANES <= n; k += LANES) {                                                       \
        VBITS v, s, q; vb a;                                                                   \
        memcpy(&v, g + k, sizeof v); memcpy(&a, idx + k, LANES);                               \
        s = __builtin_convertvector(a, VBITS);                                                 \
        q = v & (s == 0); memcpy(q0 + k, &q, sizeof q);                                        \
        q = v & (s == 1); memcpy(q1 + k, &q, sizeof q);                                        \
        q = v & (s == 2); memcpy(q2 + k, &q, sizeof q);                                        \
        q = v & (s == 3); memcpy(q3 + k, &q, sizeof q);                                        \
    }                                                                                          \
    for (; k < n; k++) {                                                                       \
        T v = g[k], z = 0; uint8_t s = idx[k];                                                 \
        q0[k] = s == 0 ? v : z; q1[k] = s == 1 ? v : z; q2[k] = s == 2 ? v : z; q3[k] = s == 3 ? v : z; \
    }                                                                                          \
}                                                                                              \
/* x (n, h, w, c) -> out, idx (n, h/2, w/2, c); idx may be NULL (no gradient needed) */        \
void pool_nhwc_##NAME(const T *x, T *out, uint8_t *idx, i64 n, i64 h, i64 w, i64 c) {          \
    i64 ho = h / 2, wo = w / 2;                                                                \
    for (i64 b = 0; b < n; b++) for (i64 i = 0; i < ho; i++) for (i64 j = 0; j < wo; j++) {    \
        const T *p = x + ((b * h + 2 * i) * w + 2 * j) * c;                                    \
        i64 o = ((b * ho + i) * wo + j) * c;                                                   \
        pick_##NAME(p, p + c, p + w * c, p + w * c + c, out + o, idx ? idx + o : 0, c);        \
    }                                                                                          \
}                                                                                              \
/* gradient: g, idx (n, h/2, w/2, c) -> gx (n, h, w, c), every element written once */         \
void unpool_nhwc_##NAME(const T *g, const uint8_t *idx, T *gx, i64 n, i64 h, i64 w, i64 c) {   \
    i64 ho = h / 2, wo = w / 2;                                                                \
    for (i64 b = 0; b < n; b++) {                                                              \
        for (i64 i = 0; i < ho; i++) {                                                         \
            for (i64 j = 0; j < wo; j++) {                                                     \
                T *q = gx + ((b * h + 2 * i) * w + 2 * j) * c;                                 \
                i64 o = ((b * ho + i) * wo + j) * c;                                           \
                spread_##NAME(g + o, idx + o, q, q + c, q + w * c, q + w * c + c, c);          \
            }                                                                                  \
            if (w & 1) {  /* the column that pooling leaves out */                             \
                memset(gx + ((b * h + 2 * i) * w + w - 1) * c, 0, c * sizeof(T));             \
                memset(gx + ((b * h + 2 * i + 1) * w + w - 1) * c, 0, c * sizeof(T));         \
            }                                                                                  \
        }                                                                                      \
        if (h & 1) memset(gx + (b * h + h - 1) * w * c, 0, w * c * sizeof(T));                 \
    }                                                                                          \
}                                                                                              \
/* x (planes, h, w) -> out, idx (planes, h/2, w/2) */                                          \
void pool_nchw_##NAME(const T *x, T *out, uint8_t *idx, i64 planes, i64 h, i64 w) {           \
    i64 ho = h / 2, wo = w / 2;                                                                \
    T b0[BUF], b1[BUF], b2[BUF], b3[BUF];                                                      \
    for (i64 p = 0; p < planes; p++) {                                                         \
        const T *xp = x + p * h * w;                                                           \
        i64 o = p * ho * wo, fill = 0;                                                         \
        for (i64 i = 0; i < ho; i++) for (i64 j = 0; j < wo; j++) {                            \
            const T *r = xp + 2 * i * w + 2 * j;                                               \
            b0[fill] = r[0]; b1[fill] = r[1]; b2[fill] = r[w]; b3[fill] = r[w + 1];            \
            if (++fill == BUF) { pick_##NAME(b0, b1, b2, b3, out + o, idx ? idx + o : 0, fill); o += fill; fill = 0; } \
        }                                                                                      \
        if (fill) pick_##NAME(b0, b1, b2, b3, out + o, idx ? idx + o : 0, fill);               \
    }                                                                                          \
}                                                                                              \
/* gradient: g, idx (planes, h/2, w/2) -> gx (planes, h, w) */                                 \
void unpool_nchw_##NAME(const T *g, const uint8_t *idx, T *gx, i64 planes, i64 h, i64 w) {     \
    i64 ho = h / 2, wo = w / 2;                                                                \
    T b0[BUF], b1[BUF], b2[BUF], b3[BUF];                                                      \
    for (i64 p = 0; p < planes; p++) {                                                         \
        T *xp = gx + p * h * w;                                                                \
        i64 i = 0, j = 0;                                                                      \
        for (i64 e0 = 0; e0 < ho * wo; e0 += BUF) {                                            \
            i64 cnt = ho * wo - e0 < BUF ? ho * wo - e0 : BUF;                                 \
            spread_##NAME(g + p * ho * wo + e0, idx + p * ho * wo + e0, b0, b1, b2, b3, cnt);  \
            for (i64 e = 0; e < cnt; e++) {                                                    \
                T *r = xp + 2 * i * w + 2 * j;                                                 \
                r[0] = b0[e]; r[1] = b1[e]; r[w] = b2[e]; r[w + 1] = b3[e];                    \
                if (++j == wo) { if (w & 1) { r[2] = 0; r[w + 2] = 0; } j = 0; i++; }          \
            }                                                                                  \
        }                                                                                      \
        if (h & 1) memset(xp + (h - 1) * w, 0, w * sizeof(T));                                 \
    }                                                                                          \
}

KERNELS(float, f32, vi)
KERNELS(bf16, bf16, vs)

"""

BATCHNORM = r"""/* ---- BatchNorm followed by ReLU, channels last: x (rows, c), c a multiple of LANES up to MAX_C ---- */
#define MAX_C 1024
#define BLOCK 256  /* rows summed in float32 before the float64 totals */
typedef double vd __attribute__((vector_size(8 * LANES)));

/* y = relu(x * a + b) per channel (a and b fold the statistics and the affine weights); NaN stays NaN */
static inline vf affine_relu(vf v, vf a, vf b, vi *on) { vf y = v * a + b; *on = (y > 0) | (y != y); return (vf)((vi)y & *on); }

#define BN_KERNELS(T, NAME)                                                                        \
/* per channel: the mean, then the biased variance about it (two passes) */                       \
void bn_stats_##NAME(const T *x, float *mean, float *var, i64 rows, i64 c) {                      \
    vd tot[MAX_C / LANES]; vf part[MAX_C / LANES], mu[MAX_C / LANES];                              \
    i64 nb = c / LANES;                                                                            \
    for (int pass = 0; pass < 2; pass++) {                                                         \
        for (i64 b = 0; b < nb; b++) tot[b] = (vd){0};                                             \
        for (i64 r0 = 0; r0 < rows; r0 += BLOCK) {                                                 \
            i64 r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;                                        \
            for (i64 b = 0; b < nb; b++) part[b] = (vf){0};                                        \
            for (i64 r = r0; r < r1; r++) for (i64 b = 0; b < nb; b++) {                           \
                vf v = vload_##NAME(x + r * c + b * LANES);                                        \
                if (pass) { v -= mu[b]; v *= v; }                                                  \
                part[b] += v;                                                                      \
            }                                                                                      \
            for (i64 b = 0; b < nb; b++) tot[b] += __builtin_convertvector(part[b], vd);           \
        }                                                                                          \
        for (i64 b = 0; b < nb; b++) {                                                             \
            vf m = __builtin_convertvector(tot[b] / (double)rows, vf);                             \
            if (pass) vstore_f32(var + b * LANES, m); else { mu[b] = m; vstore_f32(mean + b * LANES, m); } \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
void bn_relu_##NAME(const T *x, const float *a, const float *b, T *y, i64 rows, i64 c) {          \
    i64 nb = c / LANES; vi on;                                                                     \
    for (i64 r = 0; r < rows; r++) for (i64 k = 0; k < nb; k++) {                                  \
        i64 o = r * c + k * LANES;                                                                 \
        vstore_##NAME##_rounded(y + o, affine_relu(vload_##NAME(x + o), vload_f32(a + k * LANES), vload_f32(b + k * LANES), &on)); \
    }                                                                                              \
}                                                                                                  \
/* backward, first pass: per channel, s1 = sum of g where the output was positive, s2 = the same of g (x - mean) */ \
void bn_relu_sums_##NAME(const T *x, const T *g, const float *a, const float *b, const float *mean, \
                         float *s1, float *s2, i64 rows, i64 c) {                                  \
    vd t1[MAX_C / LANES], t2[MAX_C / LANES]; vf p1[MAX_C / LANES], p2[MAX_C / LANES];              \
    i64 nb = c / LANES; vi on;                                                                     \
    for (i64 k = 0; k < nb; k++) t1[k] = t2[k] = (vd){0};                                          \
    for (i64 r0 = 0; r0 < rows; r0 += BLOCK) {                                                     \
        i64 r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;                                            \
        for (i64 k = 0; k < nb; k++) p1[k] = p2[k] = (vf){0};                                      \
        for (i64 r = r0; r < r1; r++) for (i64 k = 0; k < nb; k++) {                               \
            i64 o = r * c + k * LANES;                                                             \
            vf v = vload_##NAME(x + o);                                                            \
            affine_relu(v, vload_f32(a + k * LANES), vload_f32(b + k * LANES), &on);               \
            vf gm = (vf)((vi)vload_##NAME(g + o) & on);                                            \
            p1[k] += gm; p2[k] += gm * (v - vload_f32(mean + k * LANES));                          \
        }                                                                                          \
        for (i64 k = 0; k < nb; k++) {                                                             \
            t1[k] += __builtin_convertvector(p1[k], vd); t2[k] += __builtin_convertvector(p2[k], vd); \
        }                                                                                          \
    }                                                                                              \
    for (i64 k = 0; k < nb; k++) {                                                                 \
        vstore_f32(s1 + k * LANES, __builtin_convertvector(t1[k], vf));                            \
        vstore_f32(s2 + k * LANES, __builtin_convertvector(t2[k], vf));                            \
    }                                                                                              \
}                                                                                                  \
/* backward, second pass: dx = (g where the output was positive) * a + x * q + r, per channel */   \
void bn_relu_dx_##NAME(const T *x, const T *g, const float *a, const float *b, const float *q,    \
                       const float *r, T *dx, i64 rows, i64 c) {                                   \
    i64 nb = c / LANES; vi on;                                                                     \
    for (i64 i = 0; i < rows; i++) for (i64 k = 0; k < nb; k++) {                                  \
        i64 o = i * c + k * LANES;                                                                 \
        vf v = vload_##NAME(x + o), ak = vload_f32(a + k * LANES);                                 \
        affine_relu(v, ak, vload_f32(b + k * LANES), &on);                                         \
        vf gm = (vf)((vi)vload_##NAME(g + o) & on);                                                \
        vstore_##NAME##_rounded(dx + o, gm * ak + v * vload_f32(q + k * LANES) + vload_f32(r + k * LANES)); \
    }                                                                                              \
}

static inline void vstore_f32_rounded(float *p, vf v) { vstore_f32(p, v); }
#define vstore_bf16_rounded vround_bf16
BN_KERNELS(float, f32)
BN_KERNELS(bf16, bf16)
"""

SOURCE = HEADER + POOL + CONV + BATCHNORM
