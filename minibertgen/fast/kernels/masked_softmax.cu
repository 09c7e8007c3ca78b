
HALF_HEADER
typedef TYPE T;      // scores and mask
typedef OUTTYPE U;   // probabilities
// probs[row] = softmax(scores[row] / divisor + mask[row]) over the last axis; one warp per row.  scores [batch, heads, queries, keys] contiguous; mask [batch, 1, mask_queries,
// keys] (mask_queries is 1 or queries) or absent.  Float32 throughout, as ops.masked_softmax;
// `lowest` is the mask dtype's most negative value: a masked score is exactly that (as
// ops.masked_softmax explains), so a fully masked row is uniform in every dtype.
__device__ __forceinline__ float masked_score(const T* scores, const T* mrow, size_t base, int j,
                                              float divisor, float lowest) {
    float v = (float)scores[base + j] / divisor;
    if (!mrow) return v;
    const float m = (float)mrow[j];
    return m == lowest ? lowest : v + m;
}
extern "C" __global__ void masked_softmax(const T* scores, const T* mask, U* probs, const int rows,
                                          const int keys, const int heads, const int queries,
                                          const int mask_queries, const float divisor, const float lowest) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t base = (size_t)row * keys;
    const T* mrow = 0;
    if (mask) {
        const int q = row % queries, b = row / (heads * queries);
        mrow = mask + ((size_t)b * mask_queries + (mask_queries == 1 ? 0 : q)) * keys;
    }
    float largest = __int_as_float(0xff800000);  // -infinity
    for (int j = lane; j < keys; j += 32)
        largest = fmaxf(largest, masked_score(scores, mrow, base, j, divisor, lowest));
    for (int offset = 16; offset > 0; offset >>= 1)
        largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    float total = 0.0f;
    for (int j = lane; j < keys; j += 32)
        total += expf(masked_score(scores, mrow, base, j, divisor, lowest) - largest);
    for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
    for (int j = lane; j < keys; j += 32)
        probs[base + j] = (U)(expf(masked_score(scores, mrow, base, j, divisor, lowest) - largest) / total);
}
