"""transformers' embedding accessors and vocabulary resizing: what get_input_embeddings() /
get_output_embeddings() return, and model.resize_token_embeddings()."""
from __future__ import annotations

import os

import numpy as np

from . import seeding
from .backend import array_module

__all__ = ["EmbeddingsSurface", "resize_vocabulary"]


class EmbeddingsSurface:
    """What ``get_input_embeddings()`` / ``get_output_embeddings()`` return: the model's own
    ``{"weight": [rows, hidden]}`` node, seen as transformers' nn.Embedding / nn.Linear is
    (``.weight``, ``num_embeddings``, ``embedding_dim``).  Reading ``.weight`` gives the array
    the model computes with; assigning it replaces that array in the model."""

    def __init__(self, node: dict, bias_owner: dict = None):
        self._node = node
        self._bias_owner = bias_owner  # an LM head's node holding "bias" (nn.Linear's bias, tied as in transformers)

    def __eq__(self, other):
        """The same embeddings: the same weight array (as transformers compares the module)."""
        return self.weight is getattr(other, "weight", other)

    __hash__ = object.__hash__

    @property
    def weight(self):
        return self._node["weight"]

    @weight.setter
    def weight(self, value):
        self.replace(value, self._node["weight"].shape[1])

    @property
    def bias(self):
        if self._bias_owner is None:
            raise AttributeError("input embeddings have no bias (an nn.Embedding has none)")
        return self._bias_owner["bias"]

    @bias.setter
    def bias(self, value):
        if self._bias_owner is None:
            raise AttributeError("input embeddings have no bias (an nn.Embedding has none)")
        if getattr(value, "shape", None) != (self._node["weight"].shape[0],):
            raise ValueError(f"bias: expected shape ({self._node['weight'].shape[0]},), got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
        self._bias_owner["bias"] = value

    @property
    def num_embeddings(self) -> int:
        return int(self._node["weight"].shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self._node["weight"].shape[1])

    def replace(self, value, hidden: int = None) -> None:
        """Put ``value`` (an object with ``.weight``, or a 2-D array) in place of the table;
        ``hidden``: the width it must have (None: any)."""
        weight = getattr(value, "weight", value)
        if hasattr(weight, "detach") and hasattr(weight, "numpy"):  # a torch tensor / Parameter
            weight = weight.detach().cpu().numpy()
        if getattr(weight, "ndim", None) != 2 or (hidden is not None and weight.shape[1] != hidden):
            width = "hidden" if hidden is None else hidden
            raise ValueError(f"embeddings: expected a [vocab, {width}] matrix, got shape "
                             f"{tuple(getattr(weight, 'shape', ()))}")
        if np.dtype(weight.dtype).kind != "f":  # as loading refuses such a weight: logits would change type
            raise TypeError(f"embeddings: the table has dtype {np.dtype(weight.dtype)}: expected floating point "
                            "(float32, float16); cast it first, e.g. table.astype(np.float32)")
        self._node["weight"] = weight


def resize_vocabulary(model, new_num_tokens, pad_to_multiple_of=None, mean_resizing=True):
    """model.resize_token_embeddings: word embeddings (and a head's projection and bias) to
    ``new_num_tokens`` rows; config.vocab_size follows; a tied head stays the embeddings.

    New rows: with mean_resizing (transformers' default) the mean of the old rows, which is
    what transformers draws them around (its covariance is scaled by 1e-9); else
    N(0, initializer_range).  New bias entries: 0 for a head tied to the embeddings; the old
    bias' mean for an untied one with mean_resizing (as transformers).
    """
    config = model.config
    old = model.get_input_embeddings()
    if new_num_tokens is None and pad_to_multiple_of is None:
        return old
    rows = old.num_embeddings if new_num_tokens is None else new_num_tokens
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows <= 0:
        raise ValueError(f"new_num_tokens={new_num_tokens!r}: expected a positive integer")
    if pad_to_multiple_of is not None:
        if isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r}: expected a positive integer")
        rows = -(-rows // pad_to_multiple_of) * pad_to_multiple_of
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is old.weight
    _check_fits(old.weight, rows, tables=1 if head is None or tied else 2)
    rng = seeding.generator()
    new_table = _resized(old.weight, rows, mean_resizing, config.initializer_range, rng)
    old._node["weight"] = new_table
    if head is not None:
        head._node["weight"] = new_table if tied else _resized(head.weight, rows, mean_resizing,
                                                               config.initializer_range, rng)
        bias = model.params["lm_head"]["bias"]
        # transformers pads a tied head's bias with zeros; an untied head is mean-resized
        model.params["lm_head"]["bias"] = _resized_bias(bias, rows, mean_resizing and not tied)
    config.vocab_size = int(rows)
    model.vocab_size = int(rows)  # transformers sets it on the model too
    return model.get_input_embeddings()


def _check_fits(weight, rows: int, tables: int) -> None:
    """Refuse a vocabulary whose tables need more bytes than the device holds, before allocating."""
    need = int(rows) * weight.shape[1] * np.dtype(weight.dtype).itemsize * tables
    have, where = _memory_bytes(array_module(weight))
    if have is not None and need > have:
        raise ValueError(f"new_num_tokens={rows}: {tables} table(s) of [{rows}, {weight.shape[1]}] "
                         f"{np.dtype(weight.dtype)} would take {need:,} bytes ({need / 2**30:,.1f} GiB), more than "
                         f"{where} has ({have:,} bytes); expected a vocabulary that fits")


def _memory_bytes(xp):
    """(total memory in bytes, its name) of the device ``xp`` works on; None when unknown."""
    try:
        if xp is np:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
        return int(xp.cuda.runtime.memGetInfo()[1]), "the GPU's memory"  # (free, total); not run here: no GPU
    except (AttributeError, ValueError, OSError, RuntimeError):  # no such call, or CUDA's error: unknown
        return None, ""


def _resized(weight, rows, mean_resizing, std, rng):
    xp = array_module(weight)
    old_rows = weight.shape[0]
    if rows <= old_rows:
        return xp.ascontiguousarray(weight[:rows])
    if mean_resizing:
        extra = xp.broadcast_to(weight.astype(np.float32).mean(axis=0), (rows - old_rows, weight.shape[1]))
    else:
        extra = xp.asarray(rng.normal(0.0, std, size=(rows - old_rows, weight.shape[1])))
    return xp.concatenate([weight, extra.astype(weight.dtype)], axis=0)  # [rows, hidden]


def _resized_bias(bias, rows, mean_resizing):
    xp = array_module(bias)
    if rows <= bias.shape[0]:
        return xp.ascontiguousarray(bias[:rows])
    fill = float(bias.astype(np.float32).mean()) if mean_resizing else 0.0
    return xp.concatenate([bias, xp.full(rows - bias.shape[0], fill, dtype=bias.dtype)])  # [rows]
