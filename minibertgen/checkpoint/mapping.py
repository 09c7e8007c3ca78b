"""From a checkpoint's tensor names to a model's parameter tree, and back.

The three BERT-family halves name the same weights in their own ways:

* ``bert-generation``: BertGenerationEncoder ``embeddings.word_embeddings.weight``,
  ``encoder.layer.0...``; BertGenerationDecoder the same under ``bert.``, plus
  ``lm_head.decoder.weight`` and ``lm_head.bias``;
* ``bert``: BertModel adds ``embeddings.token_type_embeddings`` and ``pooler.dense``;
  BertLMHeadModel has its body under ``bert.`` and the head as
  ``cls.predictions.transform.{dense,LayerNorm}``, ``cls.predictions.decoder.weight``,
  ``cls.predictions.bias``;
* ``roberta``: RobertaModel as BertModel; RobertaForCausalLM under ``roberta.`` with
  ``lm_head.{dense,layer_norm,decoder}`` and ``lm_head.bias``;
* an EncoderDecoderModel: ``encoder.`` + encoder names and ``decoder.`` + decoder names;
* TensorFlow-era files may say ``gamma`` / ``beta`` for LayerNorm weight / bias.

Inside minibertgen every half uses ONE tree layout, whatever its family, so the forward
pass (model.py) never asks which family it runs: the body bare for an encoder and under
``bert`` for a decoder, the head as ``lm_head.decoder.weight``, ``lm_head.bias`` and, for
BERT and RoBERTa, ``lm_head.transform.{dense,LayerNorm}``.  :func:`tree_name` maps a
checkpoint name onto that layout and :func:`checkpoint_name` back, per family.
"""
from __future__ import annotations

import re
import warnings

import numpy as np

from .. import families

__all__ = ["body_shapes", "head_shapes", "tree_name", "checkpoint_name", "select", "check_layer_count", "initialise",
           "unflatten", "flatten", "LoadReport", "BASE_MODEL_PREFIX"]

# transformers' base_model_prefix of each family: a causal LM keeps its body under it.
BASE_MODEL_PREFIX = families.BASE_MODEL_PREFIX  # (families.py: the one registry)

# Head names per family: (checkpoint prefix or name, tree prefix or name), first match wins.
_HEAD_NAMES = {
    "bert-generation": (("lm_head.decoder.bias", "lm_head.bias"), ("lm_head.", "lm_head.")),
    "bert": (("cls.predictions.transform.", "lm_head.transform."),
             ("cls.predictions.decoder.weight", "lm_head.decoder.weight"),
             ("cls.predictions.decoder.bias", "lm_head.bias"), ("cls.predictions.bias", "lm_head.bias")),
    "roberta": (("lm_head.dense.", "lm_head.transform.dense."),
                ("lm_head.layer_norm.", "lm_head.transform.LayerNorm."),
                ("lm_head.decoder.bias", "lm_head.bias"), ("lm_head.", "lm_head.")),
}


def body_shapes(config, pooler: bool = False) -> dict:
    """Shapes of an encoder/decoder body in the tree layout (BertGenerationEncoder's names);
    BERT and RoBERTa add token-type embeddings, and their base models a pooler."""
    h, inter, d = config.hidden_size, config.intermediate_size, config.hidden_size // config.num_attention_heads
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
    }
    if config.model_type != "bert-generation":
        shapes["embeddings.token_type_embeddings.weight"] = (config.type_vocab_size, h)
    shapes["embeddings.LayerNorm.weight"] = (h,)
    shapes["embeddings.LayerNorm.bias"] = (h,)
    cross_in = getattr(config, "cross_attention_hidden_size", None) or h
    for i in range(config.num_hidden_layers):
        blocks = ["attention"] + (["crossattention"] if config.add_cross_attention else [])
        for block in blocks:
            kv_in = cross_in if block == "crossattention" else h
            base = f"encoder.layer.{i}.{block}."
            for name, inp in (("query", h), ("key", kv_in), ("value", kv_in)):
                shapes[base + f"self.{name}.weight"] = (h, inp)
                shapes[base + f"self.{name}.bias"] = (h,)
            if block == "attention" and config.position_embedding_type != "absolute":
                shapes[base + "self.distance_embedding.weight"] = (2 * config.max_position_embeddings - 1, d)
            shapes[base + "output.dense.weight"] = (h, h)
            shapes[base + "output.dense.bias"] = (h,)
            shapes[base + "output.LayerNorm.weight"] = (h,)
            shapes[base + "output.LayerNorm.bias"] = (h,)
        base = f"encoder.layer.{i}."
        shapes[base + "intermediate.dense.weight"] = (inter, h)
        shapes[base + "intermediate.dense.bias"] = (inter,)
        shapes[base + "output.dense.weight"] = (h, inter)
        shapes[base + "output.dense.bias"] = (h,)
        shapes[base + "output.LayerNorm.weight"] = (h,)
        shapes[base + "output.LayerNorm.bias"] = (h,)
    if pooler:
        shapes["pooler.dense.weight"] = (h, h)
        shapes["pooler.dense.bias"] = (h,)
    return shapes


