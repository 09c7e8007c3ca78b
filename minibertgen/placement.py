"""Putting weights where they compute: cast, move to the device, quantize when asked, and on
the CPU the memory layout of fast/layout.py.  Used when loading (loading.py), when a model
is made with random weights, and by ``model.to(...)``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .backend import Device, resolve_dtype, to_device
from .checkpoint.mapping import unflatten
from .fast.layout import arrange_for_cpu
from .progress import progress

__all__ = ["materialise", "place", "cast_dtype", "quantize_if_asked", "prequantized_state", "stored_float_dtype",
           "memory_footprint"]


def materialise(flat: dict, dtype, device: Device) -> dict:
    """Cast floating weights to ``dtype`` and move everything to ``device``.

    Arrays already in the right dtype on the CPU are kept as they are (memory-mapped views
    of the checkpoint: no copy).  Tied weights (one array under two names) stay one array.
    """
    done: dict[int, object] = {}
    out = {}
    for name, array in progress(flat.items(), desc="loading weights", unit="tensor", min_items=64,
                                total=len(flat)):
        if id(array) not in done:
            done[id(array)] = _placed(array, dtype, device)
        out[name] = done[id(array)]
    return out


def _placed(array, dtype, device: Device):
    """One entry on ``device``: floats cast to ``dtype``, integers as they are, a quantized
    weight (from a quantized checkpoint) with each of its parts moved."""
    if getattr(array, "is_quantized", False):
        from .quantization.serialization import move_quantized

        return move_quantized(array, lambda part: to_device(part, device))
    return to_device(array, device, dtype=dtype if np.dtype(array.dtype).kind == "f" else None)


def place(flat: dict, dtype, device: Device, *, quantization_config=None, config=None, quantized_as=None) -> dict:
    """Flat weights -> the parameter tree on ``device``: cast, move, quantize (when asked),
    then on the CPU the memory layout of fast/layout.py (same shapes and values).
    ``quantized_as``: :func:`half_quantization` / :func:`seq2seq_quantization` of the model."""
    tree = unflatten(materialise(flat, dtype, device))
    tree = quantize_if_asked(tree, quantization_config, config, quantized_as)
    if device.kind == "cpu":
        tree = arrange_for_cpu(tree)
    return tree


def cast_dtype(state: dict, dtype):
    """``model.to(dtype=...)``'s NumPy dtype (None: keep each weight's).  A quantized model
    is refused, as transformers refuses to cast a bitsandbytes model."""
    if dtype is None:
        return None
    if any(getattr(array, "is_quantized", False) for array in state.values()):
        raise ValueError(f"dtype={dtype!r}: this model holds 8-bit / 4-bit weights, which cannot be cast; load it "
                         "again with the dtype wanted (its quantization_config's compute dtype sets the rest)")
    return resolve_dtype(dtype)


def quantize_if_asked(tree: dict, quantization_config, config, quantized_as=None):
    """Swap linear-layer weights for 8/4-bit ones when a BitsAndBytesConfig is given; the
    config then records it (``quantization_config`` in config.json, as transformers writes).

    ``quantized_as`` = (checkpoint_name, keep_float): how this model's weights are named in
    transformers and the modules transformers' bitsandbytes integration keeps float for it
    by default, so that the same linear layers are quantized (quantization/params.py)."""
    if quantization_config is None:
        return tree
    from .quantization.params import as_config, quantize_params

    quantization_config = as_config(quantization_config)
    checkpoint_name, keep_float = quantized_as if quantized_as is not None else (None, ("lm_head",))
    tree = quantize_params(tree, quantization_config, checkpoint_name=checkpoint_name, keep_float=keep_float)
    config.quantization_config = quantization_config.to_dict()
    return tree


def prequantized_state(state: dict, config, quantization_config):
    """A checkpoint saved quantized (config.json has a quantization_config): its packed
    weights become quantized weight objects, as transformers loads bitsandbytes files.
    Returns (state, the quantization_config still to apply: None for such a checkpoint)."""
    saved = getattr(config, "quantization_config", None)
    if saved is None:
        return state, quantization_config
    from .quantization.params import as_config
    from .quantization.serialization import load_prequantized

    saved = as_config(saved)
    if quantization_config is not None and as_config(quantization_config) != saved:
        warnings.warn("quantization_config was passed to from_pretrained, but the checkpoint is already "
                      "quantized: the quantization_config from its config.json is used", stacklevel=4)
    config.quantization_config = saved.to_dict()
    return load_prequantized(state, saved), None


def stored_float_dtype(state: dict):
    for array in state.values():
        if np.dtype(array.dtype).kind == "f" and not getattr(array, "is_quantized", False):
            return np.dtype(array.dtype)
    return None


def memory_footprint(flat: dict) -> int:
    """Bytes held by the distinct arrays (tied weights counted once), as transformers reports."""
    unique = {id(a): a for a in flat.values()}
    return int(sum(a.nbytes for a in unique.values()))
