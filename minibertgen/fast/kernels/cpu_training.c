/* CPU loops for the CPU tables (fast/native.py compiles this file at first use).
 *
 * Each loop makes one pass over its arrays and does, element by element, the float32
 * operations of the NumPy code it replaces, in the same order: compiled without
 * -ffast-math and with -ffp-contract=off (no fused multiply-add), every operation is
 * rounded once, as NumPy's float32 ufuncs round it, so the results are the same bits.
 * The sums (sum_of_squares, LayerNorm's means and column sums) are the exception: they
 * add in double, in sixteen running sums, where NumPy and BLAS add float32 in their own
 * orders.  fast/native.py checks each loop on a test array before it uses the library.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* optim.adamw_update on n elements: the reference's steps, in its order.
 *   w <- w decay                                    decay = 1 - lr wd
 *   m <- m + (g - m) one_minus_beta1                torch's lerp
 *   v <- v beta2 + (g g) one_minus_beta2
 *   w <- w - (m / (sqrt(v) / bias2_root + eps)) step_size
 */
void adamw_update(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                  float decay, float one_minus_beta1, float beta2, float one_minus_beta2, float bias2_root,
                  float eps, float step_size)
{
    for (int64_t i = 0; i < n; i++) {
        float grad = g[i];
        float mean = m[i] + (grad - m[i]) * one_minus_beta1;
        float square = v[i] * beta2 + (grad * grad) * one_minus_beta2;
        float denom = sqrtf(square) / bias2_root + eps;
        w[i] = w[i] * decay - (mean / denom) * step_size;
        m[i] = mean;
        v[i] = square;
    }
}

/* x <- x scale on n elements (clip_grad_norm_'s in-place multiply). */
void scale(float *restrict x, int64_t n, float factor)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] * factor;
}

/* fast/cpu.py's gelu_block on n elements, given e = exp(-x^2 / 2) (NumPy's exp, in `out`
 * on entry): with a = |x| and the erf polynomial's halved coefficients half_a[0..4]
 * (Horner's rule, highest first),
 *   t = 1 / (1 + a p_over_root2),  h = t (a1/2 + t (...)) e,  GELU(x) = max(x, 0) - a h,
 * and +inf at x = +inf (where a h is inf * 0). */
void gelu_forward(const float *restrict x, float *out, int64_t n, float p_over_root2, const float *restrict half_a)
{
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float a = fabsf(xi);
        float t = 1.0f / (a * p_over_root2 + 1.0f);
        float poly = t * half_a[4];
        poly = (poly + half_a[3]) * t;
        poly = (poly + half_a[2]) * t;
        poly = (poly + half_a[1]) * t;
        poly = (poly + half_a[0]) * t;
        float h = poly * out[i];
        float positive = xi > 0.0f ? xi : 0.0f;
        out[i] = xi == INFINITY ? INFINITY : positive - h * a;
    }
}

/* fast/cpu_training.py's gelu_backward_block on n elements, given e = exp(-z^2) (NumPy's
 * exp, in `dx` on entry): dL/dx = dL/dy (Phi(x) + x phi(x)),
 *   z = x inv_root2,  t = 1 / (1 + p |z|),
 *   erf|z| = 1 - t (a1 + t (a2 + ...)) e,  Phi = (1 + erf z) / 2,  x phi = x e inv_root_2pi. */
void gelu_backward(const float *restrict dout, const float *restrict x, float *dx, int64_t n,
                   float inv_root2, float p, const float *restrict erf_a, float inv_root_2pi)
{
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float e = dx[i];
        float t = 1.0f / (fabsf(xi * inv_root2) * p + 1.0f);
        float poly = t * erf_a[4];
        poly = (poly + erf_a[3]) * t;
        poly = (poly + erf_a[2]) * t;
        poly = (poly + erf_a[1]) * t;
        poly = (poly + erf_a[0]) * t;
        float phi_term = (e * xi) * inv_root_2pi;
        float cdf = (copysignf(1.0f - poly * e, xi) + 1.0f) * 0.5f;
        dx[i] = (cdf + phi_term) * dout[i];
    }
}

