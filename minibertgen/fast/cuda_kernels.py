"""Fused CUDA kernels for the CuPy backend: the same math as ops.py, in fewer launches.

(Their CUDA sources are the files in kernels/ beside this module; this module reads them
and compiles each for the dtypes it is asked for.)

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
from pathlib import Path

import numpy as np

__all__ = ["layer_norm", "masked_softmax", "gelu", "matmul_nt", "few_rows_linear", "one_query_scores", "one_query_values",
           "supports", "MAX_FEW_ROWS"]


def _source(name: str) -> str:
    """A kernel's CUDA source, kept beside this module in kernels/ (package data)."""
    return (Path(__file__).parent / "kernels" / name).read_text(encoding="utf-8")


_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float16): "HALF"}
# How float16 is spelled in a RawKernel: CUDA's own header where NVRTC finds it, else the
# float16 class CuPy ships for its ElementwiseKernels.  The first that compiles is kept.
_HALF_SPELLINGS = (("#include <cuda_fp16.h>", "__half"), ("#include <cupy/carray.cuh>", "float16"))

_BLOCK_SUM = _source("block_sum.cu")

_LAYER_NORM = _source("layer_norm.cu")

_SOFTMAX = _source("masked_softmax.cu")

_FEW_ROWS_LINEAR = _source("few_rows_linear.cu")

_ONE_QUERY = _source("one_query.cu")

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
