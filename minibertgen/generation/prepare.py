"""What generate() resolves and prepares before the search starts.

    the GenerationConfig it runs with (keyword arguments > generation_config= > the
    model's) -> the special token ids -> the encoded source (seq2seq) or the prompt
    (decoder-only) -> rows repeated for beams / samples -> lengths -> the random generator

Each step is a function below; utils.py's generate() calls them in this order.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .. import seeding
from ..backend import array_module
from ..inputs import as_embeds, as_ids, as_mask, as_token_types
from ..suggest import unexpected_keywords
from .config import GENERATION_CONFIG_NAME, GenerationConfig
from .processors import token_ids

__all__ = ["default_generation_config", "resolve_generation_config", "is_encoder_decoder", "special_tokens",
           "infer_attention_mask", "prepare_seq2seq", "prepare_prompt", "prompt_token_types", "warn_not_a_decoder",
           "set_lengths", "make_rng"]

_MODEL_KWARGS = ("encoder_outputs", "decoder_input_ids", "inputs", "inputs_embeds", "token_type_ids")


# -- configuration ---------------------------------------------------------------------------

def default_generation_config(model) -> GenerationConfig:
    directory = getattr(model, "name_or_path", None)
    if directory and (Path(directory) / GENERATION_CONFIG_NAME).is_file():
        return GenerationConfig.from_pretrained(directory)
    return GenerationConfig.from_model_config(model.config)


def resolve_generation_config(model, generation_config, kwargs):
    """keyword arguments > generation_config= (its default fields filled from the model's) > model's."""
    base = model.generation_config
    if generation_config is None:
        config = base.copy()
    elif not isinstance(generation_config, GenerationConfig):
        raise TypeError(f"generation_config: expected a GenerationConfig, got {type(generation_config).__name__}")
    else:
        config = generation_config.copy()
        defaults = GenerationConfig()
        for key, value in base.to_dict().items():
            if key.startswith("_") or key == "transformers_version" or not hasattr(defaults, key):
                continue
            if getattr(config, key) == getattr(defaults, key) and value != getattr(defaults, key):
                setattr(config, key, value)
        if config.temperature == 0.0:
            config.do_sample = False
    extra = config.update(**kwargs)
    unknown = [k for k in extra if k not in _MODEL_KWARGS]
    if unknown:
        known = [*GenerationConfig().to_dict(), *_MODEL_KWARGS, "attention_mask", "generation_config", "seed",
                 "logits_processor", "prefix_allowed_tokens_fn", "assistant_model", "use_cuda_graph"]
        raise TypeError(unexpected_keywords("generate()", sorted(unknown), known,
                                            "(neither GenerationConfig fields nor model inputs)"))
    refused = config.unsupported_fields()
    if refused:
        raise ValueError(f"generation settings not supported by minibertgen: "
                         f"{', '.join(f'{k}={getattr(config, k)!r}' for k in refused)}")
    return config, extra


def is_encoder_decoder(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def special_tokens(model, config) -> dict:
    """eos (a list), pad, bos and decoder start as generate() uses them (transformers' fallbacks).

    Each id is checked against the decoder's vocabulary here, so that an error names the
    setting that is wrong (not the ids it would have produced).  eos ids beyond the
    vocabulary can never be produced and are kept, as transformers keeps them.
    """
    vocab = (model.decoder if is_encoder_decoder(model) else model).config.vocab_size
    eos = [] if config.eos_token_id is None else _eos_ids(config.eos_token_id)
    pad = config.pad_token_id
    if pad is None and eos:
        pad = eos[0]  # finished rows are padded with eos, as transformers does
    elif pad is not None:
        pad = _one_id("pad_token_id", pad, None)
    if eos and pad >= vocab:  # finished rows are fed back to the decoder with this id
        raise ValueError(f"pad_token_id={pad} (the id finished rows are padded with) is outside the decoder's "
                         f"vocabulary [0, {vocab}); set pad_token_id to a token id below {vocab}")
    bos = None if config.bos_token_id is None else _one_id("bos_token_id", config.bos_token_id, None)
    start = config.decoder_start_token_id
    if isinstance(start, (list, tuple)):
        raise ValueError(f"decoder_start_token_id={start!r}: expected one token id")
    if start is not None:
        start = _one_id("decoder_start_token_id", start, vocab)
    elif bos is not None and is_encoder_decoder(model):
        start = _one_id("bos_token_id", bos, vocab, role=" (the decoder start token: decoder_start_token_id is unset)")
    if is_encoder_decoder(model) and start is None:
        raise ValueError("no decoder_start_token_id (nor bos_token_id) in the generation config or the model "
                         "config: pass decoder_start_token_id=... to generate()")
    return {"eos": eos, "pad": pad, "bos": bos, "start": start, "vocab": vocab}


def _eos_ids(value):
    """eos_token_id as a list of ids.  A negative id (transformers' idiom eos_token_id=-1) is
    never generated, so generation runs to max_length, as transformers warns it does."""
    items = value.tolist() if hasattr(value, "tolist") else value
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    negative = [t for t in items if isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t < 0]
    if negative:
        warnings.warn(f"eos_token_id={value!r}: negative ids are never generated; generation will not stop "
                      "before the maximum length", UserWarning, stacklevel=4)
        items = [t for t in items if t not in negative]
        return token_ids("eos_token_id", items) if items else []
    return token_ids("eos_token_id", value)


def _one_id(name, value, vocab, role=""):
    """One token id: an integer >= 0 (and < vocab when given), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r}{role}: expected a token id (an integer)")
    if value < 0 or (vocab is not None and value >= vocab):
        limit = f"[0, {vocab})" if vocab is not None else ">= 0"
        raise ValueError(f"{name}={value!r}{role}: expected a token id in {limit} (the decoder's vocabulary)")
    return int(value)


# -- inputs ----------------------------------------------------------------------------------

def infer_attention_mask(ids, tokens):
    """1 everywhere, unless the pad token occurs in ``ids`` and is not an eos token: then ids != pad."""
    xp = array_module(ids)
    pad = tokens["pad"]
    if pad is None or pad in tokens["eos"] or not bool((ids == pad).any()):
        return xp.ones(ids.shape, dtype=np.int64)
    return (ids != pad).astype(np.int64)


def prepare_seq2seq(model, input_ids, attention_mask, extra, tokens, config):
    """Encode the source once; return (source ids, decoder prompt, encoder states, encoder mask,
    the encoder's outputs).  The encoder returns its attentions / hidden states too when the
    generate() output will hold them."""
    device = model.device
    encoder_outputs = extra.get("encoder_outputs")
    if input_ids is None and encoder_outputs is None:
        raise ValueError("generate() needs input_ids (the source sequence) or encoder_outputs")
    source = None
    if input_ids is not None:
        source = as_ids(input_ids, "input_ids", device, model.config.encoder.vocab_size)
    if encoder_outputs is None:
        if attention_mask is None:
            attention_mask = infer_attention_mask(source, tokens)
        wanted = {name: True for name in ("output_attentions", "output_hidden_states")
                  if config.return_dict_in_generate and getattr(config, name)}
        token_types = extra.get("token_type_ids")
        if token_types is not None:  # the encoder's, as in transformers (the decoder gets none)
            _refuse_unused_token_types(model.encoder, "encoder")
            wanted["token_type_ids"] = token_types
        encoder_outputs = model.encoder(input_ids=source, attention_mask=attention_mask, **wanted)
    states = encoder_states_of(encoder_outputs, model)
    batch = states.shape[0]
    if attention_mask is not None:
        attention_mask = as_mask(attention_mask, "attention_mask", device, states.dtype, states.shape[:2])
    states = model.project_encoder_states(states)  # [batch, src, dec_hidden]
    prompt = _decoder_prompt(model, extra.get("decoder_input_ids"), batch, tokens)
    return source, prompt, states, attention_mask, encoder_outputs


def encoder_states_of(encoder_outputs, model):
    """last_hidden_state [batch, src, hidden] out of encoder_outputs (a ModelOutput / dict, a
    tuple whose first item it is, or the array itself), checked."""
    if isinstance(encoder_outputs, dict):
        states = encoder_outputs.get("last_hidden_state")
    elif isinstance(encoder_outputs, (tuple, list)) and encoder_outputs:
        states = encoder_outputs[0]
    else:
        states = encoder_outputs if hasattr(encoder_outputs, "shape") else None
    if states is None or not hasattr(states, "shape"):
        raise TypeError(f"encoder_outputs={encoder_outputs!r:.80}: expected the encoder's output (a ModelOutput "
                        "with last_hidden_state, a tuple starting with it, or an array [batch, src, hidden])")
    hidden = model.config.encoder.hidden_size
    return as_embeds(states, "encoder_outputs.last_hidden_state", model.device, model.dtype, hidden)


def _decoder_prompt(model, decoder_input_ids, batch, tokens):
    """[batch, 1] of the start token, or the user's decoder_input_ids with the start token prepended."""
    xp = model.device.xp
    start = xp.full((batch, 1), tokens["start"], dtype=np.int64)
    if decoder_input_ids is None:
        return start
    ids = as_ids(decoder_input_ids, "decoder_input_ids", model.device, model.config.decoder.vocab_size)
    if ids.shape[0] != batch:
        raise ValueError(f"decoder_input_ids has batch {ids.shape[0]}: expected {batch}")
    if bool((ids[:, 0] != tokens["start"]).all()):
        ids = xp.concatenate([start, ids], axis=1)  # [batch, 1 + given]
    return ids


def prepare_prompt(model, input_ids, attention_mask, tokens):
    """Decoder-only: the prompt (or a lone bos token) and its attention mask."""
    device = model.device
    if input_ids is None:
        if tokens["bos"] is None:
            raise ValueError("generate() without input_ids starts from bos_token_id, which is not set")
        input_ids = np.full((1, 1), _one_id("bos_token_id", tokens["bos"], tokens["vocab"],
                                            role=" (the prompt: no input_ids given)"), dtype=np.int64)
    ids = as_ids(input_ids, "input_ids", device, model.config.vocab_size)
    if ids.shape[1] == 0:
        raise ValueError(f"input_ids has shape {tuple(ids.shape)}: an empty prompt; expected at least one token "
                         "per row (or input_ids=None to start from bos_token_id)")
    if attention_mask is None:
        attention_mask = infer_attention_mask(ids, tokens)
    attention_mask = as_mask(attention_mask, "attention_mask", device, np.int64, ids.shape)
    return ids, ids, attention_mask


def prompt_token_types(model, token_type_ids, prompt):
    """Decoder-only: the prompt's token types [batch, prompt_len] (or None).  Each generated
    token then takes its row's last type, as transformers extends them (step.py)."""
    if token_type_ids is None:
        return None
    _refuse_unused_token_types(model, "model")
    return as_token_types(model.config, token_type_ids, model.device, prompt.shape)


def _refuse_unused_token_types(model, role):
    """BertGeneration has no token type embeddings: transformers' generate() refuses
    token_type_ids for it ("not used by the model"), and so does minibertgen."""
    if model.config.model_type == "bert-generation":
        raise ValueError(f"token_type_ids: this {role} ({type(model).__name__}, model_type 'bert-generation') has "
                         "no token types; transformers' generate() refuses them too. Token types are read by "
                         "BERT and RoBERTa encoders and decoders. With generate(**tokenizer(text)), encode with "
                         "tokenizer(text, return_token_type_ids=False)")


def warn_not_a_decoder(config):
    """A BertGenerationDecoder loaded without is_decoder=True attends both ways and keeps no
    cache: transformers warns and generates anyway (recomputing every step), and so do we."""
    warnings.warn("If you want to use `BertGenerationDecoder` as a standalone, add `is_decoder=True.` "
                  "(config.is_decoder is False: its attention is not causal and generate() recomputes the "
                  "whole sequence at every step, as transformers does)", stacklevel=3)
    config.use_cache = False


def _repeat_rows(array, times):
    """[batch, ...] -> [batch * times, ...], each row repeated ``times`` times in place."""
    if array is None or times == 1:
        return array
    return array_module(array).repeat(array, times, axis=0)


def set_lengths(model, config, prompt_len, kwargs):
    """Turn max_new_tokens / min_new_tokens / the default into config.max_length / min_length."""
    if config.max_new_tokens is not None:
        config.max_length = prompt_len + config.max_new_tokens
    elif "max_length" not in kwargs and config.max_length == 20:  # the default: 20 new tokens
        config.max_length = 20 + prompt_len
        if not is_encoder_decoder(model):
            config.max_length = min(config.max_length, model.config.max_position_embeddings)
    if config.min_new_tokens is not None:
        config.min_length = prompt_len + config.min_new_tokens
    if prompt_len >= config.max_length:
        raise ValueError(f"the prompt already has {prompt_len} tokens but max_length={config.max_length}: "
                         "raise max_length or set max_new_tokens")
    decoder = model.decoder if is_encoder_decoder(model) else model
    limit = decoder.config.max_position_embeddings
    if config.max_length > limit:
        raise ValueError(f"max_length={config.max_length} exceeds the decoder's max_position_embeddings={limit}: "
                         "positions beyond it have no embedding; lower max_length / max_new_tokens")


def make_rng(seed):
    if seed is None:
        return seeding.generator()
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed={seed!r}: expected an int or a numpy.random.Generator")
