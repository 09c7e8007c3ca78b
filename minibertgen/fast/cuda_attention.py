"""Attention of many queries at once (the encoder, a prompt) in one CUDA kernel (CuPy only).

Why: the GPU encoder is bound by host time, about 25 kernel launches per layer at
~10-40 us each (README, "On an NVIDIA GPU").  The readable attention is five or six of
them: q . k^T (cuBLAS, after copying the split-heads views to contiguous arrays), the
masked softmax, p . v (cuBLAS), and the copy that merges the heads back.  The kernel
here does all of attention.attend in one launch:

* one warp per (batch, head, query) row; its lanes take the keys in turn, each lane a
  whole dot product q . k_j summed in float32 and rounded to the model dtype (what the
  readable path's product returns), then scaled, masked and soft-maxed exactly as
  cuda_kernels.masked_softmax does (float32, a masked score is the dtype's minimum);
* the probabilities, rounded to the value dtype as the readable path rounds them, are
  written out (attend returns them) and kept in shared memory, and the lanes then take
  the output features in turn: context[e] = sum_j p_j v[j, e] in float32, rounded to the
  model dtype;
* the queries, keys and values are read through their strides (the split-heads views of
  the projections, no copies), and the context is written as [batch, queries, heads, d],
  so the transpose back that merge_heads makes is a view, not a copy.

It covers what attend does without relative positions, a head mask or training's
activation record, with at most MAX_KEYS keys (BERT's 512 positions) and float32 or
float16 storage; anything else keeps the readable attend (cuda.py).

Switched off by default until it has run on a GPU: ``MINIBERTGEN_GPU_PREVIEW=1`` turns
it on, with the fused 4-bit kernel (cuda_fourbit.py).  Written without early returns
and with block-wide barriers only, so tests/fast/kernel_emulator.py can run this source on the
CPU against the readable attend (tests/fast/test_cuda_attention.py).
"""
from __future__ import annotations

import numpy as np

from . import preview
from .cuda_kernels import _CTYPES, _NULL, _raw_kernel

__all__ = ["fits", "prefill_attention", "SOURCE", "WARPS", "MAX_KEYS"]

MAX_KEYS = 512  # probabilities kept in shared memory per warp: 4 warps x 512 floats = 8 KiB
WARPS = 4

SOURCE = r"""
HALF_HEADER
typedef TYPE T;      // queries, keys, values, mask and context
typedef OUTTYPE U;   // probabilities (the value dtype)
#define WARPS NWARPS
#define MAX_KEYS NMAXKEYS
// For row = (b, h, i): probs[b, h, i, :] = softmax(round_T(q . k_j) / divisor + mask[b, 0, i or 0, j])
// and context[b, i, h, :] = sum_j probs_j v_j.  query/key/value are read through element
// strides (batch, head, position; the feature stride is 1); probs is [batch, heads, queries,
// keys] and context [batch, queries, heads, d], both contiguous; mask [batch, 1, mask_queries,
// keys] contiguous or null.  `lowest`: the mask dtype's minimum (a masked score is exactly it).
extern "C" __global__ void prefill_attention(const T* query, const T* key, const T* value, const T* mask,
                                             T* context, U* probs, const int batch, const int heads,
                                             const int queries, const int keys, const int d,
                                             const long long qb, const long long qh, const long long qs,
                                             const long long kb, const long long kh, const long long ks,
                                             const long long vb, const long long vh, const long long vs,
                                             const int mask_queries, const float divisor, const float lowest) {
    __shared__ float weights[WARPS][MAX_KEYS];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long row = (long long)blockIdx.x * WARPS + warp;
    const bool active = row < (long long)batch * heads * queries;  // no early return: barriers below
    const int i = active ? (int)(row % queries) : 0;
    const int h = active ? (int)((row / queries) % heads) : 0;
    const int b = active ? (int)(row / ((long long)queries * heads)) : 0;
    const T* q = query + b * qb + h * qh + i * qs;
    const T* mrow = mask ? mask + ((size_t)b * mask_queries + (mask_queries == 1 ? 0 : i)) * keys : 0;
    float* w = weights[warp];

    float largest = __int_as_float(0xff800000);  // -infinity
    for (int j = lane; j < keys; j += 32) {
        float s = 0.0f;
        if (active) {
            const T* k = key + b * kb + h * kh + j * ks;
            float dot = 0.0f;
            for (int e = 0; e < d; ++e) dot += (float)q[e] * (float)k[e];
            s = (float)(T)dot / divisor;  // the score as the readable product stores it, then scaled
            if (mrow) {
                const float m = (float)mrow[j];
                s = m == lowest ? lowest : s + m;
            }
        }
        w[j] = s;
        largest = fmaxf(largest, s);
    }
    for (int offset = 16; offset > 0; offset >>= 1)
        largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    float total = 0.0f;
    for (int j = lane; j < keys; j += 32) {
        const float e = expf(w[j] - largest);
        w[j] = e;
        total += e;
    }
    for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
    for (int j = lane; j < keys; j += 32) {
        const U p = (U)(w[j] / total);
        if (active) probs[row * keys + j] = p;
        w[j] = (float)p;  // the probability as the readable path multiplies it
    }
    __syncthreads();  // every lane's probabilities are in w before any lane reads them all
    for (int e = lane; e < d; e += 32) {
        float c = 0.0f;
        const T* v = value + b * vb + h * vh + e;
        for (int j = 0; j < keys; ++j) c += w[j] * (float)v[j * vs];
        if (active) context[(((size_t)b * queries + i) * heads + h) * d + e] = (T)c;
    }
}
"""


