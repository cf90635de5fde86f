/* Fused CPU loops for the elementwise maps around and inside the LaCT core (see lact.py for why).
 * Every function exists for float (f32) and double (f64). Built by build.py with ttt.c; no Python headers.
 * Layouts (all contiguous): qkv [B, T, 3C]; the fast inputs and the core's output head-major
 * [B, H, T, D] with C = H D; gates token-major [B, T, H]. Rows (b, t) split across `threads` threads;
 * sums over tokens (parameter gradients) go to one row of `partial` [threads, ...] per thread. */
#include "common.h"

#define DEFINE_LACT_KERNELS(T, SUF, EXP, SQRT)                                                         \
    static inline T sigmoid_##SUF(T x) {                                                               \
        x = x < (T)-CLAMP ? (T)-CLAMP : (x > (T)CLAMP ? (T)CLAMP : x);                                 \
        return (T)1 / ((T)1 + EXP(-x));                                                                \
    }                                                                                                  \
    /* silu'(x) = s (1 + x (1 - s)) with s = sigmoid(x) */                                             \
    static inline T silu_slope_##SUF(T x, T s) { return s * ((T)1 + x * ((T)1 - s)); }                \
    /* y[j] = l2(silu(x_j * scale[j] + offset[j])) per head for j = q, k; y[2] = silu(x_v); norms[b, t, \
     * j, h] = the L2 norm before the division (by norm + eps). y: [3, B, H, T, D] */                  \
    void lact_fast_inputs_##SUF(const T *qkv, const T *scale, const T *offset, int64_t B, int64_t n,    \
                                int64_t H, int64_t D, double eps, T *y, T *norms, int threads) {       \
        int64_t C = H * D, rows = B * n;                                                               \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && rows * C >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < rows; k++) {                                                           \
            int64_t b = k / n, t = k % n;                                                              \
            const T *row = qkv + k * 3 * C;                                                            \
            for (int64_t j = 0; j < 3; j++)                                                            \
                for (int64_t h = 0; h < H; h++) {                                                      \
                    int64_t c = j * C + h * D;                                                         \
                    const T *restrict x = row + c, *restrict sc = scale + c, *restrict of = offset + c; \
                    T *restrict out = y + (((j * B + b) * H + h) * n + t) * D;                         \
                    if (j == 2) {                                                                      \
                        _Pragma("omp simd")                                                            \
                        for (int64_t d = 0; d < D; d++) out[d] = x[d] * sigmoid_##SUF(x[d]);           \
                        continue;                                                                      \
                    }                                                                                  \
                    T ss = 0;                                                                          \
                    _Pragma("omp simd reduction(+ : ss)")                                              \
                    for (int64_t d = 0; d < D; d++) {                                                  \
                        T z = x[d] * sc[d] + of[d], a = z * sigmoid_##SUF(z);                          \
                        out[d] = a;                                                                    \
                        ss += a * a;                                                                   \
                    }                                                                                  \
                    T norm = SQRT(ss), r = (T)1 / (norm + (T)eps);                                     \
                    norms[(k * 2 + j) * H + h] = norm;                                                 \
                    for (int64_t d = 0; d < D; d++) out[d] *= r;                                       \
                }                                                                                      \
        }                                                                                              \
    }                                                                                                  \
    /* The backward of lact_fast_inputs for gradients gq, gk, gv [B, H, T, D]: d_qkv [B, T, 3C], and   \
     * per thread d_scale, d_offset [2, C] each into partial [threads, 4, C] (zeroed by the caller).   \
     * y = a r with r = 1 / (norm + eps): d a = r g - a r^2 <g, a> / norm (0 where norm is) */         \
    void lact_fast_inputs_backward_##SUF(const T *qkv, const T *scale, const T *offset, const T *norms, \
                                         const T *gq, const T *gk, const T *gv, int64_t B, int64_t n,  \
                                         int64_t H, int64_t D, double eps, T *d_qkv, T *partial,       \
                                         int threads) {                                                \
        int64_t C = H * D, rows = B * n;                                                               \
        _Pragma("omp parallel num_threads(threads) if (threads > 1 && rows * C >= PARALLEL_MIN)")     \
        {                                                                                              \
            T *d_scale = partial + (int64_t)omp_get_thread_num() * 4 * C, *d_offset = d_scale + 2 * C; \
            T z[D], s[D]; /* one head's pre-activations and their sigmoids */                          \
            _Pragma("omp for")                                                                         \
            for (int64_t k = 0; k < rows; k++) {                                                       \
                int64_t b = k / n, t = k % n;                                                          \
                const T *row = qkv + k * 3 * C;                                                        \
                T *drow = d_qkv + k * 3 * C;                                                           \
                for (int64_t j = 0; j < 3; j++)                                                        \
                    for (int64_t h = 0; h < H; h++) {                                                  \
                        int64_t c = j * C + h * D;                                                     \
                        const T *restrict g = (j == 0 ? gq : j == 1 ? gk : gv) + ((b * H + h) * n + t) * D; \
                        const T *restrict x = row + c;                                                 \
                        T *restrict dx = drow + c;                                                     \
                        if (j == 2) {                                                                  \
                            _Pragma("omp simd")                                                        \
                            for (int64_t d = 0; d < D; d++)                                            \
                                dx[d] = g[d] * silu_slope_##SUF(x[d], sigmoid_##SUF(x[d]));            \
                            continue;                                                                  \
                        }                                                                              \
                        const T *restrict sc = scale + c, *restrict of = offset + c;                   \
                        T *restrict ds = d_scale + c, *restrict dof = d_offset + c;                    \
                        T norm = norms[(k * 2 + j) * H + h], r = (T)1 / (norm + (T)eps), dot = 0;      \
                        _Pragma("omp simd reduction(+ : dot)")                                         \
                        for (int64_t d = 0; d < D; d++) {                                              \
                            z[d] = x[d] * sc[d] + of[d];                                               \
                            s[d] = sigmoid_##SUF(z[d]);                                                \
                            dot += g[d] * z[d] * s[d];                                                 \
                        }                                                                              \
                        T coef = norm > 0 ? dot * r * r / norm : (T)0;                                 \
                        _Pragma("omp simd")                                                            \
                        for (int64_t d = 0; d < D; d++) {                                              \
                            T dz = (g[d] * r - z[d] * s[d] * coef) * silu_slope_##SUF(z[d], s[d]);     \
                            dx[d] = dz * sc[d];                                                        \
                            ds[d] += dz * x[d];                                                        \
                            dof[d] += dz;                                                              \
                        }                                                                              \
                    }                                                                                  \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    /* y[b, t, h] = o r silu(gate) w per head, r = 1 / RMS(o) (eps inside the root), y: [B, T, H, D];  \
     * rms[b, h, t] = r */                                                                             \
    void lact_gated_rms_norm_##SUF(const T *o, const T *w, const T *gate, int64_t B, int64_t n,        \
                                   int64_t H, int64_t D, double eps, T *y, T *rms, int threads) {      \
        int64_t rows = B * n;                                                                          \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && rows * H * D >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < rows; k++) {                                                           \
            int64_t b = k / n, t = k % n;                                                              \
            for (int64_t h = 0; h < H; h++) {                                                          \
                int64_t i = (b * H + h) * n + t;                                                       \
                const T *restrict orow = o + i * D;                                                    \
                T *restrict out = y + (k * H + h) * D, ss = 0, gt = gate[k * H + h];                   \
                for (int64_t d = 0; d < D; d++) ss += orow[d] * orow[d];                               \
                T r = (T)1 / SQRT(ss / (T)D + (T)eps), rg = r * gt * sigmoid_##SUF(gt);                \
                rms[i] = r;                                                                            \
                for (int64_t d = 0; d < D; d++) out[d] = orow[d] * rg * w[d];                          \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    /* Its backward for dy [B, T, H, D]: d_o [B, H, T, D], d_gate [B, T, H], and per thread d_w [D]    \
     * into partial [threads, D] (zeroed by the caller). With u = dy w: d gate = silu'(gate) r <u, o>; \
     * d_w += dy o r g; d o = r g u - o g <u, o> r^3 / D */                                            \
    void lact_gated_rms_norm_backward_##SUF(const T *o, const T *w, const T *gate, const T *rms,       \
                                            const T *dy, int64_t B, int64_t n, int64_t H, int64_t D,   \
                                            T *d_o, T *d_gate, T *partial, int threads) {              \
        int64_t rows = B * n;                                                                          \
        _Pragma("omp parallel num_threads(threads) if (threads > 1 && rows * H * D >= PARALLEL_MIN)") \
        {                                                                                              \
            T *restrict d_w = partial + (int64_t)omp_get_thread_num() * D;                             \
            _Pragma("omp for")                                                                         \
            for (int64_t k = 0; k < rows; k++) {                                                       \
                int64_t b = k / n, t = k % n;                                                          \
                for (int64_t h = 0; h < H; h++) {                                                      \
                    int64_t i = (b * H + h) * n + t;                                                   \
                    const T *restrict orow = o + i * D, *restrict dyrow = dy + (k * H + h) * D;        \
                    T *restrict dorow = d_o + i * D, r = rms[i], gt = gate[k * H + h], dot = 0;        \
                    T s = sigmoid_##SUF(gt), g = gt * s, rg = r * g;                                   \
                    for (int64_t d = 0; d < D; d++) dot += dyrow[d] * w[d] * orow[d];                  \
                    d_gate[k * H + h] = dot * r * silu_slope_##SUF(gt, s);                             \
                    T coef = g * dot * r * r * r / (T)D;                                               \
                    for (int64_t d = 0; d < D; d++) {                                                  \
                        d_w[d] += dyrow[d] * orow[d] * rg;                                             \
                        dorow[d] = rg * dyrow[d] * w[d] - orow[d] * coef;                              \
                    }                                                                                  \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    /* The SwiGLU chunk step (ttt_mm.ops.lact.step), on rows of the products [a, b] = x W02^T: rows      \
     * [groups, rows, 2M] (a: the first M, b: the last M), [groups, rows, M] for dh-like terms; lr, dlr: \
     * [groups, rows, 3] with groups `lr_stride` apart. h = silu(a) b. */                             \
    void lact_swiglu_##SUF(const T *ab, int64_t groups, int64_t rows, int64_t M, T *h, int threads) {   \
        int64_t total = groups * rows;                                                                 \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && total * M >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < total; k++) {                                                          \
            const T *restrict a = ab + k * 2 * M, *restrict b = a + M;                                 \
            T *restrict out = h + k * M;                                                               \
            _Pragma("omp simd")                                                                        \
            for (int64_t m = 0; m < M; m++) out[m] = a[m] * sigmoid_##SUF(a[m]) * b[m];                \
        }                                                                                              \
    }                                                                                                  \
    /* The step's terms: P = [dh b silu'(a) lr0, dh silu(a) lr2] (G02 = P^T k) and h = silu(a) b. */   \
    void lact_swiglu_step_##SUF(const T *ab, const T *dh, const T *lr, int64_t lr_stride,              \
                                int64_t groups, int64_t rows, int64_t M, T *P, T *h, int threads) {    \
        int64_t total = groups * rows;                                                                 \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && total * M >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < total; k++) {                                                          \
            const T *restrict a = ab + k * 2 * M, *restrict b = a + M, *restrict d = dh + k * M;       \
            const T *l = lr + k / rows * lr_stride + k % rows * 3;                                     \
            T lr0 = l[0], lr2 = l[2];                                                                  \
            T *restrict p0 = P + k * 2 * M, *restrict p2 = p0 + M, *restrict out = h + k * M;          \
            _Pragma("omp simd")                                                                        \
            for (int64_t m = 0; m < M; m++) {                                                          \
                T sg = sigmoid_##SUF(a[m]), sa = a[m] * sg;                                            \
                p0[m] = d[m] * b[m] * silu_slope_##SUF(a[m], sg) * lr0;                                \
                p2[m] = d[m] * sa * lr2;                                                               \
                out[m] = sa * b[m];                                                                    \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    /* The outputs' backward: for [g, u] = q W02^T and d_hidden = d_out W1, dQ = [d_hidden u silu'(g), \
     * d_hidden silu(g)] (dq = dQ W02) and h = silu(g) u (dW1 = d_out^T h). */                         \
    void lact_swiglu_backward_##SUF(const T *gu, const T *dhid, int64_t groups, int64_t rows,          \
                                    int64_t M, T *dQ, T *h, int threads) {                             \
        int64_t total = groups * rows;                                                                 \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && total * M >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < total; k++) {                                                          \
            const T *restrict g = gu + k * 2 * M, *restrict u = g + M, *restrict d = dhid + k * M;     \
            T *restrict dg = dQ + k * 2 * M, *restrict du = dg + M, *restrict out = h + k * M;         \
            _Pragma("omp simd")                                                                        \
            for (int64_t m = 0; m < M; m++) {                                                          \
                T sg = sigmoid_##SUF(g[m]), s = g[m] * sg;                                             \
                dg[m] = d[m] * u[m] * silu_slope_##SUF(g[m], sg);                                      \
                du[m] = d[m] * s;                                                                      \
                out[m] = s * u[m];                                                                     \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    /* The step's backward (ttt_mm.ops.lact.step._step_backward), given dP = k dG02^T and dh_h = (v lr1) \
     * dG1: with da = dh b silu'(a), db = dh s (s = silu(a)), dda = dP0 lr0, ddb = dP2 lr2: P as in    \
     * lact_swiglu_step, dlr0 = <dP0, da>, dlr2 = <dP2, db>, d_dh = dda b silu'(a) + ddb s, and        \
     * dA = [d/da, d/db] = [dda dh b silu''(a) + (ddb dh + dh_h b) silu'(a), dda dh silu'(a) + dh_h s], \
     * silu''(a) = sig (1 - sig) (2 + a - 2 s). */                                                     \
    void lact_swiglu_step_backward_##SUF(const T *ab, const T *dh, const T *dP, const T *dh_h,         \
                                         const T *lr, int64_t lr_stride, int64_t groups, int64_t rows, \
                                         int64_t M, T *P, T *dA, T *d_dh, T *dlr, int64_t dlr_stride,  \
                                         int threads) {                                                \
        int64_t total = groups * rows;                                                                 \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1 && total * M >= PARALLEL_MIN)") \
        for (int64_t k = 0; k < total; k++) {                                                          \
            const T *restrict a = ab + k * 2 * M, *restrict b = a + M, *restrict d = dh + k * M;       \
            const T *restrict dp0 = dP + k * 2 * M, *restrict dp2 = dp0 + M, *restrict dhh = dh_h + k * M; \
            const T *l = lr + k / rows * lr_stride + k % rows * 3;                                     \
            T *dl = dlr + k / rows * dlr_stride + k % rows * 3;                                        \
            T lr0 = l[0], lr2 = l[2], sum0 = 0, sum2 = 0;                                              \
            T *restrict p0 = P + k * 2 * M, *restrict p2 = p0 + M, *restrict ddh = d_dh + k * M;       \
            T *restrict d_a = dA + k * 2 * M, *restrict d_b = d_a + M;                                 \
            _Pragma("omp simd reduction(+ : sum0, sum2)")                                              \
            for (int64_t m = 0; m < M; m++) {                                                          \
                T sg = sigmoid_##SUF(a[m]), s = a[m] * sg, slope = silu_slope_##SUF(a[m], sg);         \
                T curv = sg * ((T)1 - sg) * ((T)2 + a[m] - (T)2 * s);                                  \
                T da = d[m] * b[m] * slope, db = d[m] * s, dda = dp0[m] * lr0, ddb = dp2[m] * lr2;     \
                sum0 += dp0[m] * da;                                                                   \
                sum2 += dp2[m] * db;                                                                   \
                p0[m] = da * lr0;                                                                      \
                p2[m] = db * lr2;                                                                      \
                ddh[m] = dda * b[m] * slope + ddb * s;                                                 \
                d_a[m] = dda * d[m] * b[m] * curv + (ddb * d[m] + dhh[m] * b[m]) * slope;              \
                d_b[m] = dda * d[m] * slope + dhh[m] * s;                                              \
            }                                                                                          \
            dl[0] = sum0;                                                                              \
            dl[2] = sum2;                                                                              \
        }                                                                                              \
    }

DEFINE_LACT_KERNELS(float, f32, expf, sqrtf)
DEFINE_LACT_KERNELS(double, f64, exp, sqrt)
