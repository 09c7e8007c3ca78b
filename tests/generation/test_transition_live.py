"""beam_indices and compute_transition_scores against transformers 4.57 live.

beam_indices: same presence (every beam search with return_dict_in_generate, whatever
output_scores / output_logits say; never in greedy search), shape, dtype and values,
-1 padding included.  compute_transition_scores: same shape, values within 1e-4, and
-inf / 0 in the same places, on our outputs and on transformers' own outputs.
"""
import warnings

import numpy as np
import pytest

from cases import model_inputs
from conftest import require_module
from gen_helpers import load_model, transformers_model

# (model, settings, ragged): the first two inputs of each model's batch (padded: right for
# the seq2seq sources, left for the decoder prompts).  ragged: the returned hypotheses end
# at different lengths, so -1 padding shows.  The toy model is confident: its hypotheses
# per input agree in length; the random models stop at a token they often pick (eos_token_id).
BEAM_CASES = [
    ("toy_bert2bert", {"num_beams": 3}, True),
    ("toy_bert2bert", {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 2.0}, True),
    ("toy_bert2bert", {"num_beams": 3, "num_return_sequences": 2, "early_stopping": True, "length_penalty": 0.5},
     True),
    ("toy_bert2bert", {"num_beams": 3, "num_return_sequences": 2, "early_stopping": "never",
                       "length_penalty": -0.5}, True),
    ("random_seq2seq", {"num_beams": 3, "eos_token_id": 38, "max_new_tokens": 8}, True),
    ("random_seq2seq", {"num_beams": 3, "num_return_sequences": 2, "eos_token_id": 61, "max_new_tokens": 8,
                        "early_stopping": True, "length_penalty": 2.0}, True),
    ("random_seq2seq", {"num_beams": 3, "num_return_sequences": 2, "eos_token_id": 56, "max_new_tokens": 8,
                        "early_stopping": "never", "length_penalty": -1.0}, True),
    ("random_seq2seq", {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 6}, False),
    ("random_decoder", {"num_beams": 3, "max_new_tokens": 8, "eos_token_id": 11}, True),
    ("random_decoder", {"num_beams": 3, "max_new_tokens": 8, "eos_token_id": 52}, False),
    ("random_decoder", {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 8, "eos_token_id": 22,
                        "length_penalty": 0.5}, True),
]
BEAM_IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in s.items())}" for m, s, _ in BEAM_CASES]


def _inputs(model_name, rows=2):
    ids, mask = model_inputs({"model": model_name, "inputs": "batch"})
    return ids[:rows], mask[:rows]


def _generate_both(model_name, settings, rows=2):
    """(ours, transformers') return_dict_in_generate outputs on the first ``rows`` inputs."""
    torch = require_module("torch")
    reference = transformers_model(model_name)
    ids, mask = _inputs(model_name, rows)
    assert (mask == 0).any(), "the inputs should include padding"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                    return_dict_in_generate=True, **settings)
    ours = load_model(model_name).generate(ids, attention_mask=mask, return_dict_in_generate=True, **settings)
    np.testing.assert_array_equal(ours.sequences, theirs.sequences.numpy(), err_msg=str(settings))
    return ours, theirs


def _assert_same_transition_scores(mine, theirs, beam_indices, where):
    """Same shape, exact 0 after a hypothesis ended (beam_indices -1, transformers' own),
    -inf at the same places, finite values within 1e-4.  (A real score can also round to
    0.0 on one side and -1e-8 on the other: only the ended positions must be exactly 0.)"""
    theirs = theirs.numpy()
    assert mine.shape == theirs.shape, f"{where}: shape {mine.shape} != transformers' {theirs.shape}"
    assert mine.dtype == theirs.dtype, f"{where}: dtype {mine.dtype} != transformers' {theirs.dtype}"
    if beam_indices is not None:
        ended = beam_indices.numpy()[:, :theirs.shape[1]] < 0
        assert (theirs[ended] == 0).all() and (mine[ended] == 0).all(), f"{where}: ended positions are not 0"
    np.testing.assert_array_equal(np.isneginf(mine), np.isneginf(theirs), err_msg=f"{where}: -inf placement")
    finite = np.isfinite(theirs)
    np.testing.assert_array_equal(np.isfinite(mine), finite, err_msg=where)
    np.testing.assert_allclose(mine[finite], theirs[finite], atol=1e-4, rtol=0, err_msg=where)


def _as_numpy(output):
    """transformers' sequences / scores / beam_indices as NumPy arrays (to feed our function)."""
    beam_indices = getattr(output, "beam_indices", None)
    return (output.sequences.numpy(), tuple(s.numpy() for s in output.scores),
            None if beam_indices is None else beam_indices.numpy())


@pytest.mark.parametrize("model_name, settings, ragged", BEAM_CASES, ids=BEAM_IDS)
def test_beam_indices_match_transformers(model_name, settings, ragged):
    ours, theirs = _generate_both(model_name, settings)
    expected = theirs.beam_indices.numpy()
    assert ours.beam_indices.shape == expected.shape, f"shape {ours.beam_indices.shape} != {expected.shape}"
    assert ours.beam_indices.dtype == expected.dtype == np.int32
    np.testing.assert_array_equal(ours.beam_indices, expected)
    lengths = (expected >= 0).sum(axis=1)
    assert ragged == (len(set(lengths.tolist())) > 1), f"generated lengths {lengths}: the case lost its point"
    prompt_len = ours.sequences.shape[1] - expected.shape[1]
    assert prompt_len == (1 if model_name != "random_decoder" else _inputs(model_name)[0].shape[1])


