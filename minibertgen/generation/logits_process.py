"""Logits processors: small pure functions that reshape next-token scores before a choice.

Every processor has the signature ``process(ids, scores) -> scores`` where

* ``ids``    [rows, cur_len]  the tokens so far of every row (a row is one sequence, or
  one beam of one sequence), on the model's device;
* ``scores`` [rows, vocab]    float32 scores for the next token (logits for greedy and
  sampling, log-probabilities for beam search).

A processor never changes ``scores`` in place.  "Forbidding" a token sets its score to
-inf.  The sampling warpers (temperature, top-k, ...) live in warpers.py; processors.py
wraps every function in transformers' public class (``RepetitionPenaltyLogitsProcessor``
...), and build.py turns a GenerationConfig into the list to apply, in transformers'
order, so that results match it token for token.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..ops import log_softmax
from .warpers import eta_cutoff, epsilon_cutoff, min_p, temperature, top_k, top_p, typical  # noqa: F401 (re-exported)

__all__ = [
    "apply_processors", "repetition_penalty", "encoder_repetition_penalty",
    "no_repeat_ngram", "encoder_no_repeat_ngram", "sequence_bias", "min_length", "forced_token_at",
    "suppress_tokens", "remove_invalid_values", "renormalize", "exponential_decay_length_penalty",
    "prefix_allowed_tokens", "temperature", "top_k", "top_p", "min_p", "typical", "epsilon_cutoff", "eta_cutoff",
]

NEG_INF = -np.inf


def _rows(xp, n):
    return xp.arange(n)[:, None]  # [rows, 1] for row-wise fancy indexing


# -- penalties -------------------------------------------------------------------------------

def repetition_penalty(ids, scores, penalty):
    """Make every token already present in the row less likely (CTRL paper's penalty).

    A positive score is divided by ``penalty``, a negative one multiplied by it.
    """
    xp = array_module(scores)
    seen = xp.take_along_axis(scores, ids, axis=1)  # [rows, cur_len]
    penalised = xp.where(seen < 0, seen * penalty, seen / penalty)
    out = scores.copy()
    out[_rows(xp, scores.shape[0]), ids] = penalised  # repeated ids write the same value
    return out


def encoder_repetition_penalty(ids, scores, penalty, encoder_ids):
    """The same rule applied to the tokens of the encoder input (penalty < 1 favours them).

    ``encoder_ids`` [rows, src] is already expanded to one row per beam/sample.
    """
    xp = array_module(scores)
    seen = xp.take_along_axis(scores, encoder_ids, axis=1)  # [rows, src]
    changed = xp.where(seen < 0, seen * penalty, seen / penalty)
    out = scores.copy()
    out[_rows(xp, scores.shape[0]), encoder_ids] = changed
    return out


# -- n-gram blocking -------------------------------------------------------------------------

def _ngram_windows(tokens, n):
    """All length-n windows of each row: [rows, length] -> [rows, length - n + 1, n]."""
    xp = array_module(tokens)
    length = tokens.shape[1]
    starts = xp.arange(length - n + 1)[:, None] + xp.arange(n)[None, :]  # [windows, n]
    return tokens[:, starts]  # [rows, windows, n]


def _ban_ngram_completions(scores, windows, prefix):
    """Forbid the last token of every window whose first n-1 tokens equal ``prefix``.

    windows [rows, windows, n], prefix [rows, n - 1] -> scores with the banned tokens at -inf.
    """
    xp = array_module(scores)
    matches = xp.all(windows[:, :, :-1] == prefix[:, None, :], axis=2)  # [rows, windows]
    row, which = xp.nonzero(matches)
    out = scores.copy()
    out[row, windows[row, which, -1]] = NEG_INF
    return out


def no_repeat_ngram(ids, scores, size):
    """Forbid any token that would repeat an n-gram (n = ``size``) already in the row."""
    cur_len = ids.shape[1]
    if cur_len + 1 < size or cur_len < size:  # no complete n-gram exists yet
        return scores
    windows = _ngram_windows(ids, size)  # [rows, cur_len - size + 1, size]
    prefix = ids[:, cur_len - size + 1:]  # [rows, size - 1]
    return _ban_ngram_completions(scores, windows, prefix)


def encoder_no_repeat_ngram(ids, scores, size, encoder_ids):
    """Forbid any token that would copy an n-gram of the encoder input (``encoder_ids`` [rows, src])."""
    cur_len = ids.shape[1]
    if cur_len < size - 1 or encoder_ids.shape[1] < size:
        return scores
    windows = _ngram_windows(encoder_ids, size)  # [rows, src - size + 1, size]
    prefix = ids[:, cur_len - size + 1:]  # [rows, size - 1]
    return _ban_ngram_completions(scores, windows, prefix)


# -- token sequences -------------------------------------------------------------------------

def sequence_bias(ids, scores, biases, vocab_size):
    """Add ``bias`` to the last token of each sequence in ``biases`` when the row ends with its prefix.

    ``biases``: {(t1, ..., tk): bias}.  Single tokens are biased always; longer sequences only
    when the row's last k-1 tokens are t1..t(k-1); sequences longer than the row are skipped.
    bad_words_ids is this with bias -inf.
    """
    xp = array_module(scores)
    bias = xp.zeros_like(scores)  # [rows, vocab]
    for tokens, value in biases.items():
        if max(tokens) >= vocab_size:
            raise ValueError(f"sequence {list(tokens)} holds token id {max(tokens)}: the vocabulary has "
                             f"{vocab_size} tokens")
        if len(tokens) == 1:
            bias[:, tokens[0]] += value
            continue
        prefix_len = len(tokens) - 1
        if len(tokens) > ids.shape[1]:
            continue
        prefix = xp.asarray(tokens[:-1], dtype=ids.dtype)  # [prefix_len]
        match = xp.all(ids[:, -prefix_len:] == prefix[None, :], axis=1)  # [rows]
        bias[:, tokens[-1]] += xp.where(match, xp.float32(value), xp.float32(0.0))
    return scores + bias


def min_length(ids, scores, eos_ids, minimum):
    """Forbid eos while the row (prompt included) is shorter than ``minimum``."""
    if ids.shape[1] >= minimum:
        return scores
    out = scores.copy()
    out[:, eos_ids] = NEG_INF
    return out


def forced_token_at(ids, scores, token_ids, length):
    """When the row has ``length`` tokens, allow only ``token_ids`` (score 0, others -inf).

    forced_bos_token_id uses length 1 (the first generated token), forced_eos_token_id
    uses max_length - 1 (the last one).
    """
    if ids.shape[1] != length:
        return scores
    xp = array_module(scores)
    out = xp.full_like(scores, NEG_INF)
    out[:, token_ids] = 0.0
    return out


def suppress_tokens(ids, scores, token_ids, at_length=None):
    """Forbid ``token_ids`` (always, or only when the row has ``at_length`` tokens)."""
    if at_length is not None and ids.shape[1] != at_length:
        return scores
    out = scores.copy()
    out[:, token_ids] = NEG_INF
    return out


def remove_invalid_values(ids, scores):
    """nan -> 0, +inf -> largest float32, -inf -> smallest float32."""
    xp = array_module(scores)
    info = np.finfo(scores.dtype)
    out = xp.where(scores != scores, 0.0, scores)
    out = xp.where(scores == np.inf, info.max, out)
    return xp.where(scores == -np.inf, info.min, out).astype(scores.dtype)


def renormalize(ids, scores):
    return log_softmax(scores, axis=-1)


def exponential_decay_length_penalty(ids, scores, eos_ids, start, factor):
    """Once the row is longer than ``start`` tokens, push eos up by ``factor ** (excess)``.

    The eos scores grow by |score| * (factor ** (length - start) - 1): a score of either
    sign moves up (factor > 1), so generation ends sooner the longer the row gets.
    """
    excess = ids.shape[1] - start
    if excess <= 0 or not len(eos_ids):
        return scores
    eos_scores = scores[:, eos_ids]  # [rows, eos]
    out = scores.copy()
    out[:, eos_ids] = eos_scores + abs(eos_scores) * scores.dtype.type(factor ** excess - 1)
    return out


def prefix_allowed_tokens(ids, scores, allowed_fn, num_beams, vocab_size=None):
    """Constrained generation: only the tokens ``allowed_fn(batch_id, row_ids)`` lists may follow.

    ``allowed_fn`` is called once per row (rows = batch * num_beams, beam-major within a
    batch item) with the batch index and that row's ids [cur_len]; it returns a list of
    token ids.  Every other token gets -inf.
    """
    xp = array_module(scores)
    mask = xp.full_like(scores, NEG_INF)  # [rows, vocab]
    for row in range(ids.shape[0]):
        batch_id = row // num_beams
        allowed = allowed_fn(batch_id, ids[row])
        allowed = _allowed_ids(allowed, batch_id, vocab_size or scores.shape[-1])
        mask[row, allowed] = 0.0
    return scores + mask


def _allowed_ids(allowed, batch_id, vocab_size):
    if hasattr(allowed, "tolist"):
        allowed = allowed.tolist()
    if not isinstance(allowed, (list, tuple)) or not allowed:
        raise ValueError(f"prefix_allowed_tokens_fn returned {allowed!r:.80} for batch id {batch_id}: expected a "
                         "non-empty list of token ids (an empty list makes the constraint unsatisfiable)")
    for token in allowed:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < vocab_size:
            raise ValueError(f"prefix_allowed_tokens_fn returned token {token!r} for batch id {batch_id}: expected "
                             f"token ids in [0, {vocab_size})")
    return [int(t) for t in allowed]


def apply_processors(processors, ids, scores):
    for process in processors:
        scores = process(ids, scores)
    return scores
