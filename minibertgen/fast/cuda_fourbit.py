"""x @ W.T for a few rows straight from 4-bit codes, in one CUDA kernel (CuPy only).

Why: a decode step multiplies one row (greedy) or a few (beam search) by every weight,
so where it is bound by the bytes of weight it reads, a 4-bit weight (an eighth of a
float32 one, a quarter of a float16 one) should decode faster, not only fit in less
memory.  (Where a graphed step is bound by its number of kernels instead, as README's
GPU section finds for the float16 one, 4 bits alone buy less.)  The route in quantization/weights.py cannot show that: it expands the
codes into a float32 scratch weight (a full-size write and read), copies it to float16
for cuBLAS and only then multiplies, so it moves more bytes than the float16 weight would.
And its cuBLAS call cannot be recorded in a CUDA graph (cuda_graph.py), so a quantized
model's decode step was not graphed at all.

The kernel here reads each packed byte once and never writes a weight: one warp per
output feature o walks W's row o, each lane taking 8 codes (one 32-bit word) at a time.
For each code it looks up its level in the 16-entry code book, multiplies by its block's
scale (the same float32 product dequantize_4bit forms) and adds level * x[r, i] into one
float32 sum per input row r.  A warp shuffle adds the lanes' sums.  With a float16
compute dtype the weight and the input are rounded to float16 first, as the CPU path's
emulated float16 GEMM does, so both round the same operands; only the order of the
float32 additions differs.

It takes what the decode step gives it: rows <= MAX_FEW_ROWS, ``in`` a multiple of 8 and a
block size that is a multiple of 8 (so the 8 codes of a word share one block scale:
bitsandbytes' block size is 64), float32 or float16 activations, float32 or float16
compute.  Anything else (the prompt's many rows, odd shapes, int8) keeps the
quantization/ route.  Under double quantization the block scales are decoded once per
weight and kept on the device (4 bytes per 64 weights: 0.5 bit per weight more than the
8-bit scales hold).

Switched off by default until it has run on a GPU: ``MINIBERTGEN_GPU_PREVIEW=1`` turns it
on (fast/preview.py; tests/fast/test_gpu.py and benchmarks/bench_gpu.py turn it on themselves).

The kernel is written without early returns, so that every thread of a block reaches
every shuffle; tests/fast/kernel_emulator.py runs this very source on the CPU, one host thread
per CUDA thread, and checks it against quantization/ (tests/fast/test_cuda_fourbit.py).
"""
from __future__ import annotations

import weakref

import numpy as np

from ..quantization.fourbit import code_book
from ..quantization.weights import QuantizedWeight4bit
from . import preview
from .cuda_kernels import MAX_FEW_ROWS, _CTYPES, _NULL, _raw_kernel

__all__ = ["fits", "shape_fits", "few_rows_linear_4bit", "SOURCE", "WARPS"]

SOURCE = r"""
HALF_HEADER
typedef XTYPE TX;             // the activations' dtype (float or half), also the output's
#define ROWS MAXROWS          // unrolled sums per lane: the smallest of 1, 2, 4, 8, 16, 32 >= rows
#define ROUND16 ROUNDING      // 1: float16 compute (operands rounded to float16), 0: float32

__device__ __forceinline__ float in_compute(float v) {
#if ROUND16
    return (float)(HALF)v;    // round to float16 and back, as the CPU path's float16 GEMM does
#else
    return v;
#endif
}

// y[r, o] = sum_i x[r, i] W[o, i] (+ bias[o]) for r < rows, where W[o, i] is
// code[nibble] * scales[block] for the flat position f = o * in + i: nibble f of `packed`
// (byte f / 2; the high half for even f), block f / blocksize.  One warp per output o.
extern "C" __global__ void few_rows_linear_4bit(const TX* x, const unsigned int* packed, const float* scales,
                                                const float* code, const TX* bias, TX* y, const int rows,
                                                const int in, const int out, const int blocksize) {
    __shared__ float levels[16];
    if (threadIdx.x < 16) levels[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const bool active = o < out;  // no early return: the whole warp reaches the shuffles
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;
    if (active) {
        for (int i = lane * 8; i < in; i += 32 * 8) {
            const size_t flat = (size_t)o * in + i;          // a multiple of 8: word flat / 8
            const unsigned int word = packed[flat / 8];      // 4 bytes, 8 codes, little-endian
            const float scale = scales[flat / blocksize];    // one block holds all 8 (blocksize % 8 == 0)
            float w[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const unsigned int byte = (word >> (8 * (e / 2))) & 0xFFu;
                const unsigned int nibble = (e % 2 == 0) ? (byte >> 4) : (byte & 0x0Fu);
                w[e] = in_compute(levels[nibble] * scale);
            }
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                if (r < rows) {
                    const TX* xr = x + (size_t)r * in + i;
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[r] += w[e] * in_compute((float)xr[e]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        if (r < rows) {
            float v = acc[r];
            for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
            if (lane == 0 && active) {
                TX result = (TX)in_compute(v);               // the product in the compute dtype, then x's
                if (bias) result = (TX)((float)result + (float)bias[o]);
                y[(size_t)r * out + o] = result;
            }
        }
    }
}
"""

