"""CPU loops compiled at first use: a few elementwise formulas in one pass each.

NumPy runs an elementwise formula one operation at a time, each a pass over whole
arrays: AdamW's update is fourteen of them over every parameter, its moments and its
gradient, GELU's and its derivative's about twenty.  ``kernels/cpu_training.c`` does the
same float32 operations in the same order, one element at a time, in one pass (GELU's
exponential stays NumPy's, one pass before it, so that its bits are NumPy's too).  Also
there: the gradients' scaling and sums of squares (clip_grad_norm_) and LayerNorm
forward and backward, whose means and column sums add in float64 (so not NumPy's bits:
float32 roundings of the exact values, as the NumPy blocks' BLAS sums are).
Figures: benchmarks/results/trainer.txt and trainer_step.txt.

The C file is compiled once per process with the system's C compiler (``$CC``, else
``cc``) into a private temporary directory, loaded with ctypes (which releases the GIL,
so fast/threads.py's two halves run at once) and checked before use: on a test array
each bitwise loop must give the bits of the NumPy code it replaces, and LayerNorm's must
stay within float32 rounding of float64 LayerNorm, or the library is not used.  No
compiler, a failed build, a failed check or ``MINIBERTGEN_NATIVE=0``: ``library()`` is
None and the CPU tables keep their NumPy blocks (the same numbers, slower).  ``status()``
says which, and why.
"""
from __future__ import annotations

import ctypes
import math
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..ops import ERF_A, ERF_P
from . import gelu_blocks

__all__ = ["library", "status", "adamw_update", "scale", "sum_of_squares", "gelu_forward", "gelu_backward",
           "layer_norm_rows", "layer_norm_backward_rows"]

SOURCE = Path(__file__).parent / "kernels" / "cpu_training.c"
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]  # never -ffast-math: the bits must match
TUNED = ["-march=native"]  # vector width of this machine (dropped if the compiler refuses it)

_LOCK = threading.Lock()
_STATE = {}  # "library": CDLL or None, "status": why


def library():
    """The compiled, checked library, or None (see status())."""
    if "library" not in _STATE:
        with _LOCK:
            if "library" not in _STATE:
                _STATE["library"], _STATE["status"] = _load()
    return _STATE["library"]


def status() -> str:
    """A line saying whether the native loops are in use, and why not when they are not."""
    library()
    return _STATE["status"]


def _load():
    if os.environ.get("MINIBERTGEN_NATIVE", "1") == "0":
        return None, "off (MINIBERTGEN_NATIVE=0): NumPy blocks"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        return None, "no C compiler found (set CC): NumPy blocks"
    try:
        command = shlex.split(compiler)  # CC may carry flags of its own ("gcc -m64")
    except ValueError as exc:
        return None, f"CC={compiler!r} cannot be read as a command ({exc}): NumPy blocks"
    directory = None
    try:
        directory = tempfile.mkdtemp(prefix="minibertgen-native-")  # private (0700), removed once loaded
        target = os.path.join(directory, "cpu_training.so")
        for extra in (TUNED, []):
            done = subprocess.run([*command, *FLAGS, *extra, "-o", target, str(SOURCE), "-lm"],
                                  capture_output=True, text=True, check=False, timeout=300)
            if done.returncode == 0:
                break
        else:
            return None, f"{compiler} failed ({done.stderr.strip()[:200]}): NumPy blocks"
        lib = _declare(ctypes.CDLL(target))
    except (OSError, subprocess.SubprocessError) as exc:  # (no such program, a time-out, an unloadable file)
        return None, f"could not build or load the native loops ({exc}): NumPy blocks"
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    mismatch = _self_check(lib)
    if mismatch:
        return None, f"built with {compiler}, but {mismatch} differs from NumPy's bits: NumPy blocks"
    return lib, f"native loops built with {compiler}"


