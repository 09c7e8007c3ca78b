"""The one NumPy/CuPy switch.

Everything that depends on *where* arrays live is decided here:

* :func:`parse_device` turns the ``device`` argument users pass (``None``, ``"cpu"``,
  ``"cuda"``, ``"cuda:1"``, ``1``) into a :class:`Device`.
* :func:`array_module` gives the array module (``numpy`` or ``cupy``) of an array, so
  every op can write ``xp = array_module(x)`` and run unchanged on either backend.
* :func:`to_device` / :func:`to_numpy` move arrays between host and device.
* :func:`resolve_dtype` is the dtype policy (``"auto"``, ``"float32"``, ...).

CuPy is imported lazily, only when a GPU is asked for, so the CPU path needs NumPy
alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Device",
    "parse_device",
    "array_module",
    "to_device",
    "to_numpy",
    "resolve_dtype",
    "device_and_dtype",
    "is_cupy_array",
    "scatter_add",
]


@dataclass(frozen=True)
class Device:
    """Where a model's weights and outputs live: ``kind`` is "cpu" or "cuda"."""

    kind: str = "cpu"
    index: int | None = None

    @property
    def xp(self):
        """The array module for this device: numpy for "cpu", cupy for "cuda"."""
        if self.kind == "cpu":
            return np
        return _import_cupy_for(self)

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(device) -> Device:
    """Parse ``device`` the way transformers accepts it.

    ``None`` and ``"cpu"`` (and ``-1``, the old pipeline convention) mean NumPy on the
    CPU; ``"cuda"``, ``"cuda:N"`` and a non-negative int ``N`` mean CuPy on GPU ``N``.
    """
    if isinstance(device, Device):
        parsed = device
    elif device is None:
        return Device("cpu")
    elif isinstance(device, bool):  # bool is an int subclass; True/False are mistakes
        raise TypeError(f"device={device!r}: expected None, 'cpu', 'cuda', 'cuda:N' or an int")
    elif isinstance(device, (int, np.integer)):
        if device == -1:
            return Device("cpu")
        if device < 0:
            raise ValueError(f"device={device!r}: a GPU index must be >= 0 (or -1 for CPU)")
        parsed = Device("cuda", int(device))
    elif isinstance(device, str):
        parsed = _parse_device_string(device)
    elif hasattr(device, "type") and hasattr(device, "index"):  # a torch.device
        return parse_device(str(device))
    else:
        raise TypeError(
            f"device={device!r} ({type(device).__name__}): expected None, 'cpu', 'cuda', 'cuda:N' or an int"
        )
    if parsed.kind == "cuda":
        _import_cupy_for(parsed)  # fail now, with a clear message, not at first use
    return parsed


def _parse_device_string(text: str) -> Device:
    name = text.strip().lower()
    if name == "cpu":
        return Device("cpu")
    if name in ("cuda", "gpu"):
        return Device("cuda", 0)
    for prefix in ("cuda:", "gpu:"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return Device("cuda", int(name[len(prefix):]))
    raise ValueError(f"device={text!r}: expected 'cpu', 'cuda', 'cuda:N' or an int GPU index")


def _import_cupy_for(device: Device):
    try:
        import cupy
    except ImportError as exc:
        raise RuntimeError(
            f"device={str(device)!r} needs CuPy, which is not installed ({exc}). "
            "Install it with `pip install 'minibertgen[gpu]'`, or use device='cpu'."
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDARuntimeError without a driver
        raise RuntimeError(f"device={str(device)!r}: CuPy cannot reach a GPU ({exc})") from None
    if device.index is not None and device.index >= count:
        raise RuntimeError(f"device={str(device)!r}: only {count} GPU(s) visible")
    return cupy


def is_cupy_array(x) -> bool:
    return type(x).__module__.startswith("cupy")


def array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for x in arrays:
        if x is not None and is_cupy_array(x):
            import cupy

            return cupy
    return np


def tensor_module(tensor_type):
    """The array module of a tokenizer's ``return_tensors``: "np" -> NumPy, "cp" -> CuPy."""
    if tensor_type == "np":
        return np
    if tensor_type == "cp":
        try:
            import cupy
        except ImportError as exc:
            raise ImportError(
                "return_tensors='cp' needs CuPy, which is not installed; "
                "install the 'gpu' extra (pip install minibertgen[gpu]) or use return_tensors='np'"
            ) from exc
        return cupy
    raise ValueError(f"return_tensors must be None, 'np' or 'cp', got {tensor_type!r}")


def scatter_add(target, indices, values):
    """``target[indices] += values`` with repeated indices all added (not last-one-wins).

    The one place that picks the routine: NumPy's ``np.add.at``, CuPy's
    ``cupyx.scatter_add`` (whose float32 sums are not deterministic in their order).
    Modifies ``target`` in place and returns it.
    """
    if is_cupy_array(target):
        import cupyx

        cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)
    return target


def to_device(x, device: Device, dtype=None):
    """Move ``x`` (NumPy, CuPy, list or scalar) to ``device``, optionally casting."""
    if x is None:
        return None
    if device.kind == "cpu":
        arr = to_numpy(x)
        return arr if dtype is None else arr.astype(dtype, copy=False)
    cupy = device.xp
    with cupy.cuda.Device(device.index or 0):
        # copy as stored, then cast on the GPU: casting 3 GB of float32 to float16 on the
        # host first would take longer than the copy itself
        if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)  # a CPU layout (layout.py) is not the GPU kernels' layout
        arr = cupy.asarray(x)
        return arr if dtype is None else arr.astype(dtype, copy=False)


