"""Model configurations: BertGenerationConfig and EncoderDecoderConfig.

A config is a bag of named hyper-parameters read from and written to ``config.json``,
with transformers' key names and defaults.  Keys we do not know are kept and written
back unchanged, so a config survives a round trip through minibertgen untouched.
Configs are data: creating one checks almost nothing (as transformers); ``validate()``
runs when a model is built from it.  config.json is written as transformers writes it
(``to_diff_dict``: the values that differ from the defaults).

The base class they share -- attributes, labels, JSON in and out, finding config.json
-- is PretrainedConfig, in pretrained_config.py.
"""
from __future__ import annotations

import copy
import math

from .families import FAMILIES
from .pretrained_config import PretrainedConfig, config_file, read_json

__all__ = ["PretrainedConfig", "BertGenerationConfig", "BertConfig", "RobertaConfig", "EncoderDecoderConfig",
           "ACTIVATIONS"]

# Activation names transformers accepts (ACT2FN) that ops.activation implements.
ACTIVATIONS = (
    "gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_accurate",
    "quick_gelu", "relu", "relu6", "silu", "swish", "tanh", "sigmoid", "linear", "mish",
)
POSITION_EMBEDDING_TYPES = ("absolute", "relative_key", "relative_key_query")
# How a relative_key(_query) layer measures distances when it is handed a cache (minibertgen's
# own option, not a transformers key): "cached_last_key" -- every query from the last key, as
# transformers 4.57 computes (and so trains) by default; "per_query" -- each query from its own
# position, the textbook formula (attention.self_attention explains the difference).
RELATIVE_DISTANCES = ("cached_last_key", "per_query")


def _check_number(name, value, *, positive) -> None:
    """A finite real number, > 0 (``positive``) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r}: expected a {'positive' if positive else 'non-negative'} number")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}={value!r}: expected a finite number {'> 0' if positive else '>= 0'}")


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
        """Checked when a model is built from this config (not at creation, as transformers)."""
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
        if self.relative_distances not in RELATIVE_DISTANCES:
            raise ValueError(f"relative_distances={self.relative_distances!r}: expected one of "
                             f"{', '.join(map(repr, RELATIVE_DISTANCES))}")
        if self.add_cross_attention and not self.is_decoder:
            raise ValueError("add_cross_attention=True needs is_decoder=True: only a decoder cross-attends")
        _check_number("layer_norm_eps", self.layer_norm_eps, positive=True)
        _check_number("initializer_range", self.initializer_range, positive=False)

    @property
    def relative_distances(self) -> str:
        """See RELATIVE_DISTANCES; set it to "per_query" for each query's own distances.  Kept
        in config.json only when changed (transformers ignores the key)."""
        return self.__dict__.get("relative_distances", "cached_last_key")

    @relative_distances.setter
    def relative_distances(self, value) -> None:
        self.__dict__["relative_distances"] = value

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
    _has_defaults_at_init = False

    def validate(self) -> None:
        self.encoder.validate()
        self.decoder.validate()

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


# The halves EncoderDecoderModel combines, by their config.json model_type (families.py).
CONFIG_CLASSES = {model_type: globals()[family.config] for model_type, family in FAMILIES.items()}


def config_for_checkpoint(name_or_path, hub_kwargs) -> PretrainedConfig:
    """The config of a half's checkpoint, of the class its model_type names (AutoConfig's
    choice), refusing other model types."""
    model_type = read_json(config_file(name_or_path, **hub_kwargs), "config.json").get("model_type")
    if model_type not in CONFIG_CLASSES:
        raise ValueError(f"{name_or_path}: model_type={model_type!r} is not supported; minibertgen builds the "
                         f"BERT-family halves {', '.join(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[model_type].from_pretrained(name_or_path, **hub_kwargs)


def _as_config(value, name):
    if isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        model_type = value.get("model_type", "bert-generation")
        if model_type not in CONFIG_CLASSES:
            raise ValueError(
                f"{name}.model_type={model_type!r}: minibertgen builds the BERT-family halves only; "
                f"expected one of {', '.join(CONFIG_CLASSES)}"
            )
        return CONFIG_CLASSES[model_type](**value)
    raise TypeError(f"{name}: expected a config or a dict, got {type(value).__name__}")
