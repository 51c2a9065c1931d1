/* The memory-bound kernels of pool.py: 2x2 max-pooling and its gradient, channels last (NHWC) and planes (NCHW),
   float32 and bfloat16. Part of the translation unit that build.py joins after common.h (types, LANES, VSTEP). */

/* ---- 2x2 max-pooling, F.max_pool2d(x, 2) ---- */
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

