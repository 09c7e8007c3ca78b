"""Fused CUDA kernels for the CuPy backend: the same math as ops.py, in fewer launches.

On a GPU, a batch-1 decode step is not limited by arithmetic but by how many kernels
Python launches: CuPy spends ~10-30 us of host time per array operation, and the
readable LayerNorm in ops.py is a dozen of them (astype, mean, subtract, multiply,
mean, add, sqrt, divide, multiply, add, astype), softmax half a dozen, erf-GELU fifteen.
Each kernel here does one of those whole functions in one launch, computing in float32
whatever the storage dtype (as torch's CUDA kernels do for float16):

* :func:`layer_norm` -- LayerNorm of (x + residual), one thread block per row;
* :func:`masked_softmax` -- softmax(scores / scale + mask), one warp per row;
* :func:`gelu` -- erf or tanh GELU, elementwise;
* :func:`few_rows_linear` -- ``x @ W.T + b`` for a handful of rows (a decode step), one
  warp per output feature streaming its weight row once for all rows, bias included;
* :func:`one_query_scores` / :func:`one_query_values` -- attention of a single new
  query: ``q . k`` for every key, and ``sum_k p_k v_k``.

* :func:`matmul_nt` -- ``x @ W.T`` for many rows as one direct cublasGemmEx call.

The last four replace or slim down cuBLAS calls in the decode step, for two reasons: a cuBLAS call
through CuPy costs ~30-50 us of host time where a raw kernel costs ~10, and CuPy refuses
to record cuBLAS calls in a CUDA graph ("calling cuBLAS API during stream capture is
currently unsupported"), so a capturable step (cuda_graph.py) must not make any.
``matmul_nt`` still calls cuBLAS (for the encoder's large products) but skips
``cupy.matmul``'s general-purpose dispatch, which is most of a layer's host time.

fast/cuda.py routes the reference ops to these for a model on a GPU, unless the model
runs the readable path (``model.use_fast_kernels(False)``, for teaching and for checking
one against the other).  Kernels are compiled on first use (NVRTC) and
cached by CuPy on disk.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["layer_norm", "masked_softmax", "gelu", "matmul_nt", "few_rows_linear", "one_query_scores", "one_query_values",
           "supports", "MAX_FEW_ROWS"]

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float16): "HALF"}
# How float16 is spelled in a RawKernel: CUDA's own header where NVRTC finds it, else the
# float16 class CuPy ships for its ElementwiseKernels.  The first that compiles is kept.
_HALF_SPELLINGS = (("#include <cuda_fp16.h>", "__half"), ("#include <cupy/carray.cuh>", "float16"))

_BLOCK_SUM = r"""
// Sum of one float per thread over the whole block (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v, float* shared) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();                      // `shared` may still be read by a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? shared[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
        if (lane == 0) shared[32] = v;
    }
    __syncthreads();
    return shared[32];
}
"""

_LAYER_NORM = r"""
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
"""

_SOFTMAX = r"""
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
"""

_FEW_ROWS_LINEAR = r"""
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
"""

_ONE_QUERY = r"""
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
"""

MAX_FEW_ROWS = 32  # rows beyond this go to cuBLAS (and a decode step with more is not graphed)

_GELU_BODY = {
    # 0.5 v (1 + erf(v / sqrt 2)): the exact GELU, with CUDA's float32 erff
    "erf": "float v = (float)x; y = (T)(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));",
    # 0.5 v (1 + tanh(sqrt(2 / pi) (v + 0.044715 v^3))): the tanh approximation
    "tanh": "float v = (float)x; "
            "y = (T)(0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v))));",
}


def supports(dtype) -> bool:
    """The fused kernels handle float32 and float16 storage."""
    return np.dtype(dtype) in _CTYPES


def _threads_for(n: int) -> int:
    """Threads per LayerNorm row: about 4 elements each, a whole number of warps, at most 1024."""
    return min(1024, max(32, ((n + 3) // 4 + 31) // 32 * 32))


_NULL = np.uint64(0)  # a null pointer argument (no residual / no mask)


@functools.lru_cache(maxsize=None)
def _raw_kernel(source: str, name: str, **types):
    import cupy

    for key, value in types.items():
        source = source.replace(key, value)
    source = source.replace("BLOCK_SUM", _BLOCK_SUM)
    errors = []
    for header, half in _HALF_SPELLINGS:
        kernel = cupy.RawKernel(source.replace("HALF_HEADER", header).replace("HALF", half), name)
        try:
            kernel.compile() if hasattr(kernel, "compile") else kernel.kernel  # compile now
            return kernel
        except Exception as exc:  # NVRTC could not find or parse this spelling
            errors.append(f"{header}: {exc}")
    raise RuntimeError(f"cannot compile the {name} kernel: " + " | ".join(errors))


def layer_norm(x, weight, bias, eps, residual=None, add=None):
    """LayerNorm over the last axis of ``x`` (+ ``residual``), in one kernel; returns a new array.
    ``add``: a bias [n] added to x (and rounded to its dtype) first, as a dense layer's."""
    import cupy

    x = cupy.ascontiguousarray(x)
    if residual is not None:
        residual = cupy.ascontiguousarray(residual, dtype=x.dtype)
    n = x.shape[-1]
    out = cupy.empty_like(x)
    rows = x.size // n if n else 0
    if rows:
        kernel = _raw_kernel(_LAYER_NORM, "layer_norm", TYPE=_CTYPES[x.dtype], ADDBIAS="0" if add is None else "1")
        args = (x, _NULL if residual is None else residual, cupy.ascontiguousarray(weight, dtype=x.dtype),
                cupy.ascontiguousarray(bias, dtype=x.dtype), out, np.int32(n), np.float32(eps))
        if add is not None:
            args += (cupy.ascontiguousarray(add, dtype=x.dtype),)
        kernel((rows,), (_threads_for(n),), args)
    return out


