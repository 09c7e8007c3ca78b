"""Sampling warpers: pure functions that reshape the distribution a token is drawn from.

Same signature as the processors of logits_process.py, ``warp(ids, scores) -> scores``
with scores [rows, vocab]; generate() applies them only when sampling (do_sample=True),
after the other processors, in transformers' order: temperature, top-k, top-p, min-p,
typical, epsilon, eta.  "Dropping" a token sets its score to -inf (or ``fill``: transformers'
filter_value).  ``keep`` is the
number of most likely tokens that always survive (beam sampling keeps one more than
there are eos tokens, so that a live continuation remains).
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..ops import log_softmax, softmax

__all__ = ["temperature", "top_k", "top_p", "min_p", "typical", "epsilon_cutoff", "eta_cutoff"]

NEG_INF = -np.inf


def _rows(xp, n):
    return xp.arange(n)[:, None]  # [rows, 1] for row-wise fancy indexing


def temperature(ids, scores, value):
    """Divide scores by the temperature: < 1 sharpens the distribution, > 1 flattens it."""
    return scores / scores.dtype.type(value)


def top_k(ids, scores, k, keep=1, fill=NEG_INF):
    """Keep the ``k`` highest scores of each row (ties with the k-th kept too); others -inf."""
    xp = array_module(scores)
    k = min(max(k, keep), scores.shape[-1])
    kth = -xp.partition(-scores, k - 1, axis=-1)[:, k - 1:k]  # [rows, 1] the k-th largest
    return xp.where(scores < kth, fill, scores)


def _kth_largest(scores, keep):
    """[rows, 1]: the keep-th largest score of each row (a token at least this good stays)."""
    xp = array_module(scores)
    keep = min(keep, scores.shape[-1])
    return -xp.partition(-scores, keep - 1, axis=-1)[:, keep - 1:keep]


def top_p(ids, scores, p, keep=1, fill=NEG_INF):
    """Nucleus sampling: keep the smallest set of top tokens whose probability reaches ``p``.

    Sorted ascending, a token is dropped when the probability mass of it and everything
    below it is at most 1 - p; the ``keep`` most likely tokens always stay.
    """
    xp = array_module(scores)
    order = xp.argsort(scores, axis=-1)  # [rows, vocab] ascending
    sorted_scores = xp.take_along_axis(scores, order, axis=-1)
    mass_below = xp.cumsum(softmax(sorted_scores, axis=-1), axis=-1)  # [rows, vocab]
    drop_sorted = mass_below <= (1 - p)
    drop_sorted[:, scores.shape[-1] - keep:] = False
    drop = xp.zeros_like(drop_sorted)
    drop[_rows(xp, scores.shape[0]), order] = drop_sorted  # back to vocabulary order
    return xp.where(drop, fill, scores)


def min_p(ids, scores, p, keep=1, fill=NEG_INF):
    """Drop tokens whose probability is below ``p`` times that of the most likely token."""
    xp = array_module(scores)
    probs = softmax(scores, axis=-1)  # [rows, vocab]
    drop = probs < p * probs.max(axis=-1, keepdims=True)
    if keep > 1:
        best = xp.argsort(-scores, axis=-1)[:, :keep]  # [rows, keep]
        drop[_rows(xp, scores.shape[0]), best] = False
    else:
        drop[xp.arange(scores.shape[0]), scores.argmax(axis=-1)] = False
    return xp.where(drop, fill, scores)


def typical(ids, scores, mass, keep=1, fill=NEG_INF):
    """Locally typical sampling (Meister et al., 2022): keep the tokens whose surprisal is
    closest to the row's entropy, until they hold ``mass`` of the probability.

    Tokens are ranked by |-log p - H|; the cut is at the first rank where the cumulative
    probability reaches ``mass``, and every token ranked no worse than it stays.
    """
    xp = array_module(scores)
    logp = log_softmax(scores, axis=-1)  # [rows, vocab]
    probs = xp.exp(logp)
    entropy = -(xp.where(probs > 0, logp, 0.0) * probs).sum(axis=-1, keepdims=True)  # [rows, 1]; 0 log 0 = 0
    distance = xp.abs(-logp - entropy)  # [rows, vocab]
    order = xp.argsort(distance, axis=-1, kind="stable")  # [rows, vocab] most typical first
    sorted_distance = xp.take_along_axis(distance, order, axis=-1)
    mass_so_far = xp.cumsum(softmax(xp.take_along_axis(scores, order, axis=-1), axis=-1), axis=-1)
    last = xp.minimum((mass_so_far < mass).sum(axis=-1), scores.shape[-1] - 1)  # [rows] the cut rank
    cut = xp.take_along_axis(sorted_distance, last[:, None], axis=-1)  # [rows, 1]
    drop_sorted = sorted_distance > cut
    drop_sorted[:, :keep] = False
    drop = xp.zeros_like(drop_sorted)
    drop[_rows(xp, scores.shape[0]), order] = drop_sorted  # back to vocabulary order
    return xp.where(drop, fill, scores)


def epsilon_cutoff(ids, scores, epsilon, keep=1, fill=NEG_INF):
    """Epsilon sampling (Hewitt et al., 2022): drop tokens with probability below ``epsilon``."""
    xp = array_module(scores)
    drop = (softmax(scores, axis=-1) < epsilon) & (scores < _kth_largest(scores, keep))  # [rows, vocab]
    return xp.where(drop, fill, scores)


def eta_cutoff(ids, scores, epsilon, keep=1, fill=NEG_INF):
    """Eta sampling (Hewitt et al., 2022): an epsilon cutoff that shrinks with the entropy H,
    eta = min(epsilon, sqrt(epsilon) * exp(-H))."""
    xp = array_module(scores)
    logp = log_softmax(scores, axis=-1)  # [rows, vocab]
    probs = softmax(scores, axis=-1)
    entropy = -(xp.where(probs > 0, logp, 0.0) * probs).sum(axis=-1, keepdims=True)  # [rows, 1]; 0 log 0 = 0
    eta = xp.minimum(xp.float32(epsilon), xp.float32(np.sqrt(epsilon)) * xp.exp(-entropy))  # [rows, 1]
    drop = (probs < eta) & (scores < _kth_largest(scores, keep))
    return xp.where(drop, fill, scores)
