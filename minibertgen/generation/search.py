"""The decoding loops: greedy search, multinomial sampling and beam search.

Each loop only needs ``step(ids) -> logits``: given the tokens so far of every row
([rows, cur_len]) it returns the next-token logits [rows, vocab] (generate() builds it
around the model and its KV cache).  Beam search also calls ``step.reorder(rows)`` when
beams are re-ranked, so that the cache follows its beams.

Everything stays on the model's device; the only values that come back to the host are
one "is anybody still running?" flag per step.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module, to_numpy
from ..ops import log_softmax, softmax, top_k
from .logits_process import apply_processors

__all__ = ["greedy_search", "sample_tokens", "beam_search"]

# transformers marks impossible beams with this finite score (not -inf) so sums stay finite.
BIG_NEGATIVE = -1.0e9


# -- greedy search and sampling --------------------------------------------------------------

def sample_tokens(scores, rng):
    """One token per row from softmax(scores) [rows, vocab], by inverting the CDF.

    One uniform number per row comes from ``rng`` (a NumPy Generator), so a seed gives the
    same tokens on NumPy and CuPy.  Tokens with probability 0 (score -inf) are never drawn.
    """
    xp = array_module(scores)
    probs = softmax(scores, axis=-1)  # [rows, vocab]
    refuse_non_finite(probs)
    cdf = xp.cumsum(probs, axis=-1)  # [rows, vocab]
    u = xp.asarray(rng.random(scores.shape[0]), dtype=cdf.dtype)[:, None] * cdf[:, -1:]  # [rows, 1]
    chosen = (cdf <= u).sum(axis=-1)  # index of the first token whose CDF passes u
    return xp.minimum(chosen, scores.shape[-1] - 1)  # [rows]


def refuse_non_finite(probs):
    """Sampling from NaN / inf probabilities would draw garbage: refuse, naming the likely cause.

    (One host sync per sampling step; transformers' torch.multinomial refuses them too.)
    """
    xp = array_module(probs)
    bad = ~xp.isfinite(probs).all(axis=-1)  # [rows]
    if bool(bad.any()):
        row = int(xp.flatnonzero(bad)[0])
        raise ValueError(f"sampling: the next-token distribution of row {row} is not finite (NaN or inf "
                         "probabilities): the scores overflowed (a temperature so small that scores / temperature "
                         "is infinite?) or every token was forbidden; use a larger temperature or do_sample=False")


def refuse_nan_beam_scores(generated):
    """Beam search over NaN scores cannot match transformers: refuse, naming the likely cause.

    torch.topk ranks NaN above every number, and among several NaNs (one per beam when the
    NaN sits in an end token's column) its order is left unspecified, so which hypotheses
    transformers keeps is not reproducible.  (Greedy search matches it: both argmax pick the
    first NaN.)  The NaN test itself rides on the step's one host read (_keep_going).
    """
    raise ValueError(f"beam search: the scores of generated token {generated} hold NaN, and transformers "
                     "ranks NaN candidates in an order torch does not specify, so minibertgen refuses them. "
                     "A NaN usually comes from exponential_decay_length_penalty raising an end-token score that "
                     "another setting has made -inf (min_length, min_new_tokens, bad_words_ids, "
                     "no_repeat_ngram_size, ...: -inf + inf), or from NaN logits. Drop one of the two settings, "
                     "or use num_beams=1")


def greedy_search(step, ids, prompt_len, max_length, processors, eos_ids, pad_token_id, *,
                  rng=None, keep_scores=False, keep_logits=False):
    """Greedy search (``rng`` None) or multinomial sampling (``rng`` a NumPy Generator).

    ids [rows, max_length]: a buffer whose first ``prompt_len`` columns hold the prompt;
    it is filled in place.  A row that produced eos gets ``pad_token_id`` from then on.
    Returns (sequences [rows, length], scores list, logits list).
    """
    xp = array_module(ids)
    rows = ids.shape[0]
    eos = xp.asarray(eos_ids, dtype=ids.dtype)
    running = xp.ones(rows, dtype=bool)  # rows that have not produced eos yet
    all_scores, all_logits = [], []
    cur_len = prompt_len
    while True:
        so_far = ids[:, :cur_len]  # [rows, cur_len]
        logits = step(so_far).astype(np.float32, copy=False)  # [rows, vocab]
        scores = apply_processors(processors, so_far, logits)
        if keep_scores:
            all_scores.append(scores)
        if keep_logits:
            all_logits.append(logits)
        next_tokens = scores.argmax(axis=-1) if rng is None else sample_tokens(scores, rng)  # [rows]
        if len(eos_ids):
            next_tokens = xp.where(running, next_tokens, pad_token_id)
        ids[:, cur_len] = next_tokens
        cur_len += 1
        if len(eos_ids):
            running &= ~xp.isin(next_tokens, eos)
        if cur_len >= max_length or (len(eos_ids) and not bool(running.any())):
            return ids[:, :cur_len], all_scores, all_logits


# -- beam search -----------------------------------------------------------------------------

def _gather_beams(array, index):
    """array [batch, beams, ...], index [batch, k] -> array[b, index[b, j]] as [batch, k, ...]."""
    xp = array_module(array)
    return array[xp.arange(array.shape[0])[:, None], index]


def _length_norm(length, length_penalty):
    return float(length) ** length_penalty


class BeamState:
    """The arrays beam search carries from step to step (batch b, beam j).

    running_seqs [batch, beams, max_length] and running_scores [batch, beams]: the live
    hypotheses and their summed log-probabilities.  running_beam_indices [batch, beams, gen]
    (gen = max_length - prompt_len; int32): for each generated token, the row it was
    appended to, in the flattened batch * beams numbering; -1 where nothing was generated yet.
    finished_seqs / finished_beam_indices and finished_scores (length-normalised) /
    finished_len / is_finished [batch, beams]: the best completed hypotheses so far, best
    first.  improvable [batch, 1]: whether a live beam could still beat the worst finished one.
    """

    def __init__(self, prompt_ids, batch, beams, max_length, fill_value):
        xp = array_module(prompt_ids)
        prompt_len = prompt_ids.shape[1]
        self.running_seqs = xp.full((batch, beams, max_length), fill_value, dtype=prompt_ids.dtype)
        self.running_seqs[:, :, :prompt_len] = prompt_ids.reshape(batch, beams, prompt_len)
        self.finished_seqs = self.running_seqs.copy()
        # int32 and -1 for "no token here", as transformers returns beam_indices
        self.running_beam_indices = xp.full((batch, beams, max_length - prompt_len), -1,
                                            dtype=np.int32)  # [batch, beams, gen]
        self.finished_beam_indices = self.running_beam_indices.copy()
        # Only beam 0 starts alive, so the first step does not pick the same token beams times.
        self.running_scores = xp.zeros((batch, beams), dtype=np.float32)
        self.running_scores[:, 1:] = BIG_NEGATIVE
        self.finished_scores = xp.full((batch, beams), BIG_NEGATIVE, dtype=np.float32)
        self.finished_len = xp.zeros((batch, beams), dtype=np.int64)  # generated tokens
        self.is_finished = xp.zeros((batch, beams), dtype=bool)
        self.improvable = xp.ones((batch, 1), dtype=bool)


def _merge_finished(state, cand_seqs, cand_beam_indices, cand_scores, hits_stop, cur_len, prompt_len, beams,
                    length_penalty, early_stopping):
    """Add the candidates that just ended (among the top ``beams``) to the finished list."""
    xp = array_module(cand_scores)
    just_finished = hits_stop.copy()  # [batch, 2 * beams]
    just_finished[:, beams:] = False  # the spare candidates only keep enough beams alive
    normalised = cand_scores / _length_norm(cur_len + 1 - prompt_len, length_penalty)
    full = xp.all(state.is_finished, axis=-1, keepdims=True) & (early_stopping is True)  # [batch, 1]
    normalised = normalised + full.astype(np.float32) * BIG_NEGATIVE
    normalised = normalised + (~state.improvable).astype(np.float32) * BIG_NEGATIVE
    normalised = normalised + (~just_finished).astype(np.float32) * BIG_NEGATIVE

    seqs = xp.concatenate([state.finished_seqs, cand_seqs], axis=1)  # [batch, 3 * beams, max_length]
    beam_indices = xp.concatenate([state.finished_beam_indices, cand_beam_indices], axis=1)  # [batch, 3 * beams, gen]
    scores = xp.concatenate([state.finished_scores, normalised], axis=1)  # [batch, 3 * beams]
    lengths = xp.concatenate([state.finished_len, xp.full_like(cand_scores, cur_len + 1 - prompt_len,
                                                               dtype=np.int64)], axis=1)
    flags = xp.concatenate([state.is_finished, just_finished], axis=1)
    state.finished_scores, keep = top_k(scores, beams)  # [batch, beams]
    state.finished_seqs = _gather_beams(seqs, keep)
    state.finished_beam_indices = _gather_beams(beam_indices, keep)
    state.finished_len = _gather_beams(lengths, keep)
    state.is_finished = _gather_beams(flags, keep)


def _update_improvable(state, cur_len, prompt_len, max_length, length_penalty, early_stopping):
    """Can the best live beam still beat the worst finished hypothesis?  (transformers' heuristic)

    With early_stopping="never" and a positive length penalty the best live beam is
    imagined at max_length; otherwise at the current length.
    """
    xp = array_module(state.running_scores)
    best_len = (max_length if early_stopping == "never" and length_penalty > 0.0 else cur_len) - prompt_len
    best_running = state.running_scores[:, :1] / _length_norm(best_len, length_penalty)  # [batch, 1]
    worst = xp.where(state.is_finished, state.finished_scores.min(axis=1, keepdims=True), BIG_NEGATIVE)
    state.improvable &= xp.any(best_running > worst, axis=-1, keepdims=True)


def beam_search(step, prompt_ids, beams, max_length, processors, eos_ids, fill_value, *,
                length_penalty=1.0, early_stopping=False, num_return_sequences=1, rng=None,
                keep_scores=False, keep_logits=False):
    """Beam search (or beam sampling with ``rng``) over ``prompt_ids`` [batch * beams, prompt_len].

    Each step scores every (beam, token) continuation by its summed log-probability, keeps
    the ``2 * beams`` best (enough that ``beams`` survive even if all the best ones end),
    moves the ones that ended into the finished list (score divided by
    length ** length_penalty) and continues with the ``beams`` best that did not end.
    Returns a dict of generate()'s output fields: sequences [batch * num_return_sequences,
    length], sequences_scores [batch * num_return_sequences], scores / logits (lists, one
    [batch * beams, vocab] per step, empty unless kept) and beam_indices [batch *
    num_return_sequences, length - prompt_len] (int32, -1 after a hypothesis ended).
    """
    xp = array_module(prompt_ids)
    rows, prompt_len = prompt_ids.shape
    batch = rows // beams
    eos = xp.asarray(eos_ids, dtype=prompt_ids.dtype)
    keep = max(2, 1 + len(eos_ids)) * beams
    state = BeamState(prompt_ids, batch, beams, max_length, fill_value)
    batch_offset = (xp.arange(batch) * beams)[:, None]  # [batch, 1]
    all_scores, all_logits = [], []
    cur_len = prompt_len
    while True:
        flat_ids = state.running_seqs[:, :, :cur_len].reshape(rows, cur_len)  # [batch * beams, cur_len]
        logits = step(flat_ids).astype(np.float32, copy=False)  # [batch * beams, vocab]
        vocab = logits.shape[-1]
        log_probs = apply_processors(processors, flat_ids, log_softmax(logits, axis=-1))
        if keep_scores:
            all_scores.append(log_probs)
        if keep_logits:
            all_logits.append(logits)
        totals = log_probs.reshape(batch, beams, vocab) + state.running_scores[:, :, None]
        totals = totals.reshape(batch, beams * vocab)  # [batch, beams * vocab]

        nan_scores = None  # sampling refuses non-finite scores itself (refuse_non_finite)
        if rng is None:
            nan_scores = xp.isnan(totals).any()  # read with the step's other flags (_keep_going)
            cand_scores, cand = top_k(totals, keep)  # [batch, keep]
        else:  # sampling without replacement = top-k of the scores plus Gumbel noise
            noise = xp.asarray(rng.gumbel(size=totals.shape), dtype=np.float32)
            sample_logp = log_softmax(totals, axis=-1)  # [batch, beams * vocab]
            refuse_non_finite(xp.exp(sample_logp))
            cand = top_k(sample_logp + noise, keep)[1]
            cand_scores = xp.take_along_axis(totals, cand, axis=-1)
        origin, tokens = cand // vocab, cand % vocab  # [batch, keep] source beam, new token
        cand_seqs = _gather_beams(state.running_seqs, origin)  # [batch, keep, max_length]
        cand_seqs[:, :, cur_len] = tokens
        cand_beam_indices = _gather_beams(state.running_beam_indices, origin)  # [batch, keep, gen]
        cand_beam_indices[:, :, cur_len - prompt_len] = origin + batch_offset  # row in batch * beams
        hits_stop = xp.isin(tokens, eos) | (cur_len + 1 >= max_length)  # [batch, keep]

        # The next live beams: the best candidates that did not just end.
        alive_scores = cand_scores + hits_stop.astype(np.float32) * BIG_NEGATIVE
        state.running_scores, best = top_k(alive_scores, beams)  # [batch, beams]
        state.running_seqs = _gather_beams(cand_seqs, best)
        state.running_beam_indices = _gather_beams(cand_beam_indices, best)
        _merge_finished(state, cand_seqs, cand_beam_indices, cand_scores, hits_stop, cur_len, prompt_len, beams,
                        length_penalty, early_stopping)
        step.reorder((_gather_beams(origin, best) + batch_offset).reshape(rows))  # cache follows its beams

        cur_len += 1
        _update_improvable(state, cur_len, prompt_len, max_length, length_penalty, early_stopping)
        if not _keep_going(state, hits_stop, early_stopping, nan_scores, cur_len - prompt_len):
            break

    return _best_hypotheses(state, num_return_sequences, prompt_len, all_scores, all_logits)


def _best_hypotheses(state, n, prompt_len, all_scores, all_logits):
    """The ``n`` best finished hypotheses of each batch item, cut to the longest of them."""
    batch = state.finished_seqs.shape[0]
    generated = int(state.finished_len[:, :n].max())
    length = prompt_len + generated
    return dict(
        sequences=state.finished_seqs[:, :n, :length].reshape(batch * n, length),  # [batch * n, length]
        sequences_scores=state.finished_scores[:, :n].reshape(batch * n),  # [batch * n]
        scores=all_scores, logits=all_logits,
        beam_indices=state.finished_beam_indices[:, :n, :generated].reshape(batch * n, generated),  # [batch * n, gen]
    )


def _keep_going(state, hits_stop, early_stopping, nan_scores=None, generated=0):
    """One host read per step: continue while some batch item can still improve; refuse the
    step's scores first if they held a NaN (``nan_scores``, a device flag, or None)."""
    xp = array_module(hits_stop)
    flags = [state.improvable.any(), state.is_finished.all(), hits_stop.all()]
    if nan_scores is not None:
        flags.append(nan_scores)
    improvable, all_finished, all_stopped, *nan = to_numpy(xp.stack(flags)).tolist()  # [3 or 4] -> host
    if nan and nan[0]:
        refuse_nan_beam_scores(generated)
    all_full = all_finished and early_stopping is True
    return improvable and not all_full and not all_stopped
