"""The speed wing: faster versions of the reference ops, and where they are chosen.

The reference (ops.py, attention.py, model.py, cache.py) is the teaching code.  What
is here computes the same numbers faster and is tested equal to it:

* ``cpu.py``: NumPy versions (few-row and chunked products, GELU on cache-sized blocks,
  in-place softmax and LayerNorm) and ``layout.py``, where weights sit in memory;
* ``cuda.py`` over ``cuda_kernels.py``: fused CUDA kernels for CuPy arrays;
* ``cuda_graph.py``: the reference decoder step captured once and replayed.

A model picks its table once, for the device its weights are placed on
(:func:`kernels_for`), and runs its forward pass inside ``lookup.using(table)``.
"""
from __future__ import annotations

import functools

__all__ = ["kernels_for"]


def kernels_for(device, enabled: bool = True):
    """The kernel table for weights on ``device`` (a backend.Device): None (the plain
    reference) when ``enabled`` is False."""
    if not enabled:
        return None
    return _table(device.kind)


@functools.lru_cache(maxsize=None)
def _table(kind: str):
    if kind == "cuda":
        from .cuda import KERNELS
    else:
        from .cpu import KERNELS
    return KERNELS
