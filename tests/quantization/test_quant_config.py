"""BitsAndBytesConfig: transformers' names and defaults, compute dtypes, clear errors."""
import re

import numpy as np
import pytest
from conftest import require_module

from minibertgen.quantization import BitsAndBytesConfig


class FakeTorchDtype:
    """Stands in for torch.float16 etc.: read by name, so torch is never imported."""

    __module__ = "torch"

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return f"torch.{self.name}"


def test_defaults_are_transformers():
    config = BitsAndBytesConfig()
    assert (config.load_in_8bit, config.load_in_4bit) == (False, False)
    assert config.llm_int8_threshold == 6.0 and config.llm_int8_skip_modules is None
    assert config.bnb_4bit_quant_type == "fp4" and config.bnb_4bit_compute_dtype == "float32"
    assert config.bnb_4bit_use_double_quant is False and config.bnb_4bit_quant_storage == "uint8"
    assert config.quantization_method() is None and not config.is_quantizable()
    assert BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4").quantization_method() == "nf4"
    assert BitsAndBytesConfig(load_in_8bit=True).quantization_method() == "llm_int8"


@pytest.mark.parametrize("given, name, compute", [
    ("float16", "float16", np.float16), ("bfloat16", "bfloat16", np.float32), ("float32", "float32", np.float32),
    ("torch.float16", "float16", np.float16), (np.float16, "float16", np.float16), (np.dtype("float32"), "float32",
                                                                                     np.float32),
    (FakeTorchDtype("bfloat16"), "bfloat16", np.float32), (FakeTorchDtype("float16"), "float16", np.float16),
    (None, "float32", np.float32), ("fp16", "float16", np.float16),
])
def test_compute_dtype_spellings(given, name, compute):
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=given)
    assert config.bnb_4bit_compute_dtype == name
    assert config.compute_dtype == np.dtype(compute)  # bfloat16 computes in float32 on NumPy/CuPy


def test_real_torch_dtype_if_installed():
    torch = require_module("torch")
    assert BitsAndBytesConfig(bnb_4bit_compute_dtype=torch.bfloat16).bnb_4bit_compute_dtype == "bfloat16"


@pytest.mark.parametrize("kwargs, message", [
    (dict(load_in_8bit=True, load_in_4bit=True), "choose one"),
    (dict(load_in_4bit=True, bnb_4bit_quant_type="int4"), "bnb_4bit_quant_type='int4'"),
    (dict(load_in_4bit=True, bnb_4bit_quant_type=4), "bnb_4bit_quant_type=4"),
    (dict(load_in_8bit=True, llm_int8_threshold=-1.0), "llm_int8_threshold=-1.0"),
    (dict(load_in_8bit=True, llm_int8_threshold=float("nan")), "llm_int8_threshold=nan"),
    (dict(load_in_8bit=True, llm_int8_threshold="6"), "llm_int8_threshold='6'"),
    (dict(load_in_8bit=True, llm_int8_threshold=True), "llm_int8_threshold=True"),
    (dict(bnb_4bit_compute_dtype="float64"), "bnb_4bit_compute_dtype='float64'"),
    (dict(bnb_4bit_compute_dtype=np.int8), "bnb_4bit_compute_dtype="),
    (dict(bnb_4bit_compute_dtype=3.5), "bnb_4bit_compute_dtype=3.5"),
    (dict(llm_int8_skip_modules="lm_head"), "llm_int8_skip_modules='lm_head'"),
    (dict(bnb_4bit_quant_storage="float16"), "bnb_4bit_quant_storage='float16'"),
])
def test_invalid_settings_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        BitsAndBytesConfig(**kwargs)


def test_type_errors_and_setters():
    with pytest.raises(TypeError, match="load_in_4bit='yes'"):
        BitsAndBytesConfig(load_in_4bit="yes")
    with pytest.raises(TypeError, match="unexpected argument"):
        BitsAndBytesConfig(load_in_3bit=True)
    config = BitsAndBytesConfig(load_in_4bit=True)
    with pytest.raises(ValueError, match="choose one"):
        config.load_in_8bit = True
    config.load_in_4bit = False
    config.load_in_8bit = True
    assert config.quantization_method() == "llm_int8"
    assert BitsAndBytesConfig(llm_int8_threshold=5).llm_int8_threshold == 5.0  # an int is fine


def test_dict_round_trip_and_json():
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype="bfloat16", llm_int8_skip_modules=["query"])
    data = config.to_dict()
    assert data["quant_method"] == "bitsandbytes" and data["bnb_4bit_compute_dtype"] == "bfloat16"
    assert BitsAndBytesConfig.from_dict(data) == config
    assert '"bnb_4bit_quant_type": "nf4"' in config.to_json_string()
    with pytest.raises(ValueError, match="quant_method='gptq'"):
        BitsAndBytesConfig.from_dict({"quant_method": "gptq"})


def test_same_keys_as_transformers():
    transformers = require_module("transformers")
    theirs = transformers.BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=4.0).to_dict()
    ours = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=4.0).to_dict()
    assert set(ours) <= set(theirs)
    for key in ours:
        assert ours[key] == theirs[key], key