def to_numpy(x):
    """Return ``x`` as a NumPy array (copying from the GPU when needed)."""
    if x is None:
        return None
    if is_cupy_array(x):
        return x.get()
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor handed to us
        return x.detach().cpu().numpy()
    return np.asarray(x)


_DTYPE_NAMES = {
    "float32": np.float32,
    "fp32": np.float32,
    "float": np.float32,
    "float16": np.float16,
    "fp16": np.float16,
    "half": np.float16,
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def resolve_dtype(dtype, stored=None):
    """Resolve a user ``dtype`` to a NumPy dtype.

    ``None`` means float32 (the reference precision); ``"auto"`` keeps ``stored`` (the
    checkpoint's dtype). bfloat16 has no NumPy dtype, so it is computed in float32
    (documented in README); torch dtypes such as ``torch.float16`` are accepted by name.
    """
    if dtype is None:
        return np.dtype(np.float32)
    if isinstance(dtype, str) and dtype == "auto":
        return np.dtype(stored) if stored is not None else np.dtype(np.float32)
    name = dtype
    if not isinstance(name, str):
        text = str(dtype)
        name = text[len("torch."):] if text.startswith("torch.") else None
    if isinstance(name, str):
        if name.lower() not in _DTYPE_NAMES:
            raise ValueError(
                f"dtype={dtype!r}: expected one of None, 'auto', 'float32', 'float16', 'bfloat16'"
            )
        resolved = _DTYPE_NAMES[name.lower()]
        return np.dtype(np.float32) if resolved == "bfloat16" else np.dtype(resolved)
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype={dtype!r}: expected 'float32', 'float16', 'bfloat16' or 'auto'") from None
    if resolved.kind != "f":
        raise ValueError(f"dtype={dtype!r}: model weights must be floating point")
    return resolved


def device_and_dtype(args, device=None, dtype=None):
    """Split ``model.to(...)``'s arguments as torch's ``Module.to`` does: positional ones are a
    device ("cpu", "cuda:1", 0, a torch.device) and/or a dtype ("float16", np.float16,
    torch.float16); ``device=`` / ``dtype=`` may name them instead.  Returns (device or None,
    dtype or None), unparsed."""
    if len(args) > 2:
        raise TypeError(f"to() takes a device and/or a dtype, got {len(args)} positional arguments")
    for arg in args:
        if _looks_like_dtype(arg):
            if dtype is not None:
                raise TypeError(f"to(): two dtypes given ({dtype!r} and {arg!r})")
            dtype = arg
        else:
            if device is not None:
                raise TypeError(f"to(): two devices given ({device!r} and {arg!r})")
            device = arg
    return device, dtype


def _looks_like_dtype(value) -> bool:
    if isinstance(value, str):
        return value.lower() in _DTYPE_NAMES
    if isinstance(value, (type, np.dtype)):
        return True
    return str(value).startswith("torch.") and "device" not in type(value).__name__

