
HALF_HEADER
typedef TYPE T;
#define HAS_ADD ADDBIAS  // 1: the variant that also adds a bias to x first (fast/cuda.py's _add_and_norm)
BLOCK_SUM
// out[row] = (v - mean) / sqrt(var + eps) * gamma + beta, with v = x[row] (+ residual[row]);
// with HAS_ADD, v = round_T(x[row] + add) (+ residual[row]): a dense layer's bias added and
// stored as the readable path stores it.  One block per row, statistics in float32 (two
// passes over the row: mean, then variance).
#if HAS_ADD
#define VALUE(j) ((float)(T)((float)x[base + (j)] + (float)add[(j)]) + (residual ? (float)residual[base + (j)] : 0.0f))
#else
#define VALUE(j) ((float)x[base + (j)] + (residual ? (float)residual[base + (j)] : 0.0f))
#endif
extern "C" __global__ void layer_norm(const T* x, const T* residual, const T* gamma, const T* beta,
                                      T* out, const int n, const float eps
#if HAS_ADD
                                      , const T* add
#endif
                                      ) {
    __shared__ float shared[33];
    const size_t base = (size_t)blockIdx.x * n;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        sum += VALUE(j);
    const float mean = block_sum(sum, shared) / n;
    float squares = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float d = VALUE(j) - mean;
        squares += d * d;
    }
    const float inv_std = 1.0f / sqrtf(block_sum(squares, shared) / n + eps);
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float v = VALUE(j);
        out[base + j] = (T)((v - mean) * inv_std * (float)gamma[j] + (float)beta[j]);
    }
}
