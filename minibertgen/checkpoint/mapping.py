"""From a checkpoint's tensors to a model's parameter tree.

Checkpoints name the same weights in several ways:

* a BertGenerationEncoder: ``embeddings.word_embeddings.weight``, ``encoder.layer.0...``;
* a BertGenerationDecoder: the same under ``bert.``, plus ``lm_head.decoder.weight`` and
  ``lm_head.bias``;
* a BERT / RoBERTa checkpoint used to warm-start: under ``bert.`` / ``roberta.`` (or
  bare), with ``token_type_embeddings``, ``pooler`` and ``cls.`` heads we do not use,
  and sometimes TensorFlow-era ``gamma`` / ``beta`` for LayerNorm weight / bias;
* an EncoderDecoderModel: ``encoder.`` + encoder keys and ``decoder.`` + decoder keys.

Here every name is reduced to a *body key* (the encoder-style name) and matched against
the shapes the config asks for.  Weights the file lacks are either tied to another
weight (the LM head to the word embeddings) or initialised as transformers initialises
them, and listed in one warning, as are the file's weights we did not use.
"""
from __future__ import annotations

import re
import warnings

import numpy as np

__all__ = ["body_shapes", "head_shapes", "body_key", "select", "initialise", "unflatten", "flatten",
           "LoadReport"]

_BODY_PREFIXES = ("bert.", "roberta.")


def body_shapes(config) -> dict:
    """Shapes of an encoder/decoder body (BertGenerationEncoder's state dict)."""
    h, inter, d = config.hidden_size, config.intermediate_size, config.hidden_size // config.num_attention_heads
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
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
    return shapes


def head_shapes(config) -> dict:
    """Shapes of the decoder's LM head."""
    return {"lm_head.decoder.weight": (config.vocab_size, config.hidden_size),
            "lm_head.bias": (config.vocab_size,)}


def body_key(name: str) -> str:
    """Reduce a checkpoint name to its body/head name: drop bert./roberta., rename gamma/beta."""
    for prefix in _BODY_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.endswith(".gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith(".beta"):
        name = name[: -len("beta")] + "bias"
    if name == "lm_head.decoder.bias":  # the same tensor as lm_head.bias in transformers
        name = "lm_head.bias"
    return name


class LoadReport:
    """What loading found: weights missing from the file, unused ones, tied ones."""

    def __init__(self):
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        self.tied: list[str] = []

    def warn(self, where: str) -> None:
        parts = []
        if self.missing:
            parts.append(f"newly initialised (not in the checkpoint): {', '.join(_summarise(self.missing))}")
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


def select(state: dict, shapes: dict, source: str, report: LoadReport, *, strip: str = "") -> dict:
    """Pick the tensors named in ``shapes`` out of ``state`` (names under ``strip``).

    Returns {name: array} for those found; shape mismatches are errors naming the key
    and both shapes; found-but-unwanted names go to ``report.unexpected``.
    """
    found = {}
    for raw_name, array in state.items():
        if not raw_name.startswith(strip):
            continue
        name = body_key(raw_name[len(strip):])
        if name not in shapes:
            if not name.endswith("position_ids"):  # a non-persistent buffer some files carry
                report.unexpected.append(raw_name)
            continue
        if tuple(array.shape) != tuple(shapes[name]):
            raise ValueError(
                f"{source}: weight {raw_name!r} has shape {tuple(array.shape)} but the config "
                f"expects {tuple(shapes[name])} for {name!r}"
            )
        found[name] = array
    return found


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
