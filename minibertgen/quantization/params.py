"""Swap the linear weights of a parameter tree for quantized ones (the load-time step).

Which weights: every ``{"weight": [out, in], ...}`` node of the tree (a linear layer) that
transformers 4.57 + bitsandbytes would quantize in the same model.  Never quantized: embeddings
(any name containing "embedding"), LayerNorms (1-D), biases.  A linear layer stays float when
one of the *keys* below names its module, by transformers' test (:func:`kept_float`): a key
equal to the module's own last name ("query"), equal to its whole path, or followed by a dot
anywhere in its path ("crossattention" keeps ``...layer.0.crossattention.self.query``;
"attention" keeps cross-attention too, since "crossattention." contains "attention.").
Paths are transformers' module names (``cls.predictions.transform.dense``, not the tree's
``lm_head.transform.dense``): loading.py passes ``module_name`` to translate.

The keys are ``llm_int8_skip_modules`` when the config gives them, and only those (as in
transformers, the LM head is then quantized unless listed).  When it is None, they are
transformers' defaults (its ``get_keys_to_not_convert``): every module holding a weight that is
tied to another (one array under two names here), plus ``keep_float``, the modules the model
class adds - its LM head (whose bias transformers ties to the vocabulary projection's) and the
model's last module (a base model's pooler, an EncoderDecoderModel's ``enc_to_dec_proj``).

A tied weight is never quantized: transformers 4.57 fails to load a model whose
llm_int8_skip_modules leave one quantized, so that is refused here, naming the weight.
"""
from __future__ import annotations

import numpy as np

from .config import BitsAndBytesConfig
from .weights import QuantizedWeight4bit, QuantizedWeight8bit

__all__ = ["quantize_params", "quantize_weight", "quantized_weights", "kept_float", "as_config",
           "DEFAULT_KEEP_FLOAT"]

DEFAULT_KEEP_FLOAT = ("lm_head",)  # a bare tree's default: its LM head, as named in the tree


def quantize_weight(weight, quantization_config: BitsAndBytesConfig):
    """One [out, in] float weight -> its quantized form, as the config asks."""
    config = as_config(quantization_config)
    if config.load_in_4bit:
        return QuantizedWeight4bit.from_float(weight, config.bnb_4bit_quant_type,
                                              config.bnb_4bit_use_double_quant, config.compute_dtype)
    if config.load_in_8bit:
        return QuantizedWeight8bit.from_float(weight, config.llm_int8_threshold, config.llm_int8_has_fp16_weight)
    raise ValueError("quantization_config has load_in_8bit=False and load_in_4bit=False: set one of them")


def kept_float(module: str, keys) -> bool:
    """Does a linear layer at module path ``module`` stay float under ``keys``?  transformers'
    test: a key is its own (last) name, or its whole path, or a key plus "." occurs in its path."""
    own = module.rsplit(".", 1)[-1]
    return any(key == own or key == module or f"{key}." in module for key in keys)


def quantize_params(tree, quantization_config, *, checkpoint_name=None, keep_float=DEFAULT_KEEP_FLOAT):
    """Return a copy of ``tree`` whose linear weights are quantized (the arrays are not copied).

    ``quantization_config`` is a BitsAndBytesConfig or its ``to_dict()``.  ``checkpoint_name``
    maps a weight's tree name ("decoder.lm_head.transform.dense.weight") to transformers' name
    for it ("decoder.cls.predictions.transform.dense.weight"), so that module names match
    as in transformers; by default the tree name itself.  ``keep_float``: the model class's
    default keys, used when llm_int8_skip_modules is None (see the module docstring).
    """
    config = as_config(quantization_config)
    if not config.is_quantizable():
        raise ValueError("quantization_config has load_in_8bit=False and load_in_4bit=False: set one of them")
    rename = checkpoint_name or (lambda name: name)
    names_of: dict[int, list] = {}  # id(array) -> tree names holding it
    for name, array in _leaves(tree, ""):
        names_of.setdefault(id(array), []).append(name)
    tied = {key: names for key, names in names_of.items() if len(names) > 1}
    if config.llm_int8_skip_modules is None:
        keys = list(keep_float) + [_module(rename(name)) for names in tied.values() for name in names]
    else:
        keys = list(config.llm_int8_skip_modules)
    chosen = {}  # tree path of a linear layer -> its weight, for those quantized
    for path, weight in _linears(tree, ""):
        if not kept_float(_module(rename(path + ".weight")), keys):
            chosen[path] = weight
    for path, weight in chosen.items():
        if id(weight) in tied:
            _refuse_tied(path, tied[id(weight)], rename, config.llm_int8_skip_modules)
    done = {id(weight): quantize_weight(weight, config) for weight in chosen.values()}
    return _rebuild(tree, "", set(chosen), done)


def _refuse_tied(path, names, rename, skip):
    module = _module(rename(path + ".weight"))
    others = sorted({_module(rename(n)) for n in names} - {module})
    raise ValueError(f"llm_int8_skip_modules={skip!r} leaves {module!r} to be quantized, but its weight is tied "
                     f"to {', '.join(map(repr, others))} (one array): transformers 4.57 fails to load a model whose "
                     f"tied weight is quantized. Add {module!r} to llm_int8_skip_modules (or leave it None: tied "
                     "modules then stay float)")


def _module(name: str) -> str:
    """A parameter's name -> its module's ("...query.weight" -> "...query")."""
    return name.rsplit(".", 1)[0]


def _items(node):
    if isinstance(node, dict):
        return node.items()
    if isinstance(node, list):
        return ((str(i), child) for i, child in enumerate(node))
    return ()


def _leaves(node, name):
    """(tree name, array) for every array (or quantized weight) in the tree."""
    if not isinstance(node, (dict, list)):
        yield name, node
        return
    for key, child in _items(node):
        yield from _leaves(child, _join(name, key))


def _linears(node, name):
    """(tree path, float weight) of every linear layer of the tree."""
    if isinstance(node, dict) and _is_linear(node, name):
        yield name, node["weight"]
        return
    for key, child in _items(node):
        yield from _linears(child, _join(name, key))


def _rebuild(node, name, chosen, done):
    if isinstance(node, list):
        return [_rebuild(child, _join(name, str(i)), chosen, done) for i, child in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if name in chosen:
        return {**node, "weight": done[id(node["weight"])]}
    return {key: _rebuild(child, _join(name, key), chosen, done) for key, child in node.items()}


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


def _is_linear(node: dict, name: str) -> bool:
    weight = node.get("weight")
    if weight is None or getattr(weight, "is_quantized", False):
        if weight is not None:
            raise ValueError(f"{name}.weight is already quantized: quantize a float parameter tree once")
        return False
    last = name.rsplit(".", 1)[-1]
    return getattr(weight, "ndim", 0) == 2 and "embedding" not in last and np.dtype(weight.dtype).kind == "f"


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
