"""The speed wing: faster versions of the reference ops, and where they are chosen.

The reference (ops.py, attention.py, model.py, cache.py) is the teaching code.  What
is here computes the same numbers faster and is tested equal to it:

* ``cpu.py``: NumPy versions (few-row and chunked products, GELU on cache-sized blocks,
  in-place softmax and LayerNorm, the beam-search top-k) and ``layout.py``, where weights
  sit in memory; ``threads.py``, our own two-core scheduling;
* ``cuda.py`` over ``cuda_kernels.py``: fused CUDA kernels for CuPy arrays;
* ``cuda_graph.py``: the reference decoder step captured once and replayed;
* ``cpu_training.py``: the CPU table's "training" part (the recorded forward, the backward
  ops, the AdamW update; dispatch.training_part).

A model picks its table once, for the device its weights are placed on
(:func:`kernels_for`), and each of its entry points runs inside ``dispatch.using(table)``.
The options read from the environment (MINIBERTGEN_CPU_POOL, MINIBERTGEN_GPU_PREVIEW) are
read when a table is first chosen.
"""
from __future__ import annotations

import functools

__all__ = ["kernels_for", "kernels_for_array"]


def kernels_for(device, enabled: bool = True):
    """The kernel table for weights on ``device`` (a backend.Device): None (the plain
    reference) when ``enabled`` is False."""
    if not enabled:
        return None
    return _table(device.kind)


def kernels_for_array(x):
    """The kernel table for the device array ``x`` lives on."""
    from ..backend import is_cupy_array

    return _table("cuda" if is_cupy_array(x) else "cpu")


@functools.lru_cache(maxsize=None)
def _table(kind: str):
    if kind == "cuda":
        from . import preview
        from .cuda import KERNELS  # (no "training" entry: training on CuPy runs the reference)

        preview.enabled()  # the option is read now
        return KERNELS
    from . import threads
    from .cpu import KERNELS
    from .cpu_training import TRAINING_KERNELS

    threads.choose_pool()  # the option is read now
    return {**KERNELS, "training": TRAINING_KERNELS}
