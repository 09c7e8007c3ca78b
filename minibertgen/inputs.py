"""Checking and moving user inputs before they reach the math.

Models accept NumPy arrays, CuPy arrays, nested lists and torch tensors; these helpers
turn them into arrays on the model's device and reject bad input with a message that
names the argument, the bad value and what was expected.  The last three check what a
config allows: positions within the table, lengths the feed-forward chunking accepts,
and token types (which BertGeneration ignores).  :func:`body_inputs` applies them all to
the call of a model's body.
"""
from __future__ import annotations

import inspect

import numpy as np

from .backend import is_cupy_array, to_device, to_numpy
from .cache_surface import EncoderDecoderCache
from .suggest import unexpected_keywords

__all__ = ["as_ids", "as_position_ids", "as_mask", "as_embeds", "as_head_mask", "as_token_types",
           "check_positions", "check_chunking", "body_inputs"]


def _host_view(value, name):
    if is_cupy_array(value):
        return value
    try:
        return to_numpy(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: could not read it as an array ({exc})") from None


def as_ids(value, name, device, vocab_size=None, allow_ignore=False):
    """Token ids: integer array [batch, seq] with values in [0, vocab_size)."""
    if value is None:
        return None
    arr = _host_view(value, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} has shape {tuple(arr.shape)}: expected 2 dimensions [batch, seq] "
                         "(wrap a single sequence in a list: [ids])")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {arr.dtype}: expected an integer dtype (token ids)")
    if arr.size and vocab_size is not None:
        checked = arr[arr != -100] if allow_ignore else arr  # labels may hold -100 ("ignore")
        if checked.size:
            low, high = int(checked.min()), int(checked.max())
            if low < 0 or high >= vocab_size:
                extra = " (or -100 to ignore a position)" if allow_ignore else ""
                hint = "" if low < 0 else (" -- the tokenizer and the model do not match: use the model's own "
                                           "tokenizer, or after adding tokens call model.resize_token_embeddings("
                                           "len(tokenizer))")
                raise ValueError(f"{name} contains id {low if low < 0 else high}: "
                                 f"expected ids in [0, {vocab_size}){extra}{hint}")
    return to_device(arr, device, dtype=np.int64)


def as_position_ids(value, name, device, max_positions, batch, seq):
    """Position ids [batch, seq] (or [1, seq], shared by the batch, as transformers broadcasts them)."""
    if value is None:
        return None
    ids = as_ids(value, name, device, max_positions)
    if tuple(ids.shape) not in ((batch, seq), (1, seq)):
        raise ValueError(f"{name} has shape {tuple(ids.shape)}: expected ({batch}, {seq}) [batch, seq] "
                         f"or (1, {seq}), one position per input token")
    return ids


def as_mask(value, name, device, dtype, expected_shape, queries=None):
    """An attention mask of 0/1 with shape ``expected_shape`` [batch, keys], or 3-D
    [batch, queries, keys] (``queries``: the number of query positions, or 1 for all)."""
    if value is None:
        return None
    arr = _host_view(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {arr.dtype} (None or text inside?): expected 0/1 as booleans, "
                        "integers or floats")
    batch, keys = expected_shape
    if arr.ndim == 2 and tuple(arr.shape) != tuple(expected_shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}: expected {tuple(expected_shape)} "
                         "[batch, keys] to match the inputs")
    if arr.ndim == 3 and ((arr.shape[0], arr.shape[2]) != (batch, keys)
                          or (queries is not None and arr.shape[1] not in (queries, 1))):
        rows = "queries" if queries is None else f"queries={queries} (or 1)"
        raise ValueError(f"{name} has shape {tuple(arr.shape)}: expected [batch={batch}, {rows}, keys={keys}]")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}: expected [batch, keys]")
    return to_device(arr, device, dtype=dtype)


def as_embeds(value, name, device, dtype, hidden_size):
    """Input embeddings [batch, seq, hidden]."""
    if value is None:
        return None
    arr = _host_view(value, name)
    if arr.ndim != 3 or arr.shape[-1] != hidden_size:
        raise ValueError(f"{name} has shape {tuple(arr.shape)}: expected [batch, seq, {hidden_size}]")
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} has dtype {arr.dtype}: expected floating point")
    return to_device(arr, device, dtype=dtype)


def as_head_mask(value, name, device, dtype, layers, heads):
    """A head mask [heads] (every layer) or [layers, heads] -> [layers, heads]; 1 keeps a head."""
    if value is None:
        return None
    arr = _host_view(value, name)
    if is_cupy_array(arr):
        arr = arr.get()
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}={value!r:.60}: expected numbers (1 keeps a head, 0 masks it) of shape "
                        f"[{heads}] or [{layers}, {heads}]")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape == (heads,):
        arr = np.broadcast_to(arr, (layers, heads))
    if arr.shape != (layers, heads):
        raise ValueError(f"{name} has shape {arr.shape}: expected [{heads}] or [{layers}, {heads}]")
    return to_device(np.ascontiguousarray(arr), device, dtype=dtype)


