"""Sampling: reproducible with a seed, and distributed as temperature/top-k/top-p say."""
import numpy as np
import pytest

from cases import model_inputs
from gen_helpers import load_model
from minibertgen.generation import logits_process as lp
from minibertgen.generation.search import sample_tokens
from minibertgen.ops import softmax

SCORES = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=np.float32))
N = 40000


def _frequencies(scores, seed=0):
    rows = np.broadcast_to(scores, (N, scores.shape[-1]))
    tokens = sample_tokens(rows, np.random.default_rng(seed))
    return np.bincount(tokens, minlength=scores.shape[-1]) / N


def _close(freq, probs):
    # 4 standard errors of a binomial proportion: fails by chance about once in 10^4 runs
    bound = 4 * np.sqrt(probs * (1 - probs) / N) + 1e-12
    assert (np.abs(freq - probs) <= bound).all(), (freq, probs)


def test_plain_sampling_follows_softmax():
    _close(_frequencies(SCORES), softmax(SCORES))


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_temperature(t):
    warped = lp.temperature(None, SCORES[None], t)[0]
    probs = softmax(SCORES / t)
    _close(_frequencies(warped), probs)
    if t < 1:
        assert probs[0] > softmax(SCORES)[0]  # sharper
    else:
        assert probs[0] < softmax(SCORES)[0]  # flatter


def test_top_k_keeps_k_tokens_renormalised():
    freq = _frequencies(lp.top_k(None, SCORES[None], 2)[0])
    assert (freq[2:] == 0).all()
    _close(freq[:2], np.array([0.4, 0.25]) / 0.65)


def test_top_p_keeps_the_nucleus():
    freq = _frequencies(lp.top_p(None, SCORES[None], 0.75)[0])
    assert (freq[3:] == 0).all()  # 0.4 + 0.25 + 0.15 = 0.8 >= 0.75
    _close(freq[:3], np.array([0.4, 0.25, 0.15]) / 0.8)


def test_forbidden_tokens_are_never_drawn():
    scores = SCORES.copy()
    scores[0] = -np.inf
    assert _frequencies(scores)[0] == 0


def test_same_seed_same_output_and_generator_accepted():
    ids, mask = model_inputs({"model": "random_seq2seq", "inputs": "batch"})
    model = load_model("random_seq2seq")
    kwargs = dict(attention_mask=mask, do_sample=True, max_new_tokens=10, top_k=0, temperature=3.0)
    a = model.generate(ids, seed=7, **kwargs)
    b = model.generate(ids, seed=7, **kwargs)
    c = model.generate(ids, seed=np.random.default_rng(7), **kwargs)
    d = model.generate(ids, seed=8, **kwargs)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert (a != d).any()


def test_sampling_with_top_k_1_is_greedy_and_num_return_sequences():
    ids, mask = model_inputs({"model": "toy_bert2bert", "inputs": "batch"})
    model = load_model("toy_bert2bert")
    greedy = model.generate(ids, attention_mask=mask)
    sampled = model.generate(ids, attention_mask=mask, do_sample=True, top_k=1, seed=0)
    np.testing.assert_array_equal(greedy, sampled)
    many = model.generate(ids, attention_mask=mask, do_sample=True, num_return_sequences=3, seed=0)
    assert many.shape[0] == 3 * ids.shape[0]


def test_beam_sampling_is_reproducible():
    ids, mask = model_inputs({"model": "toy_bert2bert", "inputs": "batch"})
    model = load_model("toy_bert2bert")
    kwargs = dict(attention_mask=mask, do_sample=True, num_beams=3, num_return_sequences=2, temperature=1.5)
    a = model.generate(ids, seed=1, **kwargs)
    np.testing.assert_array_equal(a, model.generate(ids, seed=1, **kwargs))
    assert a.shape[0] == 2 * ids.shape[0] and (a[:, 0] == 2).all()