def _declare(lib):
    pointer, size, real = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.adamw_update.argtypes = [pointer] * 4 + [size] + [real] * 7
    lib.adamw_update.restype = None
    lib.scale.argtypes = [pointer, size, real]
    lib.scale.restype = None
    lib.sum_of_squares.argtypes = [pointer, size]
    lib.sum_of_squares.restype = ctypes.c_double
    lib.layer_norm_rows.argtypes = [pointer, size, size, pointer, pointer, real]
    lib.layer_norm_rows.restype = None
    lib.layer_norm_backward_rows.argtypes = [pointer] * 4 + [real, size, size] + [pointer] * 5
    lib.layer_norm_backward_rows.restype = None
    lib.gelu_forward.argtypes = [pointer, pointer, size, real, pointer]
    lib.gelu_forward.restype = None
    lib.gelu_backward.argtypes = [pointer, pointer, pointer, size, real, real, pointer, real]
    lib.gelu_backward.restype = None
    return lib


def _address(a, start):
    return a.ctypes.data + start * a.itemsize


def adamw_update(lib, w, g, m, v, start, stop, *, step, lr, beta1, beta2, eps, weight_decay):
    """optim.adamw_update on elements [start, stop) of flat float32 arrays w, g, m, v
    (the same constants, rounded to float32 as NumPy rounds a Python float against a
    float32 array)."""
    constants = (1.0 - lr * weight_decay, 1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(1.0 - beta2 ** step), eps,
                 lr / (1.0 - beta1 ** step))
    lib.adamw_update(*(_address(a, start) for a in (w, g, m, v)), stop - start,
                     *(float(np.float32(c)) for c in constants))


def scale(lib, x, start, stop, factor):
    """x[start:stop] *= factor (float32) in a flat float32 array."""
    lib.scale(_address(x, start), stop - start, float(np.float32(factor)))


def sum_of_squares(lib, x, start, stop):
    """The sum of x[start:stop]^2 (flat float32), accumulated in float64 (a Python float)."""
    return lib.sum_of_squares(_address(x, start), stop - start)


def layer_norm_rows(lib, work, weight, bias, eps):
    """fast/cpu.py's _normalise_rows on ``work`` [rows, hidden] (float32, C order) in place;
    weight and bias [hidden] float32."""
    rows, hidden = work.shape
    lib.layer_norm_rows(work.ctypes.data, rows, hidden, weight.ctypes.data, bias.ctypes.data,
                        float(np.float32(eps)))


def layer_norm_backward_rows(lib, dout, x, residual, weight, eps, ds, start, stop):
    """fast/cpu_training.py's layer_norm_backward on rows [start, stop) of dout, x (and
    residual, or None) [rows, hidden] float32 C order: ds written there; -> this share's
    (dweight, dbias) as float64 sums [hidden]."""
    hidden = x.shape[1]
    scratch = np.empty((2, hidden), np.float32)
    sums = np.zeros((2, hidden), np.float64)
    lib.layer_norm_backward_rows(_address(dout, start * hidden), _address(x, start * hidden),
                                 None if residual is None else _address(residual, start * hidden),
                                 weight.ctypes.data, float(np.float32(eps)), stop - start, hidden,
                                 _address(ds, start * hidden), scratch[0].ctypes.data, scratch[1].ctypes.data,
                                 sums[0].ctypes.data, sums[1].ctypes.data)
    return sums[0], sums[1]


def _float32s(values):
    return np.asarray(values, dtype=np.float32)  # kept alive by the caller while C reads it


_HALF_ERF_A = _float32s([a / 2 for a in ERF_A])  # fast/cpu.py's gelu_block's coefficients
_ERF_A = _float32s(ERF_A)


def gelu_forward(lib, x, out, start, stop):
    """out[start:stop] = GELU(x[start:stop]) (flat float32), fast/cpu.py's gelu_block's
    steps: exp(-x^2 / 2) by NumPy, the rest in one C pass."""
    e = out[start:stop]
    np.multiply(x[start:stop], x[start:stop], out=e)
    e *= -0.5
    np.exp(e, out=e)
    lib.gelu_forward(_address(x, start), _address(out, start), stop - start,
                     float(np.float32(ERF_P / math.sqrt(2.0))), _HALF_ERF_A.ctypes.data)