@pytest.mark.parametrize("flags", [{}, {"output_scores": True}, {"output_logits": True}],
                         ids=["no-flags", "output_scores", "output_logits"])
@pytest.mark.parametrize("model_name", ["toy_bert2bert", "random_decoder"])
def test_beam_indices_present_whatever_the_score_flags(model_name, flags):
    """transformers 4.57 documents beam_indices as "returned when output_scores=True" but
    returns it with every beam search; greedy search has no such field."""
    settings = {"num_beams": 2, "max_new_tokens": 5, **flags}
    ours, theirs = _generate_both(model_name, settings)
    assert theirs.beam_indices is not None
    np.testing.assert_array_equal(ours.beam_indices, theirs.beam_indices.numpy())
    assert list(ours) == list(theirs.keys())  # the same fields in the same order
    greedy_ours, greedy_theirs = _generate_both(model_name, {"max_new_tokens": 5, **flags})
    assert not hasattr(greedy_theirs, "beam_indices") and "beam_indices" not in greedy_ours
    assert list(greedy_ours) == list(greedy_theirs.keys())


@pytest.mark.parametrize("normalize_logits", [False, True])
@pytest.mark.parametrize("model_name, settings, ragged", BEAM_CASES, ids=BEAM_IDS)
def test_transition_scores_after_beam_search_match_transformers(model_name, settings, ragged, normalize_logits):
    ours, theirs = _generate_both(model_name, {**settings, "output_scores": True})
    expected = transformers_model(model_name).compute_transition_scores(
        theirs.sequences, theirs.scores, theirs.beam_indices, normalize_logits=normalize_logits)
    model = load_model(model_name)
    got = model.compute_transition_scores(ours.sequences, ours.scores, ours.beam_indices,
                                          normalize_logits=normalize_logits)
    _assert_same_transition_scores(got, expected, theirs.beam_indices, f"{settings}, our outputs")
    on_theirs = model.compute_transition_scores(*_as_numpy(theirs), normalize_logits=normalize_logits)
    _assert_same_transition_scores(on_theirs, expected, theirs.beam_indices, f"{settings}, transformers' outputs")
    assert ragged == bool((ours.beam_indices < 0).any())  # the ragged cases do test the 0 padding


# greedy search; do_sample with top_k=1 (sampling that can only pick the best token, so
# deterministic, and every other score is -inf); rows that finished early (eos, then pad).
GREEDY_CASES = [
    ("toy_bert2bert", {}, 5),
    ("toy_bert2bert", {"do_sample": True, "top_k": 1}, 5),
    ("random_seq2seq", {"max_new_tokens": 8, "eos_token_id": 14}, 3),
    ("random_seq2seq", {"do_sample": True, "top_k": 1, "num_return_sequences": 2, "max_new_tokens": 6}, 3),
    ("random_decoder", {"max_new_tokens": 8, "eos_token_id": 52}, 3),
    ("random_decoder", {"do_sample": True, "top_k": 1, "max_new_tokens": 6, "temperature": 0.7}, 3),
]


@pytest.mark.parametrize("normalize_logits", [False, True])
@pytest.mark.parametrize("model_name, settings, rows", GREEDY_CASES,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in s.items())}" for m, s, _ in GREEDY_CASES])
def test_transition_scores_after_greedy_search_match_transformers(model_name, settings, rows, normalize_logits):
    ours, theirs = _generate_both(model_name, {**settings, "output_scores": True}, rows=rows)
    expected = transformers_model(model_name).compute_transition_scores(
        theirs.sequences, theirs.scores, normalize_logits=normalize_logits)
    model = load_model(model_name)
    got = model.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=normalize_logits)
    _assert_same_transition_scores(got, expected, None, f"{settings}, our outputs")
    on_theirs = model.compute_transition_scores(*_as_numpy(theirs)[:2], normalize_logits=normalize_logits)
    _assert_same_transition_scores(on_theirs, expected, None, f"{settings}, transformers' outputs")
    if settings.get("top_k") == 1 and normalize_logits:  # the only finite score: probability 1
        assert (got[np.isfinite(got)] == 0).all()


@pytest.mark.parametrize("normalize_logits", [False, True])
def test_transition_scores_of_transformers_sampled_outputs(normalize_logits):
    """Real sampling (top_k=5, beam sampling): our function on transformers' own outputs."""
    torch = require_module("torch")
    ids, mask = _inputs("random_seq2seq", rows=3)
    reference = transformers_model("random_seq2seq")
    model = load_model("random_seq2seq")
    for settings in ({"do_sample": True, "top_k": 5, "num_return_sequences": 2},
                     {"do_sample": True, "num_beams": 3, "num_return_sequences": 2, "eos_token_id": 14}):
        torch.manual_seed(0)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8,
                                        return_dict_in_generate=True, output_scores=True, **settings)
        beam_indices = getattr(theirs, "beam_indices", None)
        expected = reference.compute_transition_scores(theirs.sequences, theirs.scores, beam_indices,
                                                       normalize_logits=normalize_logits)
        got = model.compute_transition_scores(*_as_numpy(theirs), normalize_logits=normalize_logits)
        _assert_same_transition_scores(got, expected, beam_indices, str(settings))
