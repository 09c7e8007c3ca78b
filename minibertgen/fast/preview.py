"""The switch for CUDA kernels that have been checked on the CPU but not yet run on a GPU.

cuda_fourbit.py (4-bit few-row products, and with them graphed 4-bit decoding) and
cuda_attention.py (many-query attention in one launch) were written in a session without
a GPU: their CUDA source is run on the CPU by tests/kernel_emulator.py and compiled by
nvcc where it is installed, but no GPU has run them.  Until one has (tests/test_gpu.py,
benchmarks/bench_gpu.py), they are off and the GPU computes as before; set
``MINIBERTGEN_GPU_PREVIEW=1`` before importing minibertgen to turn them on.
"""
from __future__ import annotations

import os

__all__ = ["ENABLED"]

ENABLED = os.environ.get("MINIBERTGEN_GPU_PREVIEW", "0") == "1"
