"""The one registry of transformers' BERT-family constants, by config.json's ``model_type``.

For each family: its config class, the prefix its base model's weights carry in a causal-LM
checkpoint (``bert.`` / ``roberta.``), and the classes transformers' AutoModel (the encoder,
a base model) and AutoModelForCausalLM (the decoder) pick for it, given by name.  The
modules that hold those classes resolve the names (config.py, modeling.py); loading.py and
checkpoint/mapping.py read the rest.  This module imports nothing of the package.

    model_type        config                  prefix    encoder                  decoder
    bert-generation   BertGenerationConfig    bert      BertGenerationEncoder    BertGenerationDecoder
    bert              BertConfig              bert      BertModel                BertLMHeadModel
    roberta           RobertaConfig           roberta   RobertaModel             RobertaForCausalLM
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["Family", "FAMILIES", "MODEL_TYPES", "BASE_MODEL_PREFIX"]


class Family(NamedTuple):
    config: str  # the config class's name (config.py)
    prefix: str  # base_model_prefix: the body's name in a causal-LM checkpoint
    encoder: str  # AutoModel's class (modeling.py)
    decoder: str  # AutoModelForCausalLM's class (modeling.py)


FAMILIES = {
    "bert-generation": Family("BertGenerationConfig", "bert", "BertGenerationEncoder", "BertGenerationDecoder"),
    "bert": Family("BertConfig", "bert", "BertModel", "BertLMHeadModel"),
    "roberta": Family("RobertaConfig", "roberta", "RobertaModel", "RobertaForCausalLM"),
}

MODEL_TYPES = tuple(FAMILIES)  # the model types minibertgen builds; anything else is refused, naming it
BASE_MODEL_PREFIX = {model_type: family.prefix for model_type, family in FAMILIES.items()}
