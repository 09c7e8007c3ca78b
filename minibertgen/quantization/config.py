"""BitsAndBytesConfig: transformers' quantization settings, without torch or bitsandbytes.

The argument names, defaults and ``to_dict`` keys are transformers 4.57's, so code
written for ``transformers.BitsAndBytesConfig`` runs unchanged.  What differs:

* ``bnb_4bit_compute_dtype`` is stored as a name ("float32", "float16", "bfloat16")
  and accepts strings, NumPy dtypes and torch dtypes (read by name, torch is never
  imported).  NumPy and CuPy have no bfloat16 arithmetic, so "bfloat16" computes in
  float32 (:func:`compute_dtype_of`).
* Unknown ``bnb_4bit_quant_type`` values and bad thresholds are rejected here, when
  the config is made, not later inside a kernel.
"""
from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["BitsAndBytesConfig", "compute_dtype_of", "QUANT_TYPES_4BIT"]

QUANT_TYPES_4BIT = ("nf4", "fp4")
_COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
_ALIASES = {"float": "float32", "fp32": "float32", "half": "float16", "fp16": "float16", "bf16": "bfloat16"}


def _dtype_name(value) -> str:
    """Name of a compute dtype given as None, a string, a NumPy dtype or a torch dtype."""
    if value is None:
        return "float32"  # transformers' default for bnb_4bit_compute_dtype
    if isinstance(value, str):
        text = value
    elif type(value).__module__ == "torch" or str(value).startswith("torch."):
        text = str(value)  # torch.float16 -> "torch.float16": read by name, no torch import
    else:
        try:
            text = np.dtype(value).name
        except TypeError:
            raise ValueError(f"bnb_4bit_compute_dtype={value!r}: expected a string such as 'float16', "
                             "a NumPy dtype or a torch dtype") from None
    name = text.strip().lower()
    name = name[len("torch."):] if name.startswith("torch.") else name
    name = _ALIASES.get(name, name)
    if name not in _COMPUTE_DTYPES:
        raise ValueError(f"bnb_4bit_compute_dtype={value!r}: expected one of {', '.join(_COMPUTE_DTYPES)}")
    return name


def compute_dtype_of(name: str) -> np.dtype:
    """The array dtype the matmuls run in: bfloat16 has no NumPy/CuPy dtype, so float32."""
    return np.dtype(np.float32) if name == "bfloat16" else np.dtype(name)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r}: expected True or False")
    return bool(value)


