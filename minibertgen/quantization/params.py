"""Swap the linear weights of a parameter tree for quantized ones (the load-time step).

Which weights: every ``{"weight": [out, in], ...}`` node of the tree - the attention
projections, the feed-forward layers, their output projections and, in an
EncoderDecoderModel, ``enc_to_dec_proj``.  Kept in their float dtype, as bitsandbytes
does by default: embeddings (any name containing "embedding"), LayerNorms (1-D), the
LM head (``lm_head``, always), biases, and every module named in
``llm_int8_skip_modules``.  A name there matches a module when it equals one of the
module's dotted path segments or a run of them: "query", "crossattention",
"layer.0", "decoder.bert.encoder.layer.3.attention.self.key".
"""
from __future__ import annotations

import numpy as np

from .config import BitsAndBytesConfig
from .weights import QuantizedWeight4bit, QuantizedWeight8bit

__all__ = ["quantize_params", "quantize_weight", "quantized_weights", "as_config", "ALWAYS_SKIPPED"]

ALWAYS_SKIPPED = ("lm_head",)


def quantize_weight(weight, quantization_config: BitsAndBytesConfig):
    """One [out, in] float weight -> its quantized form, as the config asks."""
    config = as_config(quantization_config)
    if config.load_in_4bit:
        return QuantizedWeight4bit.from_float(weight, config.bnb_4bit_quant_type,
                                              config.bnb_4bit_use_double_quant, config.compute_dtype)
    if config.load_in_8bit:
        return QuantizedWeight8bit.from_float(weight, config.llm_int8_threshold, config.llm_int8_has_fp16_weight)
    raise ValueError("quantization_config has load_in_8bit=False and load_in_4bit=False: set one of them")


def quantize_params(tree, quantization_config):
    """Return a copy of ``tree`` whose linear weights are quantized (the arrays are not copied).

    ``quantization_config`` is a BitsAndBytesConfig or its ``to_dict()``.  A weight held
    under two names (tied) is quantized once and stays one object.
    """
    config = as_config(quantization_config)
    if not config.is_quantizable():
        raise ValueError("quantization_config has load_in_8bit=False and load_in_4bit=False: set one of them")
    skip = list(ALWAYS_SKIPPED) + list(config.llm_int8_skip_modules or [])
    return _walk(tree, "", config, skip, {})


def quantized_weights(tree, prefix: str = "") -> dict:
    """{"...query.weight": quantized weight} for every quantized weight in ``tree`` (for reports)."""
    found = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if getattr(value, "is_quantized", False):
            found[name] = value
        else:
            found.update(quantized_weights(value, name + "."))
    return found


def _walk(node, name, config, skip, done):
    if isinstance(node, list):
        return [_walk(child, _join(name, str(i)), config, skip, done) for i, child in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if _is_linear(node, name) and not _skipped(name, skip):
        weight = node["weight"]
        if id(weight) not in done:
            done[id(weight)] = quantize_weight(weight, config)
        return {**node, "weight": done[id(weight)]}
    return {key: _walk(child, _join(name, key), config, skip, done) for key, child in node.items()}


def _is_linear(node: dict, name: str) -> bool:
    weight = node.get("weight")
    if weight is None or getattr(weight, "is_quantized", False):
        if weight is not None:
            raise ValueError(f"{name}.weight is already quantized: quantize a float parameter tree once")
        return False
    last = name.rsplit(".", 1)[-1]
    return getattr(weight, "ndim", 0) == 2 and "embedding" not in last and np.dtype(weight.dtype).kind == "f"


def _skipped(name: str, skip) -> bool:
    dotted = f".{name}."
    return any(f".{key}." in dotted for key in skip)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def as_config(value) -> BitsAndBytesConfig:
    if isinstance(value, BitsAndBytesConfig):
        return value
    if isinstance(value, dict):
        return BitsAndBytesConfig.from_dict(value)
    cls = type(value)
    if cls.__name__ == "BitsAndBytesConfig" and hasattr(value, "to_dict"):  # transformers' own config
        return BitsAndBytesConfig.from_dict(_plain(value.to_dict()))
    raise TypeError(f"quantization_config: expected a minibertgen.BitsAndBytesConfig (or its dict), "
                    f"got {cls.__module__}.{cls.__name__}")


def _plain(config_dict: dict) -> dict:
    """transformers' to_dict() of a BitsAndBytesConfig, reduced to the keys we read."""
    known = BitsAndBytesConfig().to_dict().keys()
    return {key: value for key, value in config_dict.items() if key in known}
