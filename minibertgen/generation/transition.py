"""compute_transition_scores: the score of each generated token, read back from generate()'s output.

generate(return_dict_in_generate=True, output_scores=True) returns ``scores``, one
[rows, vocab] array per generated token (rows = batch * num_beams in beam search).  The
transition score of token t of output sequence i is the entry of step t's scores that
produced it: row i in greedy search and sampling, row ``beam_indices[i, t]`` in beam search
(the beam the token was appended to).  Where beam_indices is -1 (the hypothesis had ended)
the score is 0.  Summed over a beam-search hypothesis these are its unnormalised log
probability: divided by length ** length_penalty they give ``sequences_scores``.

The result matches transformers 4.57's ``compute_transition_scores``: shape [rows_out,
generated], where generated is the longest hypothesis (the number of non-negative entries
of the fullest beam_indices row) and the tokens read are the last ``generated`` columns of
``sequences``.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..ops import log_softmax

__all__ = ["compute_transition_scores"]


def compute_transition_scores(sequences, scores, beam_indices=None, normalize_logits=False, vocab_size=None):
    """Transition scores [rows_out, generated] of the generated tokens of ``sequences``.

    sequences [rows_out, length] (generate()'s ids), scores (a tuple of [rows, vocab], one
    per step), beam_indices [rows_out, steps'] (beam search; None for greedy search and
    sampling, where row i of the output is row i of the scores), normalize_logits: apply
    log-softmax over the vocabulary first.  ``vocab_size``: the model's, checked against
    the scores' last dimension.
    """
    xp, steps, rows, vocab = _check_scores(scores, vocab_size)
    sequences = _check_int_array(sequences, "sequences", xp)
    if not isinstance(normalize_logits, (bool, np.bool_)):
        raise TypeError(f"normalize_logits={normalize_logits!r}: expected True or False")
    if beam_indices is None:
        if sequences.shape[0] != rows:
            raise ValueError(f"sequences has {sequences.shape[0]} rows but each scores array has {rows}: without "
                             "beam_indices they must match (pass outputs.beam_indices after beam search)")
        beam_indices = xp.broadcast_to(xp.arange(rows)[:, None], (rows, steps))  # [rows, steps]
    else:
        beam_indices = _check_beam_indices(beam_indices, sequences, xp, rows)

    ended = beam_indices < 0  # [rows_out, steps']: the hypothesis had finished
    generated = int((~ended).sum(axis=1).max()) if ended.size else 0
    if generated > steps:
        raise ValueError(f"beam_indices has {generated} generated positions in a row but scores covers only "
                         f"{steps} steps: pass the scores and beam_indices of the same generate() call")
    if generated > sequences.shape[1]:
        raise ValueError(f"sequences has {sequences.shape[1]} columns, fewer than the {generated} generated tokens "
                         "that beam_indices / scores describe")
    ended = ended[:, :generated]  # [rows_out, generated]
    origin = xp.where(ended, 0, beam_indices[:, :generated])  # [rows_out, generated]
    tokens = xp.where(ended, 0, sequences[:, sequences.shape[1] - generated:])  # [rows_out, generated]
    _check_tokens(tokens, vocab)

    stacked = xp.stack(scores[:generated], axis=1)  # generated x [rows, vocab] -> [rows, generated, vocab]
    if normalize_logits:
        stacked = log_softmax(stacked, axis=-1).astype(scores[0].dtype, copy=False)
    picked = stacked[origin, xp.arange(generated)[None, :], tokens]  # [rows_out, generated]
    return xp.where(ended, xp.zeros((), dtype=picked.dtype), picked)


def _check_scores(scores, vocab_size):
    """(xp, steps, rows, vocab) of a non-empty tuple of equally shaped [rows, vocab] float arrays."""
    if not isinstance(scores, (tuple, list)):
        raise TypeError(f"scores: expected a tuple of [rows, vocab] arrays (generate()'s outputs.scores), "
                        f"got {type(scores).__name__}")
    if not scores:
        raise ValueError("scores is empty: expected one [rows, vocab] array per generated token "
                         "(generate with return_dict_in_generate=True, output_scores=True)")
    xp = array_module(scores[0])
    for step, array in enumerate(scores):
        if not isinstance(array, xp.ndarray):
            raise TypeError(f"scores[{step}] is a {type(array).__name__}: expected a {xp.__name__} array "
                            "like scores[0] (NumPy or CuPy, as generate() returns them)")
        if array.ndim != 2 or array.shape != scores[0].shape:
            raise ValueError(f"scores[{step}] has shape {tuple(array.shape)}: expected [rows, vocab] = "
                             f"{tuple(scores[0].shape)} like scores[0]")
        if array.dtype.kind != "f":
            raise TypeError(f"scores[{step}] has dtype {array.dtype}: expected floating-point scores")
    rows, vocab = scores[0].shape
    if vocab_size is not None and vocab != vocab_size:
        raise ValueError(f"scores has {vocab} entries per row: expected the model's vocab_size={vocab_size}")
    return xp, len(scores), rows, vocab


def _check_int_array(value, name, xp):
    if not isinstance(value, xp.ndarray):
        raise TypeError(f"{name} is a {type(value).__name__}: expected a {xp.__name__} integer array like scores "
                        "(as generate() returns them)")
    if value.ndim != 2:
        raise ValueError(f"{name} has shape {tuple(value.shape)}: expected 2 dimensions [rows, length]")
    if value.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {value.dtype}: expected integers")
    return value


def _check_beam_indices(beam_indices, sequences, xp, rows):
    beam_indices = _check_int_array(beam_indices, "beam_indices", xp)
    if beam_indices.shape[0] != sequences.shape[0]:
        raise ValueError(f"beam_indices has {beam_indices.shape[0]} rows: expected one per sequence "
                         f"({sequences.shape[0]})")
    if beam_indices.size and int(beam_indices.max()) >= rows:
        raise ValueError(f"beam_indices contains {int(beam_indices.max())}: expected rows of the scores, "
                         f"in [0, {rows}) (or -1 after a hypothesis ended)")
    return beam_indices


def _check_tokens(tokens, vocab):
    """The token ids read must index the vocabulary."""
    if not tokens.size:
        return
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"sequences contains token id {low if low < 0 else high} in its generated part: "
                         f"expected ids in [0, {vocab}) (the scores' vocabulary)")
