"""Logits processors: behaviour by hand, and equality with transformers' processor classes."""
import numpy as np
import pytest

from conftest import require_module
from minibertgen.generation import logits_process as lp

RNG = np.random.default_rng(0)
IDS = RNG.integers(0, 20, size=(4, 7))
SCORES = RNG.normal(size=(4, 20)).astype(np.float32) * 3


def test_repetition_penalty_by_hand():
    ids = np.array([[1, 2, 2]])
    scores = np.array([[1.0, 2.0, -2.0, 3.0]], dtype=np.float32)
    out = lp.repetition_penalty(ids, scores, 2.0)
    np.testing.assert_array_equal(out, [[1.0, 1.0, -4.0, 3.0]])
    np.testing.assert_array_equal(scores, [[1.0, 2.0, -2.0, 3.0]])  # input untouched


def test_no_repeat_ngram_by_hand():
    ids = np.array([[5, 6, 7, 5, 6], [1, 2, 3, 4, 5]])
    out = lp.no_repeat_ngram(ids, np.zeros((2, 10), np.float32), 3)
    assert np.isneginf(out[0, 7]) and np.isfinite(np.delete(out[0], 7)).all()  # "5 6" was followed by 7
    assert np.isfinite(out[1]).all()


def test_bad_words_prefix_must_match():
    ids = np.array([[3, 4], [4, 3]])
    out = lp.sequence_bias(ids, np.zeros((2, 6), np.float32), {(4, 5): -np.inf, (1,): -np.inf}, 6)
    assert np.isneginf(out[0, 5]) and np.isfinite(out[1, 5])
    assert np.isneginf(out[:, 1]).all()


def test_top_k_and_top_p_by_hand():
    scores = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32))
    assert np.isfinite(lp.top_k(None, scores, 2)).sum() == 2
    kept = np.isfinite(lp.top_p(None, scores, 0.8))[0]
    np.testing.assert_array_equal(kept, [True, True, False, False])  # 0.5 + 0.3 reaches 0.8
    kept = np.isfinite(lp.top_p(None, scores, 0.81))[0]
    np.testing.assert_array_equal(kept, [True, True, True, False])


def _pairs(torch, gl):
    eos = [3, 5]
    return [
        (gl.RepetitionPenaltyLogitsProcessor(1.7), lambda i, s: lp.repetition_penalty(i, s, 1.7)),
        (gl.NoRepeatNGramLogitsProcessor(2), lambda i, s: lp.no_repeat_ngram(i, s, 2)),
        (gl.NoRepeatNGramLogitsProcessor(1), lambda i, s: lp.no_repeat_ngram(i, s, 1)),
        (gl.EncoderNoRepeatNGramLogitsProcessor(2, torch.tensor(IDS[:, ::-1].copy())),
         lambda i, s: lp.encoder_no_repeat_ngram(i, s, 2, IDS[:, ::-1].copy())),
        (gl.NoBadWordsLogitsProcessor([[4], [IDS[0, -1].item(), 9], [3]], eos),
         lambda i, s: lp.sequence_bias(i, s, {(4,): -np.inf, (int(IDS[0, -1]), 9): -np.inf}, 20)),
        (gl.MinLengthLogitsProcessor(9, eos), lambda i, s: lp.min_length(i, s, np.array(eos), 9)),
        (gl.ForcedEOSTokenLogitsProcessor(8, eos), lambda i, s: lp.forced_token_at(i, s, eos, 7)),
        (gl.TemperatureLogitsWarper(0.7), lambda i, s: lp.temperature(i, s, 0.7)),
        (gl.TopKLogitsWarper(5), lambda i, s: lp.top_k(i, s, 5)),
        (gl.TopKLogitsWarper(2, min_tokens_to_keep=3), lambda i, s: lp.top_k(i, s, 2, keep=3)),
        (gl.TopPLogitsWarper(0.6), lambda i, s: lp.top_p(i, s, 0.6)),
        (gl.TopPLogitsWarper(0.1, min_tokens_to_keep=3), lambda i, s: lp.top_p(i, s, 0.1, keep=3)),
        (gl.MinPLogitsWarper(0.2), lambda i, s: lp.min_p(i, s, 0.2)),
    ]


@pytest.mark.parametrize("index", range(13))
def test_processor_matches_transformers(index):
    torch = require_module("torch")
    gl = require_module("transformers.generation.logits_process")
    theirs, mine = _pairs(torch, gl)[index]
    expected = theirs(torch.tensor(IDS), torch.tensor(SCORES)).numpy()
    got = mine(IDS, SCORES)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-6)
