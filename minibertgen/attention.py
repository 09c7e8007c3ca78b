"""Attention: masks, multi-head self- and cross-attention, relative position scores.

Masks are *additive*: 0 where a query may look, a very large negative number where it
may not, added to the scores before the softmax.  We use the dtype's most negative
finite value, as transformers does, so that logits match it bit for bit in spirit.
"""
from __future__ import annotations

import math

from .activation_record import apply_dropout
from .backend import array_module
from .dispatch import replaceable
from .ops import linear, masked_softmax

__all__ = [
    "padding_mask",
    "causal_mask",
    "split_heads",
    "merge_heads",
    "self_attention",
    "cross_attention",
]


def _finfo_min(xp, dtype):
    return xp.finfo(dtype).min


def padding_mask(attention_mask, dtype):
    """Keys to ignore: mask [batch, keys] (1 = attend) -> additive [batch, 1, 1, keys].

    A 3-D mask [batch, queries, keys] is taken as already per-query -> [batch, 1, queries, keys].
    """
    xp = array_module(attention_mask)
    mask = attention_mask.astype(dtype, copy=False)
    if mask.ndim == 2:
        mask = mask[:, None, None, :]  # [batch, keys] -> [batch, 1, 1, keys]
    else:
        mask = mask[:, None, :, :]  # [batch, queries, keys] -> [batch, 1, queries, keys]
    return (1.0 - mask) * _finfo_min(xp, dtype)


def causal_mask(attention_mask, query_length, dtype):
    """Decoder self-attention mask: padding and "no peeking ahead" combined.

    attention_mask [batch, past + query_length] -> additive [batch, 1, query_length, past + query_length].
    Query i (at absolute position past + i) may see keys 0 .. past + i.
    """
    xp = array_module(attention_mask)
    key_length = attention_mask.shape[1]
    past = key_length - query_length
    query_pos = xp.arange(past, key_length)[:, None]  # [query, 1]
    key_pos = xp.arange(key_length)[None, :]  # [1, keys]
    allowed = (key_pos <= query_pos).astype(dtype)  # [query, keys]
    mask = allowed[None, None, :, :] * attention_mask.astype(dtype)[:, None, None, :]  # [batch, 1, query, keys]
    return (1.0 - mask) * _finfo_min(xp, dtype)


def split_heads(x, heads):
    """[batch, seq, hidden] -> [batch, heads, seq, head_dim]."""
    batch, seq, hidden = x.shape
    return x.reshape(batch, seq, heads, hidden // heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """[batch, heads, seq, head_dim] -> [batch, seq, heads * head_dim]."""
    batch, heads, seq, head_dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, seq, heads * head_dim)


def relative_position_scores(query, key, distance_table, query_positions, mode):
    """Extra scores from learned embeddings of the distance between positions (Shaw et al.).

    query [batch, heads, q, head_dim], key [batch, heads, k, head_dim],
    distance_table [2 * max_positions - 1, head_dim], query_positions [q] (absolute).
    "relative_key" adds q . r(i - j); "relative_key_query" also adds k . r(i - j).
    """
    xp = array_module(query)
    max_positions = (distance_table.shape[0] + 1) // 2
    key_positions = xp.arange(key.shape[2])
    distance = query_positions[:, None] - key_positions[None, :]  # [q, k]
    table = distance_table[distance + max_positions - 1].astype(query.dtype, copy=False)  # [q, k, head_dim]
    scores = xp.einsum("bhqd,qkd->bhqk", query, table)  # [batch, heads, q, k]
    if mode == "relative_key_query":
        scores = scores + xp.einsum("bhkd,qkd->bhqk", key, table)
    return scores


def relative_query_positions(xp, past_length, seq, from_last_key):
    """The position each new query is measured from in relative position scores: [seq].

    Its own position (past_length + i), or, ``from_last_key``, the last key's position for
    every query (transformers 4.57's rule when a cache is in use, see self_attention).
    """
    if from_last_key:
        return xp.full(seq, past_length + seq - 1)  # [seq], all the last key's position
    return xp.arange(past_length, past_length + seq)  # [seq]


