"""Model configurations: BertGenerationConfig and EncoderDecoderConfig.

A config is a bag of named hyper-parameters read from and written to ``config.json``,
with transformers' key names and defaults.  Keys we do not know are kept and written
back unchanged, so a config survives a round trip through minibertgen untouched.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

__all__ = ["PretrainedConfig", "BertGenerationConfig", "BertConfig", "RobertaConfig", "EncoderDecoderConfig",
           "ACTIVATIONS"]

CONFIG_NAME = "config.json"

# Activation names transformers accepts (ACT2FN) that ops.activation implements.
ACTIVATIONS = (
    "gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_accurate",
    "quick_gelu", "relu", "relu6", "silu", "swish", "tanh", "sigmoid", "linear", "mish",
)
POSITION_EMBEDDING_TYPES = ("absolute", "relative_key", "relative_key_query")

# Fields every transformers config carries (PretrainedConfig), with its defaults.
_COMMON_DEFAULTS = {
    "is_decoder": False,
    "add_cross_attention": False,
    "cross_attention_hidden_size": None,
    "is_encoder_decoder": False,
    "tie_word_embeddings": True,
    "tie_encoder_decoder": False,
    "bos_token_id": None,
    "pad_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict": True,
    "dtype": None,
    "architectures": None,
}


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} must hold a JSON object, found {type(data).__name__}")
    return data


def _config_file(pretrained_model_name_or_path, **hub_kwargs) -> Path:
    """Find config.json for a directory, a file path, or a hub id in the local cache."""
    path = Path(os.fspath(pretrained_model_name_or_path))
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / CONFIG_NAME
        if not candidate.is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME} in this directory")
        return candidate
    from .checkpoint.hub import resolve_model_dir

    return Path(resolve_model_dir(pretrained_model_name_or_path, **hub_kwargs)) / CONFIG_NAME


class PretrainedConfig:
    """Base class: attribute access over a dict of hyper-parameters, JSON in and out."""

    model_type = ""
    # Subclasses list their own fields and defaults here.
    _defaults: dict = {}

    def __init__(self, **kwargs):
        if "torch_dtype" in kwargs:  # the pre-4.56 name of `dtype`
            legacy = kwargs.pop("torch_dtype")
            kwargs.setdefault("dtype", legacy)
        if kwargs.get("dtype") is not None and not isinstance(kwargs["dtype"], str):
            kwargs["dtype"] = str(kwargs["dtype"]).replace("torch.", "")
        kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        for key, value in {**_COMMON_DEFAULTS, **self._defaults}.items():
            setattr(self, key, copy.deepcopy(value))
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Check field values; subclasses add their own checks."""

    # -- dict / JSON ------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"model_type": self.model_type}
        for key, value in self.__dict__.items():
            if key.startswith("_"):
                continue
            out[key] = value.to_dict() if isinstance(value, PretrainedConfig) else copy.deepcopy(value)
        return out

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict: expected a dict, got {type(config_dict).__name__}")
        return cls(**{**config_dict, **kwargs})

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Read config.json from a directory (or a file); keyword arguments override it."""
        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only") if k in kwargs}
        data = _read_json(_config_file(pretrained_model_name_or_path, **hub_kwargs), CONFIG_NAME)
        return cls.from_dict(data, **kwargs)

    def save_pretrained(self, save_directory) -> Path:
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"save_directory={str(save_directory)!r} is a file, expected a directory")
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CONFIG_NAME
        data = self.to_dict()
        data["transformers_version"] = "4.57.0"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


class BertGenerationConfig(PretrainedConfig):
    """Hyper-parameters of a BertGeneration encoder or decoder (transformers' defaults)."""

    model_type = "bert-generation"
    _defaults = {
        "vocab_size": 50358,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "position_embedding_type": "absolute",
        "use_cache": True,
    }

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}: each head needs hidden_size / heads dimensions"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r}: expected one of {', '.join(ACTIVATIONS)}")
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"position_embedding_type={self.position_embedding_type!r}: expected one of "
                f"{', '.join(POSITION_EMBEDDING_TYPES)}"
            )
        if self.add_cross_attention and not self.is_decoder:
            raise ValueError("add_cross_attention=True needs is_decoder=True: only a decoder cross-attends")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class BertConfig(BertGenerationConfig):
    """Hyper-parameters of a BERT half (BertModel / BertLMHeadModel): BertGeneration's fields
    plus token types (``type_vocab_size``), with transformers' BertConfig defaults."""

    model_type = "bert"
    _defaults = {**BertGenerationConfig._defaults, "vocab_size": 30522, "hidden_size": 768,
                 "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                 "type_vocab_size": 2, "pad_token_id": 0, "bos_token_id": None, "eos_token_id": None,
                 "classifier_dropout": None}


class RobertaConfig(BertConfig):
    """Hyper-parameters of a RoBERTa half (RobertaModel / RobertaForCausalLM), transformers' defaults."""

    model_type = "roberta"
    _defaults = {**BertConfig._defaults, "vocab_size": 50265, "pad_token_id": 1, "bos_token_id": 0,
                 "eos_token_id": 2}


class EncoderDecoderConfig(PretrainedConfig):
    """An encoder config and a decoder config, plus the seq2seq fields around them."""

    model_type = "encoder-decoder"
    _defaults = {"is_encoder_decoder": True}

    def __init__(self, **kwargs):
        encoder = kwargs.pop("encoder", None)
        decoder = kwargs.pop("decoder", None)
        if encoder is None or decoder is None:
            raise ValueError("EncoderDecoderConfig needs both `encoder` and `decoder` configs")
        self.encoder = _as_config(encoder, "encoder")
        self.decoder = _as_config(decoder, "decoder")
        super().__init__(**kwargs)

    @classmethod
    def from_encoder_decoder_configs(cls, encoder_config, decoder_config, **kwargs):
        """Combine two configs, marking the decoder as a cross-attending decoder."""
        decoder_config = copy.deepcopy(decoder_config)
        decoder_config.is_decoder = True
        decoder_config.add_cross_attention = True
        return cls(encoder=copy.deepcopy(encoder_config), decoder=decoder_config, **kwargs)


# The halves EncoderDecoderModel combines, by their config.json model_type.
_CONFIG_CLASSES = {"bert-generation": BertGenerationConfig, "bert": BertConfig, "roberta": RobertaConfig}


def _as_config(value, name):
    if isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        model_type = value.get("model_type", "bert-generation")
        if model_type not in _CONFIG_CLASSES:
            raise ValueError(
                f"{name}.model_type={model_type!r}: minibertgen builds the BERT-family halves only; "
                f"expected one of {', '.join(_CONFIG_CLASSES)}"
            )
        return _CONFIG_CLASSES[model_type](**value)
    raise TypeError(f"{name}: expected a config or a dict, got {type(value).__name__}")
