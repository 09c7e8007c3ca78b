"""Where an EncoderDecoderModel's halves come from when it is built from checkpoints:
``from_encoder_decoder_pretrained``'s warm start of each half (the class transformers'
AutoModel / AutoModelForCausalLM would pick), and the refusal, naming the fix, of
``from_pretrained`` given one half's checkpoint."""
from __future__ import annotations

from .config import config_for_checkpoint
from .families import MODEL_TYPES
from .modeling import DECODER_CLASSES, ENCODER_CLASSES
from .pretrained_config import config_file, read_json

__all__ = ["refuse_a_single_half", "warm_start"]


def refuse_a_single_half(name_or_path, kwargs) -> None:
    """EncoderDecoderModel.from_pretrained(<a BERT checkpoint>): say how to warm-start from it."""
    if name_or_path is None or "config" in kwargs:
        return
    hub = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only") if k in kwargs}
    try:
        model_type = read_json(config_file(name_or_path, **hub), "config.json").get("model_type")
    except (OSError, ValueError):
        return  # loading reports what is wrong with the files
    if model_type in MODEL_TYPES:
        path = repr(str(name_or_path))
        raise ValueError(f"{name_or_path} holds one {model_type} model, not an encoder-decoder: to build one from it "
                         f"(as transformers), use EncoderDecoderModel.from_encoder_decoder_pretrained({path}, {path})")


def warm_start(name_or_path, role: str, kwargs: dict):
    """One half of from_encoder_decoder_pretrained: the class transformers' AutoModel (encoder)
    or AutoModelForCausalLM (decoder) picks for the checkpoint's model_type."""
    if name_or_path is None:
        raise ValueError(f"from_encoder_decoder_pretrained: pass {role}_pretrained_model_name_or_path "
                         f"or {role}_model=")
    config = kwargs.pop("config", None)
    if config is None:
        config = config_for_checkpoint(name_or_path, {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only")
                                             if k in kwargs})
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if hasattr(config, k)}
        for key, value in overrides.items():
            setattr(config, key, value)
        if role == "encoder":  # transformers: an encoder is never causal nor cross-attending
            config.is_decoder = config.add_cross_attention = False
        else:
            config.is_decoder = config.add_cross_attention = True
    table = ENCODER_CLASSES if role == "encoder" else DECODER_CLASSES
    # An encoder checkpoint without a pooler (a masked-LM one) gets a fresh pooler, as in transformers:
    # an EncoderDecoderModel never uses it (BertModel.from_pretrained alone refuses that).
    return table[config.model_type].from_pretrained(name_or_path, config=config, _missing_pooler="initialise",
                                                    **kwargs)