WARPS = 4  # output features per thread block

_ROUNDING = {np.dtype(np.float32): "0", np.dtype(np.float16): "1"}
_SCALES = weakref.WeakKeyDictionary()  # QuantizedWeight4bit -> its float32 block scales on the device
_CODES = {}  # (quant_type, device id) -> the 16 levels on the device


def shape_fits(weight, rows=1, dtype=np.float32) -> bool:
    """Does the kernel handle this weight for ``rows`` rows of ``dtype`` activations?  A 4-bit
    weight whose rows split into whole 8-code words sharing a block scale, a compute dtype
    of float32 or float16, at most MAX_FEW_ROWS rows (cuda_graph.py asks this of every weight).
    Always False while the preview kernels are switched off (preview.py)."""
    return (preview.enabled() and isinstance(weight, QuantizedWeight4bit) and np.dtype(dtype) in _CTYPES
            and np.dtype(weight.dtype) in _ROUNDING and 0 < rows <= MAX_FEW_ROWS
            and weight.shape[1] % 8 == 0 and weight.q.blocksize % 8 == 0)


def fits(x2, weight) -> bool:
    """Can few_rows_linear_4bit take rows x2 [rows, in] (CuPy) times this quantized weight?"""
    if not shape_fits(weight, x2.shape[0], x2.dtype):
        return False
    packed = weight.q.packed
    return type(packed).__module__.startswith("cupy") and packed.flags.c_contiguous and packed.data.ptr % 4 == 0


def _block_scales(weight):
    scales = _SCALES.get(weight)
    if scales is None:  # decoded once: the first (eager) decode step, before any graph is captured
        import cupy

        scales = _SCALES[weight] = cupy.ascontiguousarray(weight.q.block_scales(), dtype=cupy.float32)
    return scales


def _code(quant_type):
    import cupy

    key = (quant_type, cupy.cuda.Device().id)
    if key not in _CODES:
        _CODES[key] = cupy.asarray(code_book(quant_type), dtype=cupy.float32)  # [16]
    return _CODES[key]


def few_rows_linear_4bit(x2, weight, bias=None):
    """x2 [rows, in] @ W.T (+ bias) -> [rows, out] in x2's dtype; see :func:`fits`."""
    import cupy

    rows, width = x2.shape
    x2 = cupy.ascontiguousarray(x2)
    out_features = weight.shape[0]
    y = cupy.empty((rows, out_features), dtype=x2.dtype)
    capacity = next(r for r in (1, 2, 4, 8, 16, 32) if r >= rows)
    kernel = _raw_kernel(SOURCE, "few_rows_linear_4bit", XTYPE=_CTYPES[np.dtype(x2.dtype)], MAXROWS=str(capacity),
                         ROUNDING=_ROUNDING[np.dtype(weight.dtype)])
    bias = _NULL if bias is None else cupy.ascontiguousarray(bias, dtype=x2.dtype)
    kernel(((out_features + WARPS - 1) // WARPS,), (32 * WARPS,),
           (x2, weight.q.packed, _block_scales(weight), _code(weight.q.quant_type), bias, y,
            np.int32(rows), np.int32(width), np.int32(out_features), np.int32(weight.q.blocksize)))
    return y
