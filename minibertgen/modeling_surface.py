"""transformers' model surface that is not the forward pass: embedding accessors, vocabulary
resizing, step inputs, the legacy rule that rebuilds a generation config from the model
config, and torch modules' spellings (forward, cpu, cuda, half, float).  Kept apart so that
modeling.py stays the classes and their forward calls.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import seeding
from .backend import array_module

__all__ = ["ModuleSpellings", "EmbeddingsSurface", "resize_vocabulary", "step_inputs", "legacy_generation_config",
           "non_default_generation_parameters", "move_generation_parameters"]


class ModuleSpellings:
    """torch modules' names for calling, moving and casting a model, over its own ``__call__``
    and ``to`` (every model class has both)."""

    def __init_subclass__(cls, **kwargs):
        # forward is the class's own __call__, signature and docstring included, as in torch
        # (inspect.signature(Model.forward) shows input_ids first: main_input_name)
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            cls.forward = cls.__dict__["__call__"]

    def forward(self, *args, **kwargs):
        """The forward pass, as torch modules spell it: the same as calling the model."""
        return self(*args, **kwargs)

    def half(self):
        """``to(dtype="float16")``, as torch modules spell it; returns self."""
        return self.to(dtype="float16")

    def float(self):
        """``to(dtype="float32")``, as torch modules spell it; returns self."""
        return self.to(dtype="float32")

    def cpu(self):
        """``to("cpu")``, as torch modules spell it; returns self."""
        return self.to("cpu")

    def cuda(self, device=None):
        """``to("cuda")`` (or ``to(device)``: an index or "cuda:N"), as torch modules spell it; returns self."""
        return self.to("cuda" if device is None else device)


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
    rng = seeding.generator()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is old.weight
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


def step_inputs(input_ids, past_key_values, attention_mask, extra) -> dict:
    """prepare_inputs_for_generation: the ids the cache has not seen, the cache and the mask;
    with a mask (a decoder used alone) position ids from it, as transformers derives them."""
    seen = past_key_values.get_seq_length() if past_key_values is not None else 0
    inputs = {"input_ids": input_ids[:, seen:], "past_key_values": past_key_values,
              "attention_mask": attention_mask, "use_cache": extra.pop("use_cache", True)}
    if attention_mask is not None and extra.get("position_ids") is None:
        xp = array_module(attention_mask)
        mask = xp.asarray(attention_mask).astype(np.int64)
        positions = mask.cumsum(axis=-1) - 1  # [batch, seq]
        positions[mask == 0] = 1
        inputs["position_ids"] = positions[:, seen:]
    inputs.update({k: v for k, v in extra.items() if v is not None})
    return inputs


# transformers' PretrainedConfig._get_global_generation_defaults (4.57)
_GLOBAL_GENERATION_DEFAULTS = {
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "num_beam_groups": 1, "diversity_penalty": 0.0,
}


def non_default_generation_parameters(model_config) -> dict:
    """Generation parameters the model config (its top level) holds with non-default values."""
    found = {}
    for name, default in _GLOBAL_GENERATION_DEFAULTS.items():
        value = getattr(model_config, name, None)
        if value is not None and value != default:
            found[name] = value
    return found


def _snapshot(generation_config) -> dict:
    data = generation_config.to_dict()
    data.pop("transformers_version", None)
    return data


def legacy_generation_config(model, current):
    """transformers' legacy rule, applied where generate() reads ``model.generation_config``.

    When the generation config was derived from the model config (``_from_model_config``,
    e.g. generation_config.json written that way), has not been changed since it was made,
    and the model config now holds non-default generation parameters (the warm-starting
    guide sets ``config.num_beams``, ``max_length``, ``decoder_start_token_id``, ... on the
    model after making it), the generation config is rebuilt from the model config, with
    transformers' warning, and kept.
    """
    if not getattr(current, "_from_model_config", False):
        return current
    snapshot = getattr(model, "_generation_snapshot", None)
    if snapshot is None:
        model._generation_snapshot = snapshot = _snapshot(current)
    if _snapshot(current) != snapshot or not non_default_generation_parameters(model.config):
        return current
    rebuilt = type(current).from_model_config(model.config)
    if _snapshot(rebuilt) == snapshot:
        return current
    names = ", ".join(non_default_generation_parameters(model.config))
    warnings.warn(f"model.config holds generation settings ({names}) "
                  "that the generation config made from it lacks: it is rebuilt from model.config, as transformers "
                  "4.57 does (a legacy rule; set model.generation_config instead)", UserWarning, stacklevel=3)
    model._generation_config = rebuilt
    model._generation_snapshot = _snapshot(rebuilt)
    return rebuilt


def move_generation_parameters(model_config, generation_config) -> None:
    """save_pretrained, as transformers 4.57: generation parameters set on the model config move
    to the generation config (with its warning) and read None in config.json."""
    moved = non_default_generation_parameters(model_config)
    if not moved:
        return
    warnings.warn(f"save_pretrained: moving generation parameters from the model config to the generation "
                  f"config: {moved} (set them on model.generation_config instead)", UserWarning, stacklevel=3)
    for name, value in moved.items():
        setattr(generation_config, name, value)
        setattr(model_config, name, None)


def _generation_config_get(model):
    from .generation import GenerationMixin

    return legacy_generation_config(model, GenerationMixin.generation_config.fget(model))


def _generation_config_set(model, value):
    from .generation import GenerationMixin

    GenerationMixin.generation_config.fset(model, value)
    model._generation_snapshot = None


# The generation_config property of the models that generate: GenerationMixin's, read
# through legacy_generation_config's rule (one definition for every such class).
generation_config_property = property(_generation_config_get, _generation_config_set,
                                      doc="The generation config generate() uses (see legacy_generation_config).")
