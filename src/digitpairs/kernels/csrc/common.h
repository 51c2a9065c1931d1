/* The C kernels of digitpairs.kernels, compiled once per machine by build.library(): this header holds what they
   share (includes, types, LANES, the vector loads and stores, the pooling rule VSTEP). build.py joins common.h,
   pool.c, conv_pool.c and batchnorm.c, in that order, into one translation unit (build.PARTS), so the .c files use
   this header's definitions without including it.

   Portable C99 with GCC/Clang vector extensions (16 float lanes: one AVX-512 register, two AVX2 or four NEON ones);
   intrinsics only behind a CPU feature test, so any target these compilers know runs it, at the speed of its vector
   unit. Shipped as package data, and covered by the package's code hash (spec/provenance.py, the provenance of every
   stored run). The Python side reads LANES, MAX_TAPS and MAX_C from these files (build.define): one definition. */

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


