"""Logits processors: small pure functions that reshape next-token scores before a choice.

Every processor has the signature ``process(ids, scores) -> scores`` where

* ``ids``    [rows, cur_len]  the tokens so far of every row (a row is one sequence, or
  one beam of one sequence), on the model's device;
* ``scores`` [rows, vocab]    float32 scores for the next token (logits for greedy and
  sampling, log-probabilities for beam search).

A processor never changes ``scores`` in place.  "Forbidding" a token sets its score to
-inf.  :func:`build_processors` turns a GenerationConfig into the list to apply, in
transformers' order, so that results match it token for token.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from ..backend import array_module
from ..ops import log_softmax, softmax

__all__ = [
    "build_processors", "apply_processors", "repetition_penalty", "encoder_repetition_penalty",
    "no_repeat_ngram", "encoder_no_repeat_ngram", "sequence_bias", "min_length", "forced_token_at",
    "suppress_tokens", "temperature", "top_k", "top_p", "min_p", "remove_invalid_values",
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


# -- sampling warpers ------------------------------------------------------------------------

def temperature(ids, scores, value):
    """Divide scores by the temperature: < 1 sharpens the distribution, > 1 flattens it."""
    return scores / scores.dtype.type(value)


def top_k(ids, scores, k, keep=1):
    """Keep the ``k`` highest scores of each row (ties with the k-th kept too); others -inf."""
    xp = array_module(scores)
    k = min(max(k, keep), scores.shape[-1])
    kth = -xp.partition(-scores, k - 1, axis=-1)[:, k - 1:k]  # [rows, 1] the k-th largest
    return xp.where(scores < kth, NEG_INF, scores)


def top_p(ids, scores, p, keep=1):
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
    return xp.where(drop, NEG_INF, scores)


def min_p(ids, scores, p, keep=1):
    """Drop tokens whose probability is below ``p`` times that of the most likely token."""
    xp = array_module(scores)
    probs = softmax(scores, axis=-1)  # [rows, vocab]
    drop = probs < p * probs.max(axis=-1, keepdims=True)
    if keep > 1:
        best = xp.argsort(-scores, axis=-1)[:, :keep]  # [rows, keep]
        drop[_rows(xp, scores.shape[0]), best] = False
    else:
        drop[xp.arange(scores.shape[0]), scores.argmax(axis=-1)] = False
    return xp.where(drop, NEG_INF, scores)


# -- assembling the list ---------------------------------------------------------------------

def _float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: expected a number")
    return float(value)


def build_processors(config, *, prompt_len, eos_ids, vocab_size, encoder_ids=None, xp=np):
    """The processors ``config`` asks for, in transformers' order (penalties, then warpers).

    prompt_len: tokens in each row before generation (the decoder start token, or the prompt).
    eos_ids: list of end-of-sequence ids (may be empty).  encoder_ids [rows, src]: the
    encoder input, expanded to one row per beam, for the encoder_* processors.
    """
    procs = []
    if config.sequence_bias:
        biases = {tuple(k): float(v) for k, v in _sequence_bias_items(config.sequence_bias)}
        procs.append(partial(sequence_bias, biases=biases, vocab_size=vocab_size))
    if config.encoder_repetition_penalty not in (None, 1.0):
        _need_encoder(encoder_ids, "encoder_repetition_penalty")
        procs.append(partial(encoder_repetition_penalty, penalty=1 / _positive("encoder_repetition_penalty",
                                                                               config.encoder_repetition_penalty),
                             encoder_ids=encoder_ids))
    if config.repetition_penalty not in (None, 1.0):
        procs.append(partial(repetition_penalty, penalty=_positive("repetition_penalty", config.repetition_penalty)))
    if config.no_repeat_ngram_size:
        procs.append(partial(no_repeat_ngram, size=config.no_repeat_ngram_size))
    if config.encoder_no_repeat_ngram_size:
        _need_encoder(encoder_ids, "encoder_no_repeat_ngram_size")
        procs.append(partial(encoder_no_repeat_ngram, size=config.encoder_no_repeat_ngram_size,
                             encoder_ids=encoder_ids))
    if config.bad_words_ids is not None:
        words = [tuple(w) for w in config.bad_words_ids if not (len(w) == 1 and w[0] in eos_ids)]
        if words:
            procs.append(partial(sequence_bias, biases={w: NEG_INF for w in words}, vocab_size=vocab_size))
    eos = xp.asarray(eos_ids, dtype=np.int64)
    if eos_ids and config.min_length and config.min_length > 0:
        procs.append(partial(min_length, eos_ids=eos, minimum=config.min_length))
    if eos_ids and config.min_new_tokens and config.min_new_tokens > 0:
        procs.append(partial(min_length, eos_ids=eos, minimum=prompt_len + config.min_new_tokens))
    if config.forced_bos_token_id is not None:
        procs.append(partial(forced_token_at, token_ids=[_token("forced_bos_token_id", config.forced_bos_token_id,
                                                                vocab_size)], length=1))
    if config.forced_eos_token_id is not None:
        forced = config.forced_eos_token_id
        forced = list(forced) if isinstance(forced, (list, tuple)) else [forced]
        forced = [_token("forced_eos_token_id", t, vocab_size) for t in forced]
        procs.append(partial(forced_token_at, token_ids=forced, length=config.max_length - 1))
    if config.remove_invalid_values:
        procs.append(remove_invalid_values)
    if config.suppress_tokens:
        procs.append(partial(suppress_tokens, token_ids=list(config.suppress_tokens)))
    if config.begin_suppress_tokens:
        begin = prompt_len if (prompt_len > 1 or config.forced_bos_token_id is None) else prompt_len + 1
        procs.append(partial(suppress_tokens, token_ids=list(config.begin_suppress_tokens), at_length=begin))
    if config.do_sample:
        procs.extend(_warpers(config, keep=(len(eos_ids) + 1) if config.num_beams > 1 else 1))
    if config.renormalize_logits:
        procs.append(renormalize)
    return procs


def _warpers(config, keep):
    """Temperature, top-k, top-p, min-p: only when sampling (checked here, with clear errors)."""
    out = []
    if config.temperature is not None:
        value = _float("temperature", config.temperature)
        if value <= 0:
            raise ValueError(f"temperature={config.temperature!r}: must be > 0 when sampling "
                             "(for greedy decoding use do_sample=False)")
        if value != 1.0:
            out.append(partial(temperature, value=value))
    if config.top_k is not None and config.top_k != 0:
        out.append(partial(top_k, k=config.top_k, keep=keep))
    if config.top_p is not None:
        value = _float("top_p", config.top_p)
        if not 0 < value <= 1:
            raise ValueError(f"top_p={config.top_p!r}: expected a probability in (0, 1]")
        if value < 1.0:
            out.append(partial(top_p, p=value, keep=keep))
    if config.min_p is not None:
        value = _float("min_p", config.min_p)
        if not 0 <= value <= 1:
            raise ValueError(f"min_p={config.min_p!r}: expected a probability in [0, 1]")
        out.append(partial(min_p, p=value, keep=keep))
    return out


def apply_processors(processors, ids, scores):
    for process in processors:
        scores = process(ids, scores)
    return scores


def _positive(name, value):
    value = _float(name, value)
    if value <= 0:
        raise ValueError(f"{name}={value!r}: expected a number > 0")
    return value


def _token(name, value, vocab_size):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < vocab_size:
        raise ValueError(f"{name}={value!r}: expected a token id in [0, {vocab_size})")
    return int(value)


def _need_encoder(encoder_ids, name):
    if encoder_ids is None:
        raise ValueError(f"{name} needs the encoder's input_ids: pass input_ids to generate() "
                         "(it is only meaningful for encoder-decoder models)")


def _sequence_bias_items(value):
    items = value.items() if isinstance(value, dict) else [(k, v) for k, v in value]
    for tokens, bias in items:
        if not tokens or any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0 for t in tokens):
            raise ValueError(f"sequence_bias key {tokens!r}: expected a non-empty sequence of token ids")
        yield tokens, bias
