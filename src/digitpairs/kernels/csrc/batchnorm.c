/* The kernels of batchnorm.py: BatchNorm followed by ReLU on channels-last maps, forward and backward, float32 and
   bfloat16. Part of the translation unit that build.py joins after common.h, pool.c and conv_pool.c. MAX_C (below)
   bounds the channels; batchnorm.MAX_C reads it. */

/* ---- BatchNorm followed by ReLU, channels last: x (rows, c), c a multiple of LANES up to MAX_C ---- */
#define MAX_C 1024
#define BLOCK 256  /* rows summed in float32 before the float64 totals */
typedef double vd __attribute__((vector_size(8 * LANES)));

/* y = relu(x * a + b) per channel (a and b fold the statistics and the affine weights); NaN stays NaN */
static inline vf affine_relu(vf v, vf a, vf b, vi *on) { vf y = v * a + b; *on = (y > 0) | (y != y); return (vf)((vi)y & *on); }

#define BN_KERNELS(T, NAME)                                                                        \
/* per channel: the mean, then the biased variance about it (two passes). A block of rows is summed one group of     \
   LANES channels at a time, its rows in order, in a register: with few channels the sums are otherwise bound by \
   a load and a store to the stack per row */                                                     \
void bn_stats_##NAME(const T *x, float *mean, float *var, i64 rows, i64 c) {                      \
    vd tot[MAX_C / LANES]; vf mu[MAX_C / LANES];                                                   \
    i64 nb = c / LANES;                                                                            \
    for (int pass = 0; pass < 2; pass++) {                                                         \
        for (i64 b = 0; b < nb; b++) tot[b] = (vd){0};                                             \
        for (i64 r0 = 0; r0 < rows; r0 += BLOCK) {                                                 \
            i64 r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;                                        \
            for (i64 b = 0; b < nb; b++) {                                                         \
                vf part = {0}, m = pass ? mu[b] : (vf){0};                                         \
                for (i64 r = r0; r < r1; r++) {                                                    \
                    vf v = vload_##NAME(x + r * c + b * LANES);                                    \
                    if (pass) { v -= m; v *= v; }                                                  \
                    part += v;                                                                     \
                }                                                                                  \
                tot[b] += __builtin_convertvector(part, vd);                                       \
            }                                                                                      \
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
    vd t1[MAX_C / LANES], t2[MAX_C / LANES];                                                       \
    i64 nb = c / LANES; vi on;                                                                     \
    for (i64 k = 0; k < nb; k++) t1[k] = t2[k] = (vd){0};                                          \
    for (i64 r0 = 0; r0 < rows; r0 += BLOCK) {                                                     \
        i64 r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;                                            \
        for (i64 k = 0; k < nb; k++) {  /* as bn_stats: a group of channels at a time, in registers */ \
            vf p1 = {0}, p2 = {0}, ak = vload_f32(a + k * LANES), bk = vload_f32(b + k * LANES);     \
            vf mk = vload_f32(mean + k * LANES);                                                   \
            for (i64 r = r0; r < r1; r++) {                                                        \
                i64 o = r * c + k * LANES;                                                         \
                vf v = vload_##NAME(x + o);                                                        \
                affine_relu(v, ak, bk, &on);                                                       \
                vf gm = (vf)((vi)vload_##NAME(g + o) & on);                                        \
                p1 += gm; p2 += gm * (v - mk);                                                     \
            }                                                                                      \
            t1[k] += __builtin_convertvector(p1, vd); t2[k] += __builtin_convertvector(p2, vd);    \
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