def check_positions(config, past, seq, position_ids) -> None:
    """Positions beyond the position table are an error (RoBERTa's start at pad_token_id + 1)."""
    if position_ids is not None:
        return
    offset = config.pad_token_id + 1 if config.model_type == "roberta" else 0
    if offset + past + seq > config.max_position_embeddings:
        start = f" (RoBERTa counts positions from pad_token_id + 1 = {offset})" if offset else ""
        raise ValueError(f"sequence length {past + seq} (past {past} + new {seq}) exceeds "
                         f"max_position_embeddings={config.max_position_embeddings}{start}")


def check_chunking(config, seq) -> None:
    """chunk_size_feed_forward: transformers runs the feed-forward over chunks of positions
    (the same numbers, since it works position by position) and refuses a length that is not
    a multiple of the chunk size.  minibertgen computes it whole and refuses the same lengths."""
    chunk = getattr(config, "chunk_size_feed_forward", 0) or 0
    if chunk > 0 and seq % chunk != 0:
        raise ValueError(f"sequence length {seq} is not a multiple of chunk_size_feed_forward={chunk}: "
                         "transformers refuses it; pad to a multiple or set chunk_size_feed_forward=0")


def as_token_types(config, token_type_ids, device, shape):
    """BERT / RoBERTa: token types [batch, seq] in [0, type_vocab_size).  BertGeneration has none
    and ignores them, as transformers' BertGeneration classes do."""
    if token_type_ids is None or config.model_type == "bert-generation":
        return None
    token_type_ids = as_ids(token_type_ids, "token_type_ids", device, config.type_vocab_size)
    if tuple(token_type_ids.shape) != tuple(shape):
        raise ValueError(f"token_type_ids has shape {tuple(token_type_ids.shape)}: expected {tuple(shape)}")
    return token_type_ids


_TOLERATED_EXTRA = ("return_dict", "cache_position")


def body_inputs(model, *, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                extra=()):
    """Validate the inputs of ``model``'s body (a BERT-family half) and put them on its device.

    -> (model.bert_stack's keyword arguments, the cache: the given past_key_values, a new
    EncoderDecoderCache for a decoder that uses one, or None).  ``extra``: the call's other
    keyword arguments (those transformers tolerates are ignored, others refused)."""
    config, device, dtype = model.config, model.device, model.dtype
    unknown = [k for k in extra if k not in _TOLERATED_EXTRA]
    if unknown:
        known = inspect.signature(type(model).__call__).parameters
        raise TypeError(unexpected_keywords(f"{type(model).__name__}()", unknown, known))
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds "
                         f"(got {'both' if input_ids is not None else 'neither'})")
    input_ids = as_ids(input_ids, "input_ids", device, config.vocab_size)
    inputs_embeds = as_embeds(inputs_embeds, "inputs_embeds", device, dtype, config.hidden_size)
    batch, seq = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
    if seq == 0:
        raise ValueError(f"{'input_ids' if input_ids is not None else 'inputs_embeds'} has shape "
                         f"{tuple((input_ids if input_ids is not None else inputs_embeds).shape)}: an empty "
                         "sequence; expected at least one token per row")

    use_cache = bool(config.is_decoder and (config.use_cache if use_cache is None else use_cache))
    if past_key_values is not None and not isinstance(past_key_values, EncoderDecoderCache):
        raise TypeError(f"past_key_values: expected the EncoderDecoderCache a model returned, "
                        f"got {type(past_key_values).__name__}")
    cache = past_key_values if past_key_values is not None else (
        EncoderDecoderCache(config.num_hidden_layers) if use_cache else None)
    past = cache.get_seq_length() if cache is not None else 0

    check_positions(config, past, seq, position_ids)
    check_chunking(config, seq)
    position_ids = as_position_ids(position_ids, "position_ids", device, config.max_position_embeddings, batch, seq)
    token_type_ids = as_token_types(config, token_type_ids, device, (batch, seq))
    attention_mask = as_mask(attention_mask, "attention_mask", device, dtype, (batch, past + seq), queries=seq)
    head_mask = as_head_mask(head_mask, "head_mask", device, dtype, config.num_hidden_layers,
                             config.num_attention_heads)

    if encoder_hidden_states is not None:
        if not config.add_cross_attention:
            raise ValueError(f"encoder_hidden_states were given, but this {type(model).__name__} has no "
                             "cross-attention: load it with is_decoder=True, add_cross_attention=True")
        width = getattr(config, "cross_attention_hidden_size", None) or config.hidden_size
        encoder_hidden_states = as_embeds(encoder_hidden_states, "encoder_hidden_states", device, dtype, width)
        if encoder_hidden_states.shape[0] != batch:
            raise ValueError(f"encoder_hidden_states has batch {encoder_hidden_states.shape[0]}: expected {batch}")
        encoder_attention_mask = as_mask(encoder_attention_mask, "encoder_attention_mask", device, dtype,
                                         encoder_hidden_states.shape[:2], queries=seq)
    inputs = dict(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                  position_ids=position_ids, head_mask=head_mask, encoder_hidden_states=encoder_hidden_states,
                  encoder_attention_mask=encoder_attention_mask, cache=cache, past_length=past,
                  token_type_ids=token_type_ids,
                  output_attentions=_flag(output_attentions, config.output_attentions),
                  output_hidden_states=_flag(output_hidden_states, config.output_hidden_states))
    return inputs, cache


def _flag(value, default):
    return bool(default if value is None else value)

