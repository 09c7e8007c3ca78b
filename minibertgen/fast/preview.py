"""The switch for CUDA kernels that have been checked on the CPU but not yet run on a GPU.

cuda_fourbit.py (4-bit few-row products, and with them graphed 4-bit decoding) and
cuda_attention.py (many-query attention in one launch) were written in a session without
a GPU: their CUDA source is run on the CPU by tests/fast/kernel_emulator.py and compiled by
nvcc where it is installed, but no GPU has run them.  Until one has (tests/fast/test_gpu.py,
benchmarks/bench_gpu.py), they are off and the GPU computes as before; set
``MINIBERTGEN_GPU_PREVIEW=1`` to turn them on.  The option is read when the CUDA table is
first chosen (fast.kernels_for), not when minibertgen is imported; setting ``ENABLED``
(True / False) overrides it.
"""
from __future__ import annotations

import os

__all__ = ["ENABLED", "enabled"]

ENABLED = None  # None: not decided yet (read from the environment on first use)


def enabled() -> bool:
    """Are the preview kernels on?  (MINIBERTGEN_GPU_PREVIEW=1, read once, unless ENABLED was set.)"""
    global ENABLED
    if ENABLED is None:
        ENABLED = os.environ.get("MINIBERTGEN_GPU_PREVIEW", "0") == "1"
    return ENABLED