/* The sum of x[i]^2 over n elements, in double: sixteen running sums (element i adds to
 * sum i mod 16, each in order; then the sixteen are added), which vectorize without
 * reordering any one of them. */
double sum_of_squares(const float *restrict x, int64_t n)
{
    double sums[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            sums[j] += (double)x[i + j] * (double)x[i + j];
    for (; i < n; i++)
        sums[i % 16] += (double)x[i] * (double)x[i];
    double total = 0.0;
    for (int j = 0; j < 16; j++)
        total += sums[j];
    return total;
}

/* The mean of n float32 values (y NULL) or of the products x[i] * y[i] (each rounded to
 * float32), summed in double in sixteen running sums as sum_of_squares does, rounded once. */
static float row_mean(const float *restrict x, const float *restrict y, int64_t n)
{
    double sums[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            sums[j] += y ? (double)(x[i + j] * y[i + j]) : (double)x[i + j];
    for (; i < n; i++)
        sums[i % 16] += y ? (double)(x[i] * y[i]) : (double)x[i];
    double total = 0.0;
    for (int j = 0; j < 16; j++)
        total += sums[j];
    return (float)(total / (double)n);
}

/* fast/cpu.py's _normalise_rows on rows [rows, hidden] in place: per row,
 *   x <- x - mean(x);  x <- x / sqrt(mean(x^2) + eps);  x <- x weight + bias
 * (the means summed in double, each step rounded to float32 as NumPy's). */
void layer_norm_rows(float *restrict work, int64_t rows, int64_t hidden, const float *restrict weight,
                     const float *restrict bias, float eps)
{
    for (int64_t r = 0; r < rows; r++) {
        float *x = work + r * hidden;
        float mean = row_mean(x, NULL, hidden);
        for (int64_t i = 0; i < hidden; i++)
            x[i] = x[i] - mean;
        float scale = sqrtf(row_mean(x, x, hidden) + eps);
        for (int64_t i = 0; i < hidden; i++)
            x[i] = (x[i] / scale) * weight[i] + bias[i];
    }
}

/* fast/cpu_training.py's layer_norm_backward on rows [rows, hidden]: s = x (+ residual, or
 * NULL), xhat = (s - mean(s)) rstd, rstd = 1 / sqrt(mean((s - mean)^2) + eps), g = dout weight:
 *   ds = ((g - mean(g)) - xhat mean(g xhat)) rstd          into ds (scratch: xhat, g of hidden each)
 *   dweight += dout xhat,  dbias += dout                    (double sums over these rows)   */
void layer_norm_backward_rows(const float *restrict dout, const float *restrict x, const float *residual,
                              const float *restrict weight, float eps, int64_t rows, int64_t hidden,
                              float *restrict ds, float *restrict xhat, float *restrict g,
                              double *restrict dweight, double *restrict dbias)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *dy = dout + r * hidden, *xr = x + r * hidden;
        float *out = ds + r * hidden;
        for (int64_t i = 0; i < hidden; i++)
            xhat[i] = residual ? xr[i] + residual[r * hidden + i] : xr[i];
        float mean = row_mean(xhat, NULL, hidden);
        for (int64_t i = 0; i < hidden; i++)
            xhat[i] = xhat[i] - mean;
        float rstd = 1.0f / sqrtf(row_mean(xhat, xhat, hidden) + eps);
        for (int64_t i = 0; i < hidden; i++) {
            xhat[i] = xhat[i] * rstd;
            dweight[i] += dy[i] * xhat[i];
            dbias[i] += dy[i];
            g[i] = dy[i] * weight[i];
        }
        float projection = row_mean(g, xhat, hidden);
        float mean_g = row_mean(g, NULL, hidden);
        for (int64_t i = 0; i < hidden; i++)
            out[i] = ((g[i] - mean_g) - xhat[i] * projection) * rstd;
    }
}
