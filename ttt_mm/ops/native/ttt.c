/* Fused CPU loops for the elementwise chains inside the TTT scans (see __init__.py for why).
 * Every function exists for float (f32) and double (f64). Built by build.py with lact.c; no Python headers. */
#include "common.h"

/* gelu_tanh(x) = x sigmoid(x (A + B x^2)), the tanh form's exact equivalent (sigmoid(2u) = (1 + tanh u) / 2) */
#define GELU_A 1.5957691216057308  /* 2 sqrt(2 / pi) */
#define GELU_B 0.07135481627286025 /* GELU_A * 0.044715 */

#define DEFINE_KERNELS(T, SUF, EXP, SQRT)                                                              \
    /* s = sigmoid(u), u = v (A + B v^2) clamped, and e = exp(-u): 1 - s = e s, exact where s rounds to 1 */ \
    static inline T gelu_sigmoid_##SUF(T v, T v2, T *e) {                                              \
        T u = v * ((T)GELU_A + (T)GELU_B * v2);                                                        \
        u = u < (T)-CLAMP ? (T)-CLAMP : (u > (T)CLAMP ? (T)CLAMP : u);                                 \
        *e = EXP(-u);                                                                                  \
        return (T)1 / ((T)1 + *e);                                                                     \
    }                                                                                                  \
    /* y = gelu_tanh(x) and, where slope is non-NULL, slope = gelu_tanh'(x) = s + y (1 - s) (A + 3 B x^2) \
     * with s the sigmoid, for n contiguous values */                                                 \
    static void gelu_run_##SUF(const T *x, int64_t n, T *y, T *slope) {                                \
        for (int64_t i = 0; i < n; i++) {                                                              \
            T v = x[i], v2 = v * v, e, s = gelu_sigmoid_##SUF(v, v2, &e), out = v * s;                 \
            y[i] = out;                                                                                \
            if (slope) slope[i] = s + out * e * s * ((T)GELU_A + (T)3 * (T)GELU_B * v2);               \
        }                                                                                              \
    }                                                                                                  \
    /* y'' = gelu_tanh''(x) = s (1 - s) (2 v' + x (1 - 2 s) v'^2 + x v''), v = x (A + B x^2), for n     \
     * contiguous values (the unused slope argument keeps gelu_run's signature) */                    \
    static void curvature_run_##SUF(const T *x, int64_t n, T *y, T *unused) {                          \
        (void)unused;                                                                                  \
        for (int64_t i = 0; i < n; i++) {                                                              \
            T v = x[i], v2 = v * v, e, s = gelu_sigmoid_##SUF(v, v2, &e);                              \
            T dv = (T)GELU_A + (T)3 * (T)GELU_B * v2;                                                  \
            T q = e * s * s; /* s (1 - s) */                                                           \
            y[i] = q * ((T)2 * dv + v * (e * s - s) * dv * dv + (T)6 * (T)GELU_B * v2);                \
        }                                                                                              \
    }                                                                                                  \
    /* run over x: `outer` blocks of `inner` contiguous values, `stride` apart, into contiguous y (and \
     * slope), the values split evenly across `threads` threads */                                    \
    static void elementwise_##SUF(void (*run)(const T *, int64_t, T *, T *), const T *x, int64_t outer, \
                                  int64_t inner, int64_t stride, T *y, T *slope, int threads) {        \
        int64_t total = outer * inner;                                                                 \
        _Pragma("omp parallel num_threads(threads) if (threads > 1 && total >= PARALLEL_MIN)")        \
        {                                                                                              \
            int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();                              \
            int64_t lo = total * t / nt, hi = total * (t + 1) / nt;                                    \
            while (lo < hi) {                                                                          \
                int64_t o = lo / inner, i = lo % inner, n = inner - i < hi - lo ? inner - i : hi - lo; \
                run(x + o * stride + i, n, y + lo, slope ? slope + lo : 0);                            \
                lo += n;                                                                               \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    void gelu_tanh_##SUF(const T *x, int64_t outer, int64_t inner, int64_t stride, T *y, T *slope,     \
                         int threads) {                                                                \
        elementwise_##SUF(gelu_run_##SUF, x, outer, inner, stride, y, slope, threads);                 \
    }                                                                                                  \
    void gelu_tanh_curvature_##SUF(const T *x, int64_t outer, int64_t inner, int64_t stride, T *y,     \
                                   int threads) {                                                      \
        elementwise_##SUF(curvature_run_##SUF, x, outer, inner, stride, y, 0, threads);                \
    }                                                                                                  \
    /* g = d/dz of 0.5 |gamma LN(z) + beta - target|^2 per row of `width`, given w_sq = gamma^2 [groups, \
     * width] and offset = gamma (beta - target): the LayerNorm backward of dy = offset + w_sq zhat.  \
     * z, offset, g (and zhat, dys): [groups, rows, width] contiguous; means, rstds: [groups, rows].  \
     * With zhat non-NULL also records zhat, mean, 1/std and dy for the backward. */                  \
    void ln_l2_grad_##SUF(const T *z, const T *w_sq, const T *offset, int64_t groups, int64_t rows,     \
                          int64_t width, double eps, T *g, T *zhat, T *means, T *rstds, T *dys,        \
                          int threads) {                                                               \
        int64_t total = groups * rows;                                                                 \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && total * width >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < total; k++) {                                                          \
            int64_t base = k * width;                                                                  \
            const T *zr = z + base, *orow = offset + base, *w = w_sq + k / rows * width;               \
            T *gr = g + base;                                                                          \
            T mean = 0, var = 0, mdy = 0, mdyx = 0;                                                    \
            for (int64_t i = 0; i < width; i++) mean += zr[i];                                         \
            mean /= (T)width;                                                                          \
            for (int64_t i = 0; i < width; i++) var += (zr[i] - mean) * (zr[i] - mean);                \
            T rstd = (T)1 / SQRT(var / (T)width + (T)eps);                                             \
            for (int64_t i = 0; i < width; i++) {                                                      \
                T xh = (zr[i] - mean) * rstd, dy = orow[i] + w[i] * xh;                                \
                mdy += dy;                                                                             \
                mdyx += dy * xh;                                                                       \
            }                                                                                          \
            mdy /= (T)width;                                                                           \
            mdyx /= (T)width;                                                                          \
            for (int64_t i = 0; i < width; i++) {                                                      \
                T xh = (zr[i] - mean) * rstd, dy = orow[i] + w[i] * xh;                                \
                gr[i] = rstd * (dy - mdy - xh * mdyx);                                                 \
                if (zhat) {                                                                            \
                    zhat[base + i] = xh;                                                               \
                    dys[base + i] = dy;                                                                \
                }                                                                                      \
            }                                                                                          \
            if (zhat) {                                                                                \
                means[k] = mean;                                                                       \
                rstds[k] = rstd;                                                                       \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    /* The backward of ln_l2_grad for an upstream gradient s (ttt_mm.ops.ln.LnL2GradBackward): per row, \
     * de = r P s and dz = r P (w_sq de) - a de - (r / F)(s . zhat) g - (r / F)(s . g) zhat, with     \
     * P v = v - mean(v) - zhat mean(v zhat). s, zhat, g, de: [groups, rows, width] contiguous; r, a:  \
     * [groups, rows]; dz: rows of group gi start at dz + gi * dz_stride. */                          \
    void ln_l2_grad_backward_##SUF(const T *s, const T *zhat, const T *g, const T *r, const T *a,       \
                                   const T *w_sq, int64_t groups, int64_t rows, int64_t width, T *de,  \
                                   T *dz, int64_t dz_stride, int threads) {                            \
        int64_t total = groups * rows;                                                                 \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && total * width >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < total; k++) {                                                          \
            int64_t gi = k / rows, base = k * width;                                                   \
            const T *sr = s + base, *zr = zhat + base, *gr = g + base, *w = w_sq + gi * width;         \
            T *der = de + base, *dzr = dz + gi * dz_stride + k % rows * width;                         \
            T rs = r[k], ms = 0, msz = 0, msg = 0, mt = 0, mtz = 0;                                    \
            for (int64_t i = 0; i < width; i++) {                                                      \
                ms += sr[i];                                                                           \
                msz += sr[i] * zr[i];                                                                  \
                msg += sr[i] * gr[i];                                                                  \
            }                                                                                          \
            ms /= (T)width;                                                                            \
            msz /= (T)width;                                                                           \
            for (int64_t i = 0; i < width; i++) {                                                      \
                T d = rs * (sr[i] - ms - zr[i] * msz);                                                 \
                der[i] = d;                                                                            \
                mt += w[i] * d;                                                                        \
                mtz += w[i] * d * zr[i];                                                               \
            }                                                                                          \
            mt /= (T)width;                                                                            \
            mtz /= (T)width;                                                                           \
            T cg = rs * msz, cz = rs * msg / (T)width; /* (r/F)(s . zhat) = r msz */                   \
            for (int64_t i = 0; i < width; i++)                                                        \
                dzr[i] = rs * (w[i] * der[i] - mt - zr[i] * mtz) - a[k] * der[i] - cg * gr[i] -        \
                         cz * zr[i];                                                                   \
        }                                                                                              \
    }

DEFINE_KERNELS(float, f32, expf, sqrtf)
DEFINE_KERNELS(double, f64, exp, sqrt)
