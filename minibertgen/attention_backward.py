"""Backward passes of attention.py: scaled dot-product attention, relative position
scores, multi-head self-attention and cross-attention.

The forward (attention.py, called with a ``record`` dict) keeps what these need:

    record["input"]          hidden [batch, seq, hidden] (the queries' side)
    record["encoder_states"] [batch, src, enc_hidden] (cross-attention only)
    record["query"], record["key"], record["value"]   split heads [batch, heads, len, head_dim]
    record["probs"]          softmax probabilities [batch, heads, q, k], before dropout and head mask
    record["dropout_mask"]   the attention-probability dropout mask, or None
    record["head_mask"]      [heads, 1, 1] or None
    record["relative"]       (distance_table, query_positions, mode) or None

Every gradient runs the forward's steps in reverse; nothing here writes into the record.
"""
from __future__ import annotations

import math

from .attention import merge_heads, split_heads
from .backend import array_module, scatter_add
from .ops_backward import dropout_backward, linear_backward, masked_softmax_backward

__all__ = [
    "relative_position_scores_backward",
    "attend_backward",
    "self_attention_backward",
    "cross_attention_backward",
]


def relative_position_scores_backward(dscores, query, key, distance_table, query_positions, mode):
    """Gradients of the relative position scores (attention.relative_position_scores).

    With R[i, j] = table[i - j + max - 1] ([q, k, head_dim]):
        s[b,h,i,j] = q[b,h,i] . R[i,j]  (+ k[b,h,j] . R[i,j] for "relative_key_query")
    =>  dq[b,h,i] = sum_j ds[b,h,i,j] R[i,j],   dk[b,h,j] = sum_i ds[b,h,i,j] R[i,j] (key_query),
        dR[i,j] = sum_bh ds[b,h,i,j] (q[b,h,i] (+ k[b,h,j])),
        dtable[r] = sum of dR[i,j] over the (i, j) at distance r (a scatter-add).
    dscores [batch, heads, q, k] -> (dq [b,h,q,d], dk [b,h,k,d] or None, dtable [2 max - 1, d]).
    """
    xp = array_module(dscores)
    max_positions = (distance_table.shape[0] + 1) // 2
    key_positions = xp.arange(key.shape[2])
    distance = query_positions[:, None] - key_positions[None, :] + max_positions - 1  # [q, k] rows of the table
    table = distance_table[distance].astype(query.dtype)  # [q, k, head_dim]
    dq = xp.einsum("bhqk,qkd->bhqd", dscores, table)  # [batch, heads, q, head_dim]
    dtable_qk = xp.einsum("bhqk,bhqd->qkd", dscores, query)  # [q, k, head_dim]
    dk = None
    if mode == "relative_key_query":
        dk = xp.einsum("bhqk,qkd->bhkd", dscores, table)  # [batch, heads, k, head_dim]
        dtable_qk = dtable_qk + xp.einsum("bhqk,bhkd->qkd", dscores, key)
    dtable = xp.zeros(distance_table.shape, dtype=dtable_qk.dtype)  # [2 max - 1, head_dim]
    scatter_add(dtable, distance.reshape(-1), dtable_qk.reshape(-1, dtable_qk.shape[-1]))  # [q*k, d] into rows
    return dq, dk, dtable.astype(distance_table.dtype)


