"""Run a CUDA kernel's source on the CPU: one host thread per CUDA thread (tests only).

A machine without a GPU cannot run the fused kernels, but it can check what they
compute.  The kernel's own source text is compiled by g++ after a short header that
gives CUDA's names a CPU meaning:

* ``threadIdx`` / ``blockIdx`` are per-thread variables, ``blockDim`` / ``gridDim`` shared;
* a thread block is ``blockDim.x`` std::threads started together; ``__syncthreads()`` is a
  std::barrier over them, and ``__shared__`` storage is a static array that they share;
* ``__shfl_xor_sync`` swaps values through a shared array between two barriers over the
  thread's warp, so every lane of the warp still running must reach it (as CUDA's full
  mask asks).  A thread that returns leaves its warp's barrier and the block's (a warp
  returning early, as several kernels' warps do, is handled); a shuffle with a lane that
  has returned reads a stale value, where CUDA leaves it undefined;
* ``half`` is GCC's ``_Float16``, which rounds to nearest-even as CUDA's conversions do.

Blocks run one after another.  What it cannot catch: anything that depends on real GPU
timing, memory alignment faults, or NVRTC's dialect (tests/fast/test_cuda_fourbit.py
compiles the source with nvcc too, where nvcc is installed).
"""
from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <memory>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>
struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
struct alignas(16) float4 { float x, y, z, w; };
static thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;
static std::barrier<>* emu_barrier = nullptr;            // the block's threads
static std::vector<std::barrier<>*> emu_warp_barriers;  // each warp's threads
static float emu_exchange[1024];
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
static inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
static inline float __shfl_xor_sync(unsigned, float v, int mask) {
    const unsigned t = threadIdx.x;
    std::barrier<>* warp = emu_warp_barriers[t / 32];
    emu_exchange[t] = v;
    warp->arrive_and_wait();
    const unsigned partner = (t & ~31u) | ((t % 32) ^ (unsigned)mask);
    const float theirs = emu_exchange[partner];
    warp->arrive_and_wait();
    return theirs;
}
template <class F> static void emu_run(unsigned grid, unsigned block, F body) {
    gridDim.x = grid; blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> barrier((std::ptrdiff_t)block);
        emu_barrier = &barrier;
        std::vector<std::unique_ptr<std::barrier<>>> warps;
        emu_warp_barriers.clear();
        for (unsigned w = 0; w * 32 < block; ++w) {
            warps.emplace_back(new std::barrier<>((std::ptrdiff_t)std::min(32u, block - 32 * w)));
            emu_warp_barriers.push_back(warps.back().get());
        }
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([=] {
                threadIdx.x = t; blockIdx.x = b;
                body();
                emu_warp_barriers[t / 32]->arrive_and_drop();  // a finished (or early-returned)
                emu_barrier->arrive_and_drop();                // thread waits no more
            });
        for (auto& thread : threads) thread.join();
    }
}
"""

_CACHE = Path(tempfile.gettempdir()) / "minibertgen-kernel-emulator"


def available() -> bool:
    return shutil.which("g++") is not None


def compile_kernel(source: str, name: str, params: list[str]):
    """A callable ``launch(grid, block, *args)`` running kernel ``name`` of ``source``
    (placeholders already filled in).  ``params``: the kernel's C parameter types in order;
    pass NumPy arrays for pointers and Python numbers for the rest."""
    casts = []
    for i, ctype in enumerate(params):
        casts.append(f"({ctype})a[{i}]" if ctype.endswith("*") else f"*({ctype}*)a[{i}]")
    wrapper = (f'extern "C" void emu_launch(unsigned grid, unsigned block, void** a) {{\n'
               f'    emu_run(grid, block, [&] {{ {name}({", ".join(casts)}); }});\n}}\n')
    code = SHIM + source + "\n" + wrapper
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    _CACHE.mkdir(parents=True, exist_ok=True)
    library = _CACHE / f"{name}-{digest}.so"
    if not library.exists():
        cpp = _CACHE / f"{name}-{digest}.cpp"
        cpp.write_text(code)
        partial = library.with_suffix(".so.partial")
        subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wno-unknown-pragmas",
                        str(cpp), "-o", str(partial)], check=True, capture_output=True, text=True)
        partial.rename(library)
    function = ctypes.CDLL(str(library)).emu_launch
    function.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
    _SCALARS = {"int": ctypes.c_int, "float": ctypes.c_float, "long": ctypes.c_long, "long long": ctypes.c_longlong,
                "unsigned int": ctypes.c_uint}

    def launch(grid: int, block: int, *args):
        if len(args) != len(params):
            raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
        keep, pointers = [], []
        for value, ctype in zip(args, params):
            if ctype.endswith("*"):
                address = 0 if value is None else value.ctypes.data
                pointers.append(address)
            else:
                scalar = _SCALARS[ctype.replace("const ", "").strip()](value)
                keep.append(scalar)
                pointers.append(ctypes.addressof(scalar))
        array = (ctypes.c_void_p * len(pointers))(*pointers)
        function(grid, block, array)

    return launch


def fill(source: str, **placeholders) -> str:
    """The source with its placeholders replaced, half spelled as GCC's _Float16."""
    for key, value in placeholders.items():
        source = source.replace(key, value)
    return source.replace("HALF_HEADER", "").replace("HALF", "_Float16")


def as_half(array) -> np.ndarray:
    """float16 NumPy storage is what _Float16 pointers read."""
    return np.ascontiguousarray(array, dtype=np.float16)


def nvcc_available() -> bool:
    return shutil.which("nvcc") is not None


def nvcc_ptx(source: str, tmp_path, **placeholders) -> str:
    """Compile ``source`` (placeholders filled in, half spelled as CUDA's __half) to PTX with
    nvcc; returns the PTX text, or raises AssertionError with nvcc's errors."""
    for key, value in placeholders.items():
        source = source.replace(key, value)
    source = source.replace("HALF_HEADER", "#include <cuda_fp16.h>").replace("HALF", "__half")
    path = Path(tmp_path) / "kernel.cu"
    path.write_text(source)
    ptx = path.with_suffix(".ptx")
    done = subprocess.run(["nvcc", "-ptx", "-arch=compute_80", str(path), "-o", str(ptx)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return ptx.read_text()
