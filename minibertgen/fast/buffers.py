"""Big gradient arrays made again each step, reused when nothing else holds the last one.

A vocabulary-sized gradient (30522 x 384 float32: 47 MB) is a fresh array every step:
the embedding's gradient table, the LM head's weight gradient.  A fresh array of that
size comes from the operating system as new pages, each one faulted in and zeroed on
first write, which costs about twice the writing itself (benchmarks/results/trainer.txt).
Here the array of the previous step is handed out again instead -- but only when
nothing but this module refers to it any more (the optimizer's zero_grad() dropped it,
no view or copy of it lives on): ``sys.getrefcount`` tells, as CPython counts references.
An array still held anywhere is left alone and a new one is made.  The caller overwrites
every element of what it gets (np.matmul(out=...), a fill with zeros).
"""
from __future__ import annotations

import sys
import threading
import weakref

import numpy as np

__all__ = ["reusable", "BIG"]

BIG = 8 << 20  # bytes: smaller arrays come from the allocator's own free lists
_KEPT = {}  # (id(owner), purpose) -> (weakref to owner, array)
_LOCK = threading.Lock()


def reusable(owner, purpose, shape, dtype, order="C"):
    """An uninitialised array of ``shape``, ``dtype`` and memory ``order`` for ``purpose``
    (a name) on behalf of the array ``owner`` (a weight): last step's, when nobody holds it."""
    shape, dtype = tuple(shape), np.dtype(dtype)
    if int(np.prod(shape)) * dtype.itemsize < BIG:
        return np.empty(shape, dtype, order=order)
    key = (id(owner), purpose)
    with _LOCK:
        entry = _KEPT.get(key)
        if entry is not None and entry[0]() is owner:
            kept = entry[1]
            # references: _KEPT's tuple, `kept`, getrefcount's argument -- nobody else
            if sys.getrefcount(kept) == 3 and kept.shape == shape and kept.dtype == dtype and _in_order(kept, order):
                return kept
        fresh = np.empty(shape, dtype, order=order)
        _KEPT[key] = (weakref.ref(owner, lambda _, key=key: _KEPT.pop(key, None)), fresh)
        return fresh


def _in_order(a, order):
    return a.flags.f_contiguous if order == "F" else a.flags.c_contiguous