class BitsAndBytesConfig:
    """How to quantize a model at load time (transformers' names and defaults).

    ``load_in_8bit``: LLM.int8() - int8 weights with per-row absmax scales; input
    features whose activations reach ``llm_int8_threshold`` are multiplied in the
    compute dtype.  ``load_in_4bit``: blockwise (64) 4-bit codes, ``bnb_4bit_quant_type``
    "fp4" (transformers' default) or "nf4", optionally with ``bnb_4bit_use_double_quant``.
    ``llm_int8_skip_modules`` names modules kept unquantized (None: transformers' defaults, the LM head
    and tied weights among them; a list replaces those defaults, as in transformers: quantization/params.py).
    """

    quant_method = "bitsandbytes"

    def __init__(self, load_in_8bit=False, load_in_4bit=False, llm_int8_threshold=6.0,
                 llm_int8_skip_modules=None, llm_int8_enable_fp32_cpu_offload=False,
                 llm_int8_has_fp16_weight=False, bnb_4bit_compute_dtype=None, bnb_4bit_quant_type="fp4",
                 bnb_4bit_use_double_quant=False, bnb_4bit_quant_storage=None, **kwargs):
        load_in_8bit = _check_bool("load_in_8bit", load_in_8bit)
        load_in_4bit = _check_bool("load_in_4bit", load_in_4bit)
        if load_in_8bit and load_in_4bit:
            raise ValueError("load_in_8bit=True and load_in_4bit=True: choose one of them")
        self._load_in_8bit, self._load_in_4bit = load_in_8bit, load_in_4bit
        self.llm_int8_threshold = _check_threshold(llm_int8_threshold)
        self.llm_int8_skip_modules = _check_skip(llm_int8_skip_modules)
        self.llm_int8_enable_fp32_cpu_offload = _check_bool("llm_int8_enable_fp32_cpu_offload",
                                                            llm_int8_enable_fp32_cpu_offload)
        self.llm_int8_has_fp16_weight = _check_bool("llm_int8_has_fp16_weight", llm_int8_has_fp16_weight)
        self.bnb_4bit_compute_dtype = _dtype_name(bnb_4bit_compute_dtype)
        if not isinstance(bnb_4bit_quant_type, str) or bnb_4bit_quant_type.lower() not in QUANT_TYPES_4BIT:
            raise ValueError(f"bnb_4bit_quant_type={bnb_4bit_quant_type!r}: expected 'nf4' or 'fp4'")
        self.bnb_4bit_quant_type = bnb_4bit_quant_type.lower()
        self.bnb_4bit_use_double_quant = _check_bool("bnb_4bit_use_double_quant", bnb_4bit_use_double_quant)
        storage = "uint8" if bnb_4bit_quant_storage is None else str(bnb_4bit_quant_storage).replace("torch.", "")
        if storage != "uint8":
            raise ValueError(f"bnb_4bit_quant_storage={bnb_4bit_quant_storage!r}: only uint8 "
                             "(two 4-bit codes per byte) is supported")
        self.bnb_4bit_quant_storage = storage
        kwargs.pop("quant_method", None)  # present in dicts written by to_dict / config.json
        kwargs.pop("_load_in_8bit", None), kwargs.pop("_load_in_4bit", None)
        if kwargs:
            raise TypeError(f"BitsAndBytesConfig got unexpected argument(s): {', '.join(sorted(kwargs))}")

    # load_in_* are properties, as in transformers, so that setting both is caught too.
    @property
    def load_in_8bit(self) -> bool:
        return self._load_in_8bit

    @load_in_8bit.setter
    def load_in_8bit(self, value):
        value = _check_bool("load_in_8bit", value)
        if value and self._load_in_4bit:
            raise ValueError("load_in_8bit=True while load_in_4bit=True: choose one of them")
        self._load_in_8bit = value

    @property
    def load_in_4bit(self) -> bool:
        return self._load_in_4bit

    @load_in_4bit.setter
    def load_in_4bit(self, value):
        value = _check_bool("load_in_4bit", value)
        if value and self._load_in_8bit:
            raise ValueError("load_in_4bit=True while load_in_8bit=True: choose one of them")
        self._load_in_4bit = value

    @property
    def compute_dtype(self) -> np.dtype:
        """The dtype 4-bit matmuls run in on NumPy/CuPy (bfloat16 -> float32)."""
        return compute_dtype_of(self.bnb_4bit_compute_dtype)

    def is_quantizable(self) -> bool:
        return self.load_in_8bit or self.load_in_4bit

    def quantization_method(self):
        """"llm_int8", "nf4", "fp4", or None when neither load_in_8bit nor load_in_4bit is set."""
        if self.load_in_8bit:
            return "llm_int8"
        return self.bnb_4bit_quant_type if self.load_in_4bit else None

    # -- serialisation (the "quantization_config" entry of transformers' config.json) -------
    def to_dict(self) -> dict:
        return {
            "quant_method": self.quant_method,
            "load_in_8bit": self.load_in_8bit,
            "load_in_4bit": self.load_in_4bit,
            "llm_int8_threshold": self.llm_int8_threshold,
            "llm_int8_skip_modules": None if self.llm_int8_skip_modules is None else list(self.llm_int8_skip_modules),
            "llm_int8_enable_fp32_cpu_offload": self.llm_int8_enable_fp32_cpu_offload,
            "llm_int8_has_fp16_weight": self.llm_int8_has_fp16_weight,
            "bnb_4bit_compute_dtype": self.bnb_4bit_compute_dtype,
            "bnb_4bit_quant_type": self.bnb_4bit_quant_type,
            "bnb_4bit_use_double_quant": self.bnb_4bit_use_double_quant,
            "bnb_4bit_quant_storage": self.bnb_4bit_quant_storage,
        }

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict: expected a dict, got {type(config_dict).__name__}")
        method = config_dict.get("quant_method", cls.quant_method)
        if method != cls.quant_method:
            raise ValueError(f"quant_method={method!r}: only 'bitsandbytes' quantization is supported")
        return cls(**{**config_dict, **kwargs})

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __eq__(self, other):
        return isinstance(other, BitsAndBytesConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"


def _check_threshold(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"llm_int8_threshold={value!r}: expected a number >= 0 (6.0 by default; 0 turns "
                         "the outlier decomposition off)")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"llm_int8_threshold={value!r}: expected a finite number >= 0")
    return value


def _check_skip(value):
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(name, str) and name for name in value):
        raise ValueError(f"llm_int8_skip_modules={value!r}: expected a list of module names such as ['query']")
    return list(value)
