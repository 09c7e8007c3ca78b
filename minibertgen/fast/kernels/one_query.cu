
HALF_HEADER
typedef TYPE T;
// scores[b, h, 0, j] = q[b, h, 0, :] . k[b, h, j, :]; one warp per (b, h, j).  Strides in elements.
extern "C" __global__ void one_query_scores(const T* q, const T* k, T* scores, const int heads, const int keys,
                                            const int d, const long long qsb, const long long qsh,
                                            const long long ksb, const long long ksh, const long long ksj,
                                            const int total) {
    const int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (w >= total) return;
    const int j = w % keys, bh = w / keys, b = bh / heads, h = bh % heads;
    const T* qrow = q + b * qsb + h * qsh;
    const T* krow = k + b * ksb + h * ksh + j * ksj;
    float acc = 0.0f;
    for (int i = lane; i < d; i += 32) acc += (float)qrow[i] * (float)krow[i];
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    if (lane == 0) scores[w] = (T)acc;
}
// out[b, h, 0, :] = sum_j p[b, h, 0, j] v[b, h, j, :]; one block per (b, h), threads over the head dim.
extern "C" __global__ void one_query_values(const T* p, const T* v, T* out, const int heads, const int keys,
                                            const int d, const long long vsb, const long long vsh,
                                            const long long vsj) {
    const int bh = blockIdx.x, b = bh / heads, h = bh % heads;
    const T* prow = p + (size_t)bh * keys;
    const T* vbase = v + b * vsb + h * vsh;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < keys; ++j) acc += (float)prow[j] * (float)vbase[j * vsj + i];
        out[(size_t)bh * d + i] = (T)acc;
    }
}
