"""A stand-in for the few CuPy calls the fused kernels' launch code makes, for tests only.

With it in ``sys.modules["cupy"]`` the launch functions of fast/cuda_kernels.py,
cuda_fourbit.py and cuda_attention.py run unchanged on the CPU: arrays are NumPy arrays
(of a subclass whose type says "cupy", as fits() asks), and ``RawKernel`` compiles the
kernel's source with tests/fast/kernel_emulator.py and runs it there.  So the code between
the model and the kernel -- which arrays and scalars it passes, in which order and of
which C types, the grid and block it asks for -- is checked, not only the kernel.

Each launch checks what a real CuPy launch would get wrong silently: every argument is
matched to the kernel's C parameter (parsed from its preprocessed signature); a pointer
parameter takes an array (or the null pointer, numpy.uint64(0)); a scalar parameter takes
a NumPy scalar of exactly its size (CuPy passes a NumPy scalar's bytes as they are).
"""
from __future__ import annotations

import re
import subprocess
import types

import numpy as np

import kernel_emulator as emu


class ndarray(np.ndarray):
    """A NumPy array that looks like a CuPy one to fits(): its type's module is "cupy"."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


ndarray.__module__ = "cupy"


def _wrap(a):
    return np.asarray(a).view(ndarray)


def asarray(a, dtype=None):
    return _wrap(np.asarray(a, dtype=dtype))


def ascontiguousarray(a, dtype=None):
    return _wrap(np.ascontiguousarray(a, dtype=dtype))


def empty(shape, dtype=np.float32):
    return _wrap(np.empty(shape, dtype=dtype))


def empty_like(a):
    return _wrap(np.empty_like(a))


def broadcast_to(a, shape):
    return _wrap(np.broadcast_to(a, shape))


float32, float16, int32, int64 = np.float32, np.float16, np.int32, np.int64

_SIZES = {"int": 4, "float": 4, "long long": 8, "long": 8, "unsigned int": 4}


class RawKernel:
    """cupy.RawKernel(source, name), run by the CPU emulator."""

    def __init__(self, source, name):
        self.name = name
        # CUDA's float16 spellings (either of the two _raw_kernel tries) become GCC's _Float16
        source = source.replace("#include <cuda_fp16.h>", "").replace("#include <cupy/carray.cuh>", "")
        self.source = re.sub(r"\b(__half|float16)\b", "_Float16", source)
        self._launch = None

    def _parameters(self):
        """The kernel's C parameter types, from its signature after the preprocessor."""
        expanded = subprocess.run(["g++", "-E", "-P", "-x", "c++", "-"], input=self.source, capture_output=True,
                                  text=True, check=True).stdout
        typedefs = {name: ctype for ctype, name in re.findall(r"typedef\s+([\w ]+?)\s+(\w+)\s*;", expanded)}
        signature = re.search(r'extern "C" __global__ void ' + self.name + r"\s*\(([^)]*)\)", expanded)
        params = []
        for param in signature.group(1).split(","):
            ctype = " ".join(param.replace("*", " * ").split()[:-1]).replace(" *", "*")
            params.append(ctype)
        return params, typedefs

    def compile(self):
        if self._launch is None:
            self.params, self.typedefs = self._parameters()
            self._launch = emu.compile_kernel(self.source, self.name, self.params)
        return self

    def __call__(self, grid, block, args):
        self.compile()
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        values = []
        for position, (value, ctype) in enumerate(zip(args, self.params)):
            if ctype.endswith("*"):
                if isinstance(value, np.uint64) and value == 0:
                    values.append(None)  # the null pointer
                elif isinstance(value, np.ndarray):
                    values.append(value)
                else:
                    raise TypeError(f"{self.name} argument {position} ({ctype}): got {type(value).__name__}")
            else:
                base = self.typedefs.get(ctype.replace("const ", "").strip(), ctype.replace("const ", "").strip())
                if not isinstance(value, np.generic) or value.itemsize != _SIZES[base]:
                    raise TypeError(f"{self.name} argument {position} ({ctype}): got {value!r}, "
                                    f"of {getattr(value, 'itemsize', '?')} bytes")
                values.append(value.item())
        (grid_x,), (block_x,) = tuple(grid), tuple(block)
        self._launch(int(grid_x), int(block_x), *values)


class _Device:
    def __init__(self, index=0):
        self.id = index


cuda = types.SimpleNamespace(Device=_Device)


def module():
    """A fresh module object standing for cupy."""
    fake = types.ModuleType("cupy")
    for name in ("ndarray", "asarray", "ascontiguousarray", "empty", "empty_like", "broadcast_to", "RawKernel",
                 "float32", "float16", "int32", "int64", "cuda"):
        setattr(fake, name, globals()[name])
    return fake