@replaceable
def attend(query, key, value, mask, *, head_mask=None, relative=None, record=None):
    """Scaled dot-product attention over split heads: softmax(q k^T / sqrt(d) + mask) v.

    query [batch, heads, q, d], key/value [batch, heads, k, d], additive mask broadcastable
    to [batch, heads, q, k].  Returns (context [batch, heads, q, d], probs [batch, heads, q, k]).
    ``relative`` is (distance_table, query_positions, mode) for relative position embeddings.
    ``record``: training's activation record (activation_record.py); None when inferring.
    """
    scores = query @ key.transpose(0, 1, 3, 2)  # [batch, heads, q, d] @ [batch, heads, d, k] -> [batch, heads, q, k]
    if relative is not None:
        table, query_positions, mode = relative
        scores = scores + relative_position_scores(query, key, table, query_positions, mode)
    # softmax(scores / sqrt(d) + mask) in float32, back to the model dtype
    probs = masked_softmax(scores, mask, math.sqrt(query.shape[-1]), dtype=value.dtype)
    if record is not None:
        record.update(query=query, key=key, value=value, probs=probs, head_mask=head_mask, relative=relative)
    probs = apply_dropout(record, probs, "attention")  # train mode only
    if head_mask is not None:
        probs = probs * head_mask  # [heads, 1, 1] zeroes whole heads
    return probs @ value, probs  # [batch, heads, q, k] @ [batch, heads, k, d] -> [batch, heads, q, d]


def self_attention(p, hidden, mask, heads, *, cache=None, layer=0, past_length=0, head_mask=None,
                   position_embedding_type="absolute", distances_from_last_key=False, record=None):
    """Multi-head self-attention (one layer's ``attention.self`` parameters ``p``).

    hidden [batch, seq, hidden] -> (context [batch, seq, hidden], probs [batch, heads, seq, keys]).
    With a ``cache`` the new keys/values are written into it at ``past_length`` (the
    position of the first new token) and attention covers past + new.

    ``distances_from_last_key`` (relative positions only): measure every query's distance
    from the last key, as if each query sat at the last position -- transformers 4.57 does
    this whenever its layers are handed a cache, which a decoder gets by default (use_cache),
    also for several tokens at once and also in training.  For one new token it is the
    token's own position; for several, every query but the last sees shifted distances.
    Models fine-tuned with transformers learned these distances, so model.py asks for them
    exactly where transformers applies them (see :func:`relative_query_positions`).
    """
    xp = array_module(hidden)
    q = split_heads(linear(hidden, p["query"]["weight"], p["query"]["bias"]), heads)  # [batch, heads, seq, d]
    k = split_heads(linear(hidden, p["key"]["weight"], p["key"]["bias"]), heads)
    v = split_heads(linear(hidden, p["value"]["weight"], p["value"]["bias"]), heads)
    if cache is not None:
        k, v = cache.update_self(layer, k, v, past_length)  # [batch, heads, past + seq, d]
    relative = None
    if position_embedding_type != "absolute":
        query_positions = relative_query_positions(xp, past_length, hidden.shape[1], distances_from_last_key)
        relative = (p["distance_embedding"]["weight"], query_positions, position_embedding_type)
    if record is not None:
        record["input"] = hidden
    context, probs = attend(q, k, v, mask, head_mask=head_mask, relative=relative, record=record)
    return merge_heads(context), probs  # [batch, heads, seq, d] -> [batch, seq, hidden]


def cross_attention(p, hidden, encoder_states, mask, heads, *, cache=None, layer=0, head_mask=None, record=None):
    """Multi-head attention from decoder positions to encoder outputs.

    hidden [batch, seq, hidden], encoder_states [batch, src, enc_hidden]
    -> (context [batch, seq, hidden], probs [batch, heads, seq, src]).
    The encoder side never changes while decoding, so its keys/values are computed once
    and kept in the cache.
    """
    q = split_heads(linear(hidden, p["query"]["weight"], p["query"]["bias"]), heads)
    stored = cache.get_cross(layer) if cache is not None else None
    if stored is None:
        k = split_heads(linear(encoder_states, p["key"]["weight"], p["key"]["bias"]), heads)  # [batch, heads, src, d]
        v = split_heads(linear(encoder_states, p["value"]["weight"], p["value"]["bias"]), heads)
        if cache is not None:
            cache.set_cross(layer, k, v)
    else:
        k, v = stored
    if record is not None:
        record.update(input=hidden, encoder_states=encoder_states)
    context, probs = attend(q, k, v, mask, head_mask=head_mask, record=record)
    return merge_heads(context), probs  # [batch, heads, seq, d] -> [batch, seq, hidden]
