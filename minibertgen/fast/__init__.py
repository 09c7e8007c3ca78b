"""The speed wing: faster versions of the reference ops, and where they are chosen.

The reference (ops.py, attention.py, model.py, cache.py) is the teaching code.  What
is here computes the same numbers faster and is tested equal to it:

* ``cpu.py``: NumPy versions (few-row and chunked products, GELU on cache-sized blocks,
  in-place softmax and LayerNorm) and ``layout.py``, where weights sit in memory;
* ``cuda.py`` over ``cuda_kernels.py``: fused CUDA kernels for CuPy arrays;
* ``cuda_graph.py``: the reference decoder step captured once and replayed;
* ``cpu_training.py``: the CPU table for training (the recorded forward, the backward
  ops, the AdamW update), chosen through :func:`training_kernels`.

A model picks its table once, for the device its weights are placed on
(:func:`kernels_for`), and runs its forward pass inside ``lookup.using(table)``.
"""
from __future__ import annotations

import functools

__all__ = ["kernels_for", "kernels_for_array", "training_kernels"]


def kernels_for(device, enabled: bool = True):
    """The kernel table for weights on ``device`` (a backend.Device): None (the plain
    reference) when ``enabled`` is False."""
    if not enabled:
        return None
    return _table(device.kind)


def kernels_for_array(x):
    """The kernel table for the device array ``x`` lives on (an optimiser has arrays, not a model)."""
    from ..backend import is_cupy_array

    return _table("cuda" if is_cupy_array(x) else "cpu")


def training_kernels(kernels):
    """The part of a kernel table a recorded (training) forward, its backward and the
    optimiser may use: the table's "training" entry.  None (the plain reference) when the
    table has none: a fast op that overwrites an array the activation record keeps, or
    that records nothing, must not run there."""
    return kernels.get("training") if kernels else None


@functools.lru_cache(maxsize=None)
def _table(kind: str):
    if kind == "cuda":
        from .cuda import KERNELS  # (no "training" entry: training on CuPy runs the reference)

        return KERNELS
    from .cpu import KERNELS
    from .cpu_training import TRAINING_KERNELS

    return {**KERNELS, "training": TRAINING_KERNELS}