def head_shapes(config) -> dict:
    """Shapes of a causal LM's head in the tree layout (BERT and RoBERTa: with the transform)."""
    h = config.hidden_size
    shapes = {}
    if config.model_type != "bert-generation":
        shapes = {"lm_head.transform.dense.weight": (h, h), "lm_head.transform.dense.bias": (h,),
                  "lm_head.transform.LayerNorm.weight": (h,), "lm_head.transform.LayerNorm.bias": (h,)}
    shapes["lm_head.decoder.weight"] = (config.vocab_size, h)
    shapes["lm_head.bias"] = (config.vocab_size,)
    return shapes


def tree_name(name: str, family: str, lm: bool):
    """A checkpoint name -> its tree name (body names bare, head names lm_head.*), or None
    for a name this half has no place for.  A body under the family's base-model prefix
    is found there, as transformers finds it (a BERT checkpoint's ``bert.`` body loads
    into BertModel and BertGenerationEncoder alike); the head only for a causal LM."""
    if name.endswith(".gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith(".beta"):
        name = name[: -len("beta")] + "bias"
    prefix = BASE_MODEL_PREFIX[family] + "."
    if name.startswith(prefix):
        return name[len(prefix):]
    for stored, ours in _HEAD_NAMES[family]:
        if name == stored or (stored.endswith(".") and name.startswith(stored)):
            return (ours + name[len(stored):]) if lm else None
    return name


def checkpoint_name(name: str, family: str, lm: bool) -> str:
    """The inverse of :func:`tree_name`, for a name in a half's tree (decoder body under ``bert.``)."""
    if not lm:
        return name
    if name.startswith("bert."):
        return BASE_MODEL_PREFIX[family] + name[len("bert"):]
    if family == "bert-generation":
        return name
    for stored, ours in _HEAD_NAMES[family]:
        if name.startswith(ours) and (ours.endswith(".") or name == ours) and "decoder.bias" not in stored:
            return stored + name[len(ours):]
    return name


class LoadReport:
    """What loading found: weights missing from the file, unused ones, tied ones, and (with
    ``ignore_mismatched``: from_pretrained's ignore_mismatched_sizes=True) those whose
    stored shape differs from the config's, which are initialised afresh instead."""

    def __init__(self, ignore_mismatched: bool = False):
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        self.tied: list[str] = []
        self.ignore_mismatched = ignore_mismatched
        self.mismatched: dict[str, tuple] = {}  # checkpoint name -> (stored shape, expected shape)
        self.mismatched_names: set[str] = set()  # the same weights by the names select() looks up

    def warn(self, where: str) -> None:
        parts = []
        if self.missing:
            parts.append(f"newly initialised (not in the checkpoint): {', '.join(_summarise(self.missing))}")
        if self.mismatched:
            shapes = ", ".join(f"{name} ({stored} in the checkpoint, {expected} in the model)"
                               for name, (stored, expected) in self.mismatched.items())
            parts.append(f"newly initialised because the shapes did not match: {shapes}")
        if self.unexpected:
            parts.append(f"unused weights in the checkpoint: {', '.join(_summarise(self.unexpected))}")
        if parts:
            warnings.warn(f"{where}: " + "; ".join(parts), stacklevel=4)  # warn <- load_checkpoint <- from_pretrained <- caller


def _summarise(names):
    """Every name, with per-layer names folded: encoder.layer.{0-23}.crossattention.self.key.weight."""
    groups: dict[str, list[int]] = {}
    for name in names:
        match = _LAYER.search(name)
        if match is None:
            groups.setdefault(name, [])
        else:
            pattern = name[:match.start(1)] + "{}" + name[match.end(1):]
            groups.setdefault(pattern, []).append(int(match.group(1)))
    out = []
    for pattern, layers in sorted(groups.items()):
        if not layers:
            out.append(pattern)
            continue
        layers = sorted(set(layers))
        contiguous = layers == list(range(layers[0], layers[-1] + 1))
        label = f"{layers[0]}-{layers[-1]}" if contiguous and len(layers) > 1 else ",".join(map(str, layers))
        out.append(pattern.replace("{}", "{" + label + "}" if len(layers) > 1 else label))
    return out


_LAYER = re.compile(r"\.layer\.(\d+)\.")


def select(state: dict, shapes: dict, source: str, report: LoadReport, *, family: str, lm: bool,
           strip: str = "") -> dict:
    """Pick the tensors named in ``shapes`` (tree names) out of ``state`` (names under ``strip``).

    Returns {tree name: array} for those found; shape mismatches are errors naming the key
    and both shapes (with ``report.ignore_mismatched``: left out and listed in
    ``report.mismatched``, to be initialised afresh); found-but-unwanted names go to
    ``report.unexpected``.
    """
    found = {}
    for raw_name, array in state.items():
        if not raw_name.startswith(strip):
            continue
        name = tree_name(raw_name[len(strip):], family, lm)
        if name not in shapes:
            if name is None or not name.endswith("position_ids"):  # a non-persistent buffer some files carry
                report.unexpected.append(raw_name)
            continue
        if tuple(array.shape) != tuple(shapes[name]):
            if report.ignore_mismatched:  # initialised afresh by the caller, reported as mismatched
                report.mismatched[raw_name] = (tuple(array.shape), tuple(shapes[name]))
                report.mismatched_names.add(name)
                continue
            raise ValueError(
                f"{source}: weight {raw_name!r} has shape {tuple(array.shape)} but the config "
                f"expects {tuple(shapes[name])} for {name!r}"
            )
        if not getattr(array, "is_quantized", False) and np.dtype(array.dtype).kind != "f":
            raise ValueError(f"{source}: weight {raw_name!r} has dtype {np.dtype(array.dtype)}: expected a "
                             "floating-point tensor (float32, float16 or bfloat16)")
        found[name] = array
    return found


_STORED_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def check_layer_count(state: dict, config, source: str, strip: str = "") -> None:
    """Refuse, before anything is built, a checkpoint holding fewer layers than the config asks
    for: the rest would be random (num_hidden_layers=10**6 over a 2-layer file would start
    initialising a million layers).  A state without layers (a fresh model) passes."""
    stored = {int(match.group(1)) for name in state if name.startswith(strip)
              for match in [_STORED_LAYER.search(name[len(strip):])] if match}
    if stored and max(stored) + 1 < config.num_hidden_layers:
        have = max(stored) + 1
        raise ValueError(f"{source}: the checkpoint holds {have} layer(s) (encoder.layer.0-{have - 1}) but "
                         f"num_hidden_layers={config.num_hidden_layers}: the other layers would be random. "
                         f"Load it with num_hidden_layers={have} (or fewer)")


def initialise(name: str, shape, config, rng) -> np.ndarray:
    """A fresh weight, initialised as transformers' _init_weights does.

    Linear and embedding weights ~ N(0, initializer_range); biases 0; LayerNorm weight 1;
    the padding row of the word embeddings 0.
    """
    if "LayerNorm" in name:
        return (np.ones if name.endswith("weight") else np.zeros)(shape, dtype=np.float32)
    if name.endswith("bias"):
        return np.zeros(shape, dtype=np.float32)
    weight = rng.normal(0.0, config.initializer_range, size=shape).astype(np.float32)
    pad = getattr(config, "pad_token_id", None)
    if name.endswith("word_embeddings.weight") and pad is not None and 0 <= pad < shape[0]:
        weight[pad] = 0.0
    return weight


def unflatten(flat: dict) -> dict:
    """{"a.0.b": x} -> {"a": [{"b": x}]}: dotted names to a nested tree, numbers to lists."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(tree)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_lists(node[str(i)]) for i in range(len(node))]
    return {k: _lists(v) for k, v in node.items()}


def flatten(tree, prefix: str = "") -> dict:
    """The inverse of :func:`unflatten`."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix[:-1]: tree}
    out = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}{key}."))
    return out