def masked_softmax(scores, mask=None, divisor=1.0, out_dtype=None):
    """softmax(scores / divisor + mask) over the last axis of [batch, heads, queries, keys] scores.

    ``mask`` is additive, [batch, 1, 1 or queries, keys]; the result has ``out_dtype``
    (default: the scores' dtype).
    """
    import cupy

    scores = cupy.ascontiguousarray(scores)
    batch, heads, queries, keys = scores.shape
    out = cupy.empty(scores.shape, dtype=out_dtype or scores.dtype)
    mask_queries = 1
    if mask is not None:
        mask = cupy.ascontiguousarray(cupy.broadcast_to(mask, (batch, 1, mask.shape[2], keys)), dtype=scores.dtype)
        mask_queries = mask.shape[2]
    rows = batch * heads * queries
    if rows and keys:
        kernel = _raw_kernel(_SOFTMAX, "masked_softmax", OUTTYPE=_CTYPES[out.dtype], TYPE=_CTYPES[scores.dtype])
        warps = 4
        kernel(((rows + warps - 1) // warps,), (32 * warps,),
               (scores, _NULL if mask is None else mask, out, np.int32(rows), np.int32(keys), np.int32(heads), np.int32(queries),
                np.int32(mask_queries), np.float32(divisor), np.float32(np.finfo(scores.dtype).min)))
    return out


@functools.lru_cache(maxsize=None)
def _gelu_kernel(form: str):
    import cupy

    return cupy.ElementwiseKernel("T x", "T y", _GELU_BODY[form], f"minibertgen_gelu_{form}")


def gelu(x, form="erf"):
    """GELU of every element, computed in float32: ``form`` "erf" (exact) or "tanh"."""
    return _gelu_kernel(form)(x)


def few_rows_linear_fits(x2, weight) -> bool:
    """Can few_rows_linear take rows x2 [rows, in] times weight [out, in]?"""
    vec = 16 // x2.dtype.itemsize
    return (supports(x2.dtype) and weight.dtype == x2.dtype and 0 < x2.shape[0] <= MAX_FEW_ROWS
            and x2.shape[1] % vec == 0 and weight.flags.c_contiguous and weight.data.ptr % 16 == 0)


def few_rows_linear(x2, weight, bias=None):
    """x2 [rows, in] @ weight.T [in, out] (+ bias) -> [rows, out]; see few_rows_linear_fits."""
    import cupy

    rows, width = x2.shape
    x2 = cupy.ascontiguousarray(x2)
    if x2.data.ptr % 16:
        x2 = x2.copy()  # a view at an odd offset: 16-byte loads need an aligned start
    out_features = weight.shape[0]
    y = cupy.empty((rows, out_features), dtype=x2.dtype)
    capacity = next(r for r in (1, 2, 4, 8, 16, 32) if r >= rows)  # unrolled accumulators per lane
    kernel = _raw_kernel(_FEW_ROWS_LINEAR, "few_rows_linear", TYPE=_CTYPES[x2.dtype], MAXROWS=str(capacity))
    warps = 4
    kernel(((out_features + warps - 1) // warps,), (32 * warps,),
           (x2, weight, _NULL if bias is None else cupy.ascontiguousarray(bias, dtype=x2.dtype), y,
            np.int32(rows), np.int32(width), np.int32(out_features)))
    return y


def _strides(a):
    return [np.int64(s // a.itemsize) for s in a.strides]


def one_query_scores(query, key):
    """query [batch, heads, 1, d] . key [batch, heads, keys, d] -> scores [batch, heads, 1, keys]."""
    import cupy

    batch, heads, _, d = query.shape
    keys = key.shape[2]
    scores = cupy.empty((batch, heads, 1, keys), dtype=query.dtype)
    total = batch * heads * keys
    if total:
        qs, ks = _strides(query), _strides(key)
        kernel = _raw_kernel(_ONE_QUERY, "one_query_scores", TYPE=_CTYPES[query.dtype])
        warps = 4
        kernel(((total + warps - 1) // warps,), (32 * warps,),
               (query, key, scores, np.int32(heads), np.int32(keys), np.int32(d), qs[0], qs[1], ks[0], ks[1],
                ks[2], np.int32(total)))
    return scores


def one_query_values(probs, value):
    """probs [batch, heads, 1, keys] @ value [batch, heads, keys, d] -> [batch, heads, 1, d]."""
    import cupy

    batch, heads, _, keys = probs.shape
    d = value.shape[3]
    probs = cupy.ascontiguousarray(probs, dtype=value.dtype)
    out = cupy.empty((batch, heads, 1, d), dtype=value.dtype)
    if batch * heads:
        vs = _strides(value)
        kernel = _raw_kernel(_ONE_QUERY, "one_query_values", TYPE=_CTYPES[value.dtype])
        kernel((batch * heads,), (min(1024, max(32, (d + 31) // 32 * 32)),),
               (probs, value, out, np.int32(heads), np.int32(keys), np.int32(d), vs[0], vs[1], vs[2]))
    return out


# cuBLAS enum values (library_types.h / cublas_api.h), in case a CuPy build does not export them
_OP_N, _OP_T, _COMPUTE_32F, _GEMM_DEFAULT, _POINTER_MODE_HOST = 0, 1, 68, -1, 0
_CUDA_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 2}  # CUDA_R_32F, CUDA_R_16F
_ONE, _ZERO = np.ones(1, dtype=np.float32), np.zeros(1, dtype=np.float32)  # alpha, beta (float32 compute)
_DIRECT_GEMM = {"ok": True}


def matmul_nt(x2, weight):
    """x2 [rows, in] @ weight.T -> [rows, out] (float32 accumulation) as one cublasGemmEx call.

    Row-major y = x W^T is, read column-major, y^T = W^T' x^T': cuBLAS computes
    C [out, rows] = op(A) B with A = W stored [in, out] (transposed: op T) and B = x
    stored [in, rows].  If the direct call is unavailable, falls back to cupy.matmul.
    """
    import cupy

    if _DIRECT_GEMM["ok"] and supports(x2.dtype) and weight.dtype == x2.dtype and weight.flags.c_contiguous:
        try:
            from cupy_backends.cuda.libs import cublas

            x2 = cupy.ascontiguousarray(x2)
            rows, width = x2.shape
            out_features = weight.shape[0]
            y = cupy.empty((rows, out_features), dtype=x2.dtype)
            kind = _CUDA_TYPES[x2.dtype]
            handle = cupy.cuda.device.get_cublas_handle()
            cublas.setPointerMode(handle, _POINTER_MODE_HOST)
            cublas.gemmEx(handle, _OP_T, _OP_N, out_features, rows, width, _ONE.ctypes.data, weight.data.ptr, kind,
                          width, x2.data.ptr, kind, width, _ZERO.ctypes.data, y.data.ptr, kind, out_features,
                          _COMPUTE_32F, _GEMM_DEFAULT)
            return y
        except (ImportError, AttributeError, TypeError):  # a CuPy without these bindings
            _DIRECT_GEMM["ok"] = False
    return x2 @ weight.T
