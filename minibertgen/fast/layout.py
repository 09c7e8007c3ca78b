"""Where the weights sit in memory for fast CPU matrix products (a load-time step).

Nothing here changes the math: every weight keeps its [out, in] shape and its values,
and the parameter tree keeps its checkpoint names.  What changes is how the numbers are
laid out in memory, because OpenBLAS's speed depends on it.

**Widening weights with short rows are stored transposed.**  ``x @ W.T`` on a row-major
[out, in] W makes OpenBLAS take a dot product per output; with short rows
(in_features < 1024) the horizontal sums cost as much as the loads.  Stored as a
row-major [in, out] buffer (W is then its transposed, Fortran-ordered view, still
[out, in]) the product streams whole columns instead, for one row (a greedy step) and
for a few (beam search); for many rows it makes no difference.  Square weights gain
nothing for one row and lose for four, and rows of 1024 or more gain nothing, so those
keep the checkpoint's layout (the large models' weights stay memory-mapped).  Cost:
looking up rows of a transposed embedding table (tied to the LM head) is a strided
gather.  Fusing query, key and value into one product was measured too and is not done.
(The figures: README, "Speed on the CPU", and tutorial 07.)

Only NumPy floating arrays are rearranged (the GPU and quantized weights keep their
own layouts).
"""
from __future__ import annotations

import mmap

import numpy as np

__all__ = ["arrange_for_cpu", "SHORT_ROWS"]

SHORT_ROWS = 1024  # in_features below this (and out > in): store the weight transposed


def arrange_for_cpu(tree):
    """A copy of the parameter ``tree`` with widening short-row weights stored transposed
    (arrays shared where nothing changes; a weight held under two names stays one array)."""
    return _arrange(tree, {})


def _arrange(node, done):
    if isinstance(node, list):
        return [_arrange(child, done) for child in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if isinstance(value, (dict, list)):
            out[key] = _arrange(value, done)
        elif key == "weight" and _short_rows(value):
            out[key] = _transposed_storage(value, done)
        else:
            out[key] = value
    return out


def _short_rows(weight) -> bool:
    """A floating NumPy weight [out, in] that widens (out > in) and has short rows."""
    return (isinstance(weight, np.ndarray) and weight.dtype.kind == "f" and weight.ndim == 2
            and weight.shape[0] > weight.shape[1] and weight.shape[1] < SHORT_ROWS)


def _transposed_storage(weight, done):
    """The same [out, in] values, stored as a row-major [in, out] buffer (one copy per array)."""
    if id(weight) not in done:
        if weight.T.flags.c_contiguous:  # arranged already (a tree set twice, a tied weight)
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