def gelu_backward(lib, dout, x, dx, start, stop):
    """dx[start:stop] = dL/dx of GELU, fast/cpu_training.py's gelu_backward_block's steps:
    exp(-(x / sqrt 2)^2) by NumPy, the rest in one C pass."""
    e = dx[start:stop]
    np.multiply(x[start:stop], 1.0 / math.sqrt(2.0), out=e)  # z
    np.multiply(e, e, out=e)
    np.negative(e, out=e)
    np.exp(e, out=e)
    lib.gelu_backward(_address(dout, start), _address(x, start), _address(dx, start), stop - start,
                      float(np.float32(1.0 / math.sqrt(2.0))), float(np.float32(ERF_P)), _ERF_A.ctypes.data,
                      float(np.float32(1.0 / math.sqrt(2.0 * math.pi))))


def _self_check(lib):
    """The name of the first loop whose bits differ from the NumPy code it replaces, or None."""
    from .. import optim

    rng = np.random.default_rng(0)
    n = 4099  # not a multiple of any vector width: the loops' tails run too
    w, g, m = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(np.float32)
    g[:5] = (0.0, -0.0, 1e-30, 3e38, -1e-45)
    hyper = dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    want = [a.copy() for a in (w, m, v)]
    with np.errstate(all="ignore"):  # (3e38 squared overflows to inf, on purpose)
        optim.adamw_update.reference(want[0], g, want[1], want[2], **hyper)
    got = [a.copy() for a in (w, m, v)]
    adamw_update(lib, got[0], g, got[1], got[2], 0, n, **hyper)
    if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, want)):
        return "adamw_update"
    scaled = g.copy()
    scale(lib, scaled, 0, n, 0.37)
    if not np.array_equal(scaled, g * np.float32(0.37)):
        return "scale"
    squares = w[5:].astype(np.float64) ** 2  # (finite values; summed sixteen ways, then together)
    if not np.isclose(sum_of_squares(lib, w, 5, n), squares.sum(), rtol=1e-12, atol=0):
        return "sum_of_squares"
    return (_gelu_mismatch(lib, (3 * rng.standard_normal(n)).astype(np.float32), w)
            or _layer_norm_mismatch(lib, rng))


def _layer_norm_mismatch(lib, rng):
    """The LayerNorm loop whose results stray from float64 LayerNorm by more than float32
    rounding (its sums are not NumPy's, so no bits to compare), or None."""
    x, dout = (rng.standard_normal((5, 77)).astype(np.float32) for _ in range(2))
    weight, bias = (1 + rng.standard_normal(77)).astype(np.float32), rng.standard_normal(77).astype(np.float32)
    wide = x.astype(np.float64)
    centred = wide - wide.mean(axis=-1, keepdims=True)
    xhat = centred / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True) + 1e-12)
    y = x.copy()
    layer_norm_rows(lib, y, weight, bias, 1e-12)
    if not np.allclose(y, xhat * weight + bias, rtol=0, atol=1e-5):
        return "layer_norm_rows"
    ds = np.empty_like(x)
    dweight, dbias = layer_norm_backward_rows(lib, dout, x, None, weight, 1e-12, ds, 0, x.shape[0])
    g = dout * weight.astype(np.float64)
    rstd = 1 / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True) + 1e-12)
    exact = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    if not (np.allclose(ds, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
            and np.allclose(dweight, (dout * xhat).sum(axis=0), rtol=0, atol=1e-4)
            and np.allclose(dbias, dout.astype(np.float64).sum(axis=0), rtol=0, atol=1e-4)):
        return "layer_norm_backward_rows"
    return None


def _gelu_mismatch(lib, x, dout):
    """The GELU loop whose bits differ from fast/cpu.py's or cpu_training.py's NumPy blocks, or None."""
    x[:4] = (np.inf, -np.inf, np.nan, -0.0)
    for name, got, want in (
            ("gelu_forward", lambda out: gelu_forward(lib, x, out, 0, x.size),
             lambda out: gelu_blocks.gelu_block(x, out)),
            ("gelu_backward", lambda out: gelu_backward(lib, dout, x, out, 0, x.size),
             lambda out: gelu_blocks.gelu_backward_block(dout, x, out))):
        mine, theirs = np.empty_like(x), np.empty_like(x)
        with np.errstate(all="ignore"):  # (the infinities, on purpose)
            got(mine)
            want(theirs)
        if not np.array_equal(mine, theirs, equal_nan=True):
            return name
    return None
