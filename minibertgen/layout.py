"""Where the weights sit in memory for fast CPU matrix products (a load-time step).

Nothing here changes the math: every weight keeps its [out, in] shape and its values,
and the parameter tree keeps its checkpoint names.  What changes is how the numbers
are laid out in memory, because OpenBLAS's speed depends on it.  Two arrangements:

1. **Query, key and value in one buffer.**  The three projections of a self-attention
   block read the same input, so they can be one [3 * hidden, in] matrix product
   instead of three.  The weights (and biases) are copied back to back into one buffer
   and each becomes a *view* of its block, so memory is not doubled and editing
   ``p["query"]["weight"]`` in place still edits what the fused product uses.  The
   fused pair is kept next to them under ``"_qkv"`` (keys starting with "_" are derived
   entries: state_dict, saving and quantization skip them).  A decode step of the small
   (hidden 384) model: 3 x 54 us -> 98 us per layer.

2. **Short rows stored transposed.**  ``x @ W.T`` on a row-major [out, in] W makes
   OpenBLAS take a dot product per output; with short rows (in_features < 1024) the
   horizontal sums cost as much as the loads.  Stored as a row-major [in, out] buffer
   (W is then its transposed, Fortran-ordered view, still [out, in]) the product
   streams whole columns instead.  Measured for one row (a greedy step), GB/s of
   weights: 1536x384 22 -> 27, the 30522x384 LM head 25 -> 33; for 4 rows (beam
   search) the LM head 12 -> 15; for 1024 rows equal.  Rows of 1024 or more gain
   nothing, so the large models keep the checkpoint's layout (and memory-mapped
   weights stay memory-mapped).  Cost: looking up rows of a transposed embedding table
   (tied to the LM head) is a strided gather, ~2 ms for 1024 tokens at hidden 384.

``arrange_for_cpu`` applies both to a parameter tree; ``fused_qkv`` hands attention the
fused pair when it is still valid.  Only NumPy floating arrays are rearranged (the GPU
and quantized weights keep their own layouts).
"""
from __future__ import annotations

import mmap
import weakref

import numpy as np

__all__ = ["arrange_for_cpu", "fused_qkv", "FusedProjection", "SHORT_ROWS"]

SHORT_ROWS = 1024  # in_features below this: store the weight transposed (see 2. above)
_QKV = ("query", "key", "value")


class FusedProjection:
    """One fused query/key/value projection and the six views the tree held when it was built."""

    __slots__ = ("weight", "bias", "parts", "__weakref__")

    def __init__(self, weight, bias, parts):
        self.weight = weight  # [3 * out, in]: query, key, value rows back to back
        self.bias = bias  # [3 * out]
        self.parts = parts  # (query, key, value weights, query, key, value biases)


# Fused projections alive somewhere, by id of their query weight view: arranging a tree
# whose query/key/value are already such views (a decoder tied to its encoder, a tree
# arranged twice) reuses the projection instead of copying the weights again.
_LIVE = weakref.WeakValueDictionary()


def arrange_for_cpu(tree):
    """A copy of the parameter ``tree`` with the CPU arrangements above (arrays shared
    where nothing changes; a weight held under two names stays one array)."""
    return _arrange(tree, {})


def fused_qkv(p):
    """The fused query/key/value projection of self-attention parameters ``p``, or None.

    None when the block was never fused (GPU, quantized, a tree built by hand) or when a
    weight was replaced since (then the three separate projections are the truth).
    """
    fused = p.get("_qkv")
    if fused is None:
        return None
    return fused if _same(_parts(p), fused.parts) else None


def _same(parts, others) -> bool:
    return all(a is b for a, b in zip(parts, others))


def _parts(p) -> tuple:
    return tuple(p[name]["weight"] for name in _QKV) + tuple(p[name]["bias"] for name in _QKV)


def _arrange(node, done):
    if isinstance(node, list):
        return [_arrange(child, done) for child in node]
    if not isinstance(node, dict):
        return node
    node = {key: value for key, value in node.items() if not key.startswith("_")}
    if _fusable(node):
        known = _LIVE.get(id(node["query"]["weight"]))
        if known is not None and _same(known.parts, _parts(node)):
            node["_qkv"] = known
        else:
            _fuse_qkv(node)
    for key, value in node.items():
        if key in _QKV and "_qkv" in node:
            continue
        if isinstance(value, (dict, list)):
            node[key] = _arrange(value, done)
        elif key == "weight" and _short_rows(value):
            node[key] = _transposed_storage(value, done)
    return node


def _plain_float(array) -> bool:
    return isinstance(array, np.ndarray) and array.dtype.kind == "f"


def _short_rows(weight) -> bool:
    return _plain_float(weight) and weight.ndim == 2 and weight.shape[1] < SHORT_ROWS


def _fusable(node) -> bool:
    if not all(isinstance(node.get(name), dict) for name in _QKV):
        return False
    parts = [node[name].get(field) for name in _QKV for field in ("weight", "bias")]
    if not all(_plain_float(part) for part in parts):
        return False
    weights = [node[name]["weight"] for name in _QKV]
    return (all(w.ndim == 2 and w.shape == weights[0].shape and w.dtype == weights[0].dtype for w in weights)
            and all(node[name]["bias"].shape == (weights[0].shape[0],) for name in _QKV))


def _fuse_qkv(node) -> None:
    """Copy query/key/value weights and biases into one buffer each; the tree gets views."""
    out, width = node["query"]["weight"].shape
    dtype = node["query"]["weight"].dtype
    if width < SHORT_ROWS:  # short rows: the buffer is [in, 3 * out], its transpose the fused weight
        weight = np.empty((width, 3 * out), dtype=dtype).T  # [3 * out, in], Fortran-ordered
    else:
        weight = np.empty((3 * out, width), dtype=dtype)  # [3 * out, in]
    bias = np.empty(3 * out, dtype=node["query"]["bias"].dtype)
    for i, name in enumerate(_QKV):
        rows = slice(i * out, (i + 1) * out)
        weight[rows] = node[name]["weight"]
        bias[rows] = node[name]["bias"]
        _release_file_pages(node[name]["weight"])
        node[name] = {**node[name], "weight": weight[rows], "bias": bias[rows]}  # views of the buffers
    node["_qkv"] = FusedProjection(weight, bias, _parts(node))
    _LIVE[id(node["query"]["weight"])] = node["_qkv"]


def _transposed_storage(weight, done):
    """The same [out, in] values, stored as a row-major [in, out] buffer (one copy per array)."""
    if id(weight) not in done:
        if weight.T.flags.c_contiguous:
            done[id(weight)] = weight
        else:
            done[id(weight)] = np.ascontiguousarray(weight.T).T
            _release_file_pages(weight)
    return done[id(weight)]


def _release_file_pages(array) -> None:
    """Once a memory-mapped weight has been copied, let its file pages go.

    Copying read every page of it, and mapped pages count as this process's resident
    memory for as long as the file stays mapped (other weights keep it mapped): the
    copy would be counted twice.  MADV_DONTNEED drops them from this process; should
    the old array be read again, the kernel maps them back in from the page cache.
    """
    base = array
    while isinstance(base.base, np.ndarray):
        base = base.base
    mapped = getattr(base, "_mmap", None)  # np.memmap of the checkpoint (checkpoint/safetensors_io.py)
    if mapped is None or not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    page = mmap.PAGESIZE
    start = array.ctypes.data - base.ctypes.data
    first, last = -(-start // page) * page, (start + array.nbytes) // page * page  # whole pages inside
    if last > first:
        mapped.madvise(mmap.MADV_DONTNEED, first, last - first)
