"""``model.load_state_dict(state_dict, strict=True)``: copy named arrays into a model's
weights in place, as torch's Module.load_state_dict does.

The names are the checkpoint's (``model.state_dict().keys()``).  transformers' state
dicts also list a tied weight under its alias -- ``lm_head.decoder.bias`` beside
``lm_head.bias``, ``cls.predictions.decoder.bias`` beside ``cls.predictions.bias`` -- so
an alias is accepted for the weight it names (and must agree with it when both are given),
and a tied weight given under one of its names is not missing under the other.
The arrays are overwritten in place: the model's Parameters, and an optimiser that holds
them, keep pointing at the weights.  Each value is cast to the weight's dtype and moved to
its device; a shape that differs is an error naming the weight.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .backend import array_module, to_numpy

__all__ = ["load_state_dict", "IncompatibleKeys", "TIED_ALIASES"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# alias suffix in transformers' state_dict -> the suffix minibertgen names the same array by
TIED_ALIASES = {"lm_head.decoder.bias": "lm_head.bias", "cls.predictions.decoder.bias": "cls.predictions.bias"}


def _canonical(name, own):
    """The name ``own`` holds for ``name``: itself, or what a tied alias stands for."""
    if name in own:
        return name
    for alias, target in TIED_ALIASES.items():
        if name.endswith(alias) and name[: -len(alias)] + target in own:
            return name[: -len(alias)] + target
    return None


def load_state_dict(model, state_dict, strict: bool = True, assign: bool = False) -> IncompatibleKeys:
    """Copy ``state_dict`` ({name: array}) into ``model``'s weights; returns
    (missing_keys, unexpected_keys).  strict=True raises on either, naming them."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict: got {type(state_dict).__name__}, expected a dict of name -> array")
    if not isinstance(strict, bool):
        raise TypeError(f"strict={strict!r}: expected True or False")
    if assign:
        raise ValueError("assign=True: not supported (minibertgen copies into the existing weights)")
    model._make_trainable()
    own = model.state_dict()
    quantized = [n for n, a in own.items() if getattr(a, "is_quantized", False)]
    if quantized:
        raise ValueError(f"load_state_dict: the model holds quantized weights ({quantized[0]}, ...); "
                         "load it without quantization_config first")
    targets, unexpected = {}, []
    for name, value in state_dict.items():
        target = _canonical(name, own)
        if target is None:
            unexpected.append(name)
            continue
        if target in targets and target != name:  # an alias beside its weight: they must agree
            if not np.array_equal(to_numpy(targets[target][1]), to_numpy(value)):
                raise ValueError(f"state_dict: {name!r} is tied to {target!r} but holds different values")
            continue
        targets[target] = (name, value)
    loaded = {id(own[target]) for target in targets}
    missing = [name for name in own if name not in targets and id(own[name]) not in loaded]  # a tie counts once
    if strict and (missing or unexpected):
        raise ValueError("load_state_dict (strict=True): "
                         + (f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}; " if missing else "")
                         + (f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}; "
                            if unexpected else "")
                         + "pass strict=False to load what matches")
    _check_shapes(own, targets)
    for target, (_, value) in targets.items():
        array = own[target]
        xp = array_module(array)
        array[...] = xp.asarray(to_numpy(value), dtype=array.dtype)  # in place: parameters keep their array
    return IncompatibleKeys(missing, unexpected)


def _check_shapes(own, targets) -> None:
    """Every shape is checked before any weight changes, so a failed load changes nothing."""
    for target, (name, value) in targets.items():
        shape = tuple(getattr(value, "shape", np.shape(value)))
        if shape != tuple(own[target].shape):
            raise ValueError(f"load_state_dict: size mismatch for {name!r}: the state_dict has shape {shape}, "
                             f"the model's weight {tuple(own[target].shape)}")
