
HALF_HEADER
typedef TYPE T;
#define ROWS MAXROWS
// y[r, o] = sum_i x[r, i] W[o, i] + bias[o] for r < rows (rows <= ROWS).  One warp per output
// feature o: its 32 lanes stream W's row o in 16-byte loads (read once for all rows) and keep
// one float32 partial sum per input row; a warp shuffle adds the lanes' sums.  Needs `in` to
// be a multiple of 16 / sizeof(T) and 16-byte aligned rows (checked by the caller).
extern "C" __global__ void few_rows_linear(const T* x, const T* W, const T* bias, T* y,
                                           const int rows, const int in, const int out) {
    const int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (o >= out) return;
    const int vec = 16 / sizeof(T);
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;
    const T* w = W + (size_t)o * in;
    for (int i = lane * vec; i < in; i += 32 * vec) {
        const float4 wpack = *reinterpret_cast<const float4*>(w + i);
        const T* wv = reinterpret_cast<const T*>(&wpack);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            if (r < rows) {
                const float4 xpack = *reinterpret_cast<const float4*>(x + (size_t)r * in + i);
                const T* xv = reinterpret_cast<const T*>(&xpack);
#pragma unroll
                for (int e = 0; e < 16 / sizeof(T); ++e) acc[r] += (float)wv[e] * (float)xv[e];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        if (r < rows) {
            float v = acc[r];
            for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
            if (lane == 0) y[(size_t)r * out + o] = (T)(v + (bias ? (float)bias[o] : 0.0f));
        }
    }
}
