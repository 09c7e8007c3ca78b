"""At the start of train(), the model's special tokens follow the tokenizer's, as
transformers' Trainer makes them (it warns and changes config and generation config).

EOS: when the tokenizer's differs, config.eos_token_id becomes the tokenizer's and the
generation config keeps its own EOS ids beside it (any of them stops generation).  BOS
and PAD: config and generation config take the tokenizer's.  A tokenizer without a token
(a BERT tokenizer has no BOS/EOS) sets it to None in config.json, as in transformers.
"""
from __future__ import annotations

import warnings

__all__ = ["align_special_tokens"]


def align_special_tokens(model, tokenizer) -> dict:
    """Change ``model``'s config and generation config to the tokenizer's special tokens;
    returns what changed ({name: new id})."""
    config, generation = model.config, getattr(model, "generation_config", None)
    updated = {}
    eos = tokenizer.eos_token_id
    new_eos = eos != config.eos_token_id
    if generation is not None:
        if generation.eos_token_id is None:
            new_eos |= eos != generation.eos_token_id
        else:
            if isinstance(generation.eos_token_id, int):
                generation.eos_token_id = [generation.eos_token_id]
            new_eos |= eos not in generation.eos_token_id
    if new_eos:
        updated["eos_token_id"] = config.eos_token_id = eos
        if generation is not None:
            kept = [eos] + list(generation.eos_token_id or [])
            generation.eos_token_id = [token for token in kept if token is not None]
    for name in ("bos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name)
        if value != getattr(config, name) or (generation is not None and value != getattr(generation, name)):
            updated[name] = value
            setattr(config, name, value)
            if generation is not None:
                setattr(generation, name, value)
    if updated:
        warnings.warn(f"the tokenizer's special tokens differ from the model's: config and generation config now "
                      f"follow the tokenizer (as transformers' Trainer does): {updated}", stacklevel=3)
    return updated