def attend_backward(dcontext, query, key, value, probs, *, dropout_mask=None, head_mask=None, relative=None):
    """Gradients of attention.attend, step by step in reverse:

        scores = q k^T (+ relative),  p = softmax(scores / sqrt(d) + mask),
        p' = dropout(p) * head_mask,  context = p' v
    =>  dv = p'^T dcontext,  dp' = dcontext v^T,  dp = dropout_backward(dp' * head_mask),
        dscores = masked_softmax_backward(dp, p, sqrt(d)),  dq = dscores k,  dk = dscores^T q
        (+ the relative scores' share, relative_position_scores_backward).

    dcontext [batch, heads, q, d] -> (dq, dk, dv, dtable or None), each shaped as its input.
    """
    used = probs if dropout_mask is None else probs * dropout_mask  # p after dropout
    if head_mask is not None:
        used = used * head_mask  # [heads, 1, 1] zeroes whole heads
    dvalue = used.transpose(0, 1, 3, 2) @ dcontext  # [b, h, k, q] @ [b, h, q, d] -> [b, h, k, d]
    dused = dcontext @ value.transpose(0, 1, 3, 2)  # [b, h, q, d] @ [b, h, d, k] -> [b, h, q, k]
    if head_mask is not None:
        dused = dused * head_mask
    dprobs = dropout_backward(dused, dropout_mask)
    dscores = masked_softmax_backward(dprobs, probs, math.sqrt(query.shape[-1])).astype(query.dtype)
    dquery = dscores @ key  # [b, h, q, k] @ [b, h, k, d] -> [b, h, q, d]
    dkey = dscores.transpose(0, 1, 3, 2) @ query  # [b, h, k, q] @ [b, h, q, d] -> [b, h, k, d]
    dtable = None
    if relative is not None:
        table, query_positions, mode = relative
        dq_rel, dk_rel, dtable = relative_position_scores_backward(dscores, query, key, table, query_positions, mode)
        dquery = dquery + dq_rel
        if dk_rel is not None:
            dkey = dkey + dk_rel
    return dquery, dkey, dvalue, dtable


def _projection_backward(p, dheads, x):
    """One of the query/key/value projections: y = split_heads(x W^T + b).

    dheads [batch, heads, len, head_dim], x [batch, len, in] -> (dx [batch, len, in], {"weight", "bias"}).
    """
    dy = merge_heads(dheads)  # [batch, heads, len, head_dim] -> [batch, len, hidden]
    dx, dweight, dbias = linear_backward(dy, x, p["weight"], has_bias=p.get("bias") is not None)
    grads = {"weight": dweight}
    if dbias is not None:
        grads["bias"] = dbias
    return dx, grads


def self_attention_backward(p, record, dcontext, heads):
    """Gradients of attention.self_attention (one layer's ``attention.self`` parameters ``p``).

    dcontext [batch, seq, hidden] (the gradient of the merged context)
    -> (dhidden [batch, seq, hidden], grads: a tree shaped like ``p``).
    The hidden states feed queries, keys and values, so dhidden is the sum of all three.
    """
    dq, dk, dv, dtable = attend_backward(
        split_heads(dcontext, heads), record["query"], record["key"], record["value"], record["probs"],
        dropout_mask=record.get("dropout_mask"), head_mask=record.get("head_mask"),
        relative=record.get("relative"),
    )  # each [batch, heads, seq, head_dim]
    hidden = record["input"]
    dhidden_q, grads_q = _projection_backward(p["query"], dq, hidden)
    dhidden_k, grads_k = _projection_backward(p["key"], dk, hidden)
    dhidden_v, grads_v = _projection_backward(p["value"], dv, hidden)
    grads = {"query": grads_q, "key": grads_k, "value": grads_v}
    if dtable is not None:
        grads["distance_embedding"] = {"weight": dtable}
    return dhidden_q + dhidden_k + dhidden_v, grads


def cross_attention_backward(p, record, dcontext, heads):
    """Gradients of attention.cross_attention: queries from the decoder, keys and values
    from the encoder states, so the gradient splits between the two.

    dcontext [batch, seq, hidden] -> (dhidden [batch, seq, hidden],
    dencoder_states [batch, src, enc_hidden], grads: a tree shaped like ``p``).
    """
    dq, dk, dv, _ = attend_backward(
        split_heads(dcontext, heads), record["query"], record["key"], record["value"], record["probs"],
        dropout_mask=record.get("dropout_mask"), head_mask=record.get("head_mask"),
    )
    dhidden, grads_q = _projection_backward(p["query"], dq, record["input"])
    encoder_states = record["encoder_states"]
    dencoder_k, grads_k = _projection_backward(p["key"], dk, encoder_states)
    dencoder_v, grads_v = _projection_backward(p["value"], dv, encoder_states)
    return dhidden, dencoder_k + dencoder_v, {"query": grads_q, "key": grads_k, "value": grads_v}