def fits(query, key, value, mask) -> bool:
    """Can prefill_attention take these [batch, heads, positions, d] CuPy arrays and mask?"""
    if not preview.enabled() or query.ndim != 4 or key.shape[2] > MAX_KEYS or key.shape[2] == 0:
        return False
    if not (query.dtype == key.dtype == value.dtype and np.dtype(query.dtype) in _CTYPES):
        return False
    if any(a.strides[3] != a.itemsize for a in (query, key, value)):
        return False  # the feature axis must be contiguous
    if mask is not None and (mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2] not in (1, query.shape[2])):
        return False
    return True


def prefill_attention(query, key, value, mask, divisor):
    """softmax(q k^T / divisor + mask) v for query [batch, heads, q, d], key/value [batch, heads, k, d].

    -> (context [batch, heads, q, d] (a view of a [batch, q, heads, d] array), probs [batch, heads, q, k])."""
    import cupy

    batch, heads, queries, d = query.shape
    keys = key.shape[2]
    context = cupy.empty((batch, queries, heads, d), dtype=query.dtype)
    probs = cupy.empty((batch, heads, queries, keys), dtype=value.dtype)
    mask_queries = 1
    if mask is not None:
        mask = cupy.ascontiguousarray(cupy.broadcast_to(mask, (batch, 1, mask.shape[2], keys)), dtype=query.dtype)
        mask_queries = mask.shape[2]
    rows = batch * heads * queries
    if rows:
        kernel = _raw_kernel(SOURCE, "prefill_attention", OUTTYPE=_CTYPES[np.dtype(value.dtype)],
                             TYPE=_CTYPES[np.dtype(query.dtype)], NWARPS=str(WARPS), NMAXKEYS=str(MAX_KEYS))
        strides = [np.int64(s // a.itemsize) for a in (query, key, value) for s in a.strides[:3]]
        kernel(((rows + WARPS - 1) // WARPS,), (32 * WARPS,),
               (query, key, value, _NULL if mask is None else mask, context, probs, np.int32(batch), np.int32(heads),
                np.int32(queries), np.int32(keys), np.int32(d), *strides, np.int32(mask_queries),
                np.float32(divisor), np.float32(np.finfo(query.dtype).min)))
    return context.transpose(0, 2, 1, 3), probs  # [batch, q, heads, d] -> [batch, heads, q, d]
