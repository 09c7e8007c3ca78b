"""compute_transition_scores on hand-made arrays, its errors, and beam_indices' invariants
(without transformers; test_transition_live.py compares with it)."""
import math

import numpy as np
import pytest

from cases import model_inputs
from conftest import needs_gpu
from gen_helpers import load_model
from minibertgen.generation.transition import compute_transition_scores

INF = float("inf")

# greedy search: 2 rows, vocabulary of 3, 2 steps; row 1 picked a -inf token at step 1
GREEDY_SCORES = (np.array([[0.1, 0.5, -1.0], [2.0, -INF, 0.0]], dtype=np.float32),
                 np.array([[-0.2, 0.3, 0.7], [1.0, 1.5, -0.5]], dtype=np.float32))
GREEDY_SEQUENCES = np.array([[7, 1, 2], [7, 0, 1]])  # column 0: the prompt (any id)


def _beam_scores(steps=3, rows=4, vocab=3):
    """scores[t][r, v] = -(100 t + 10 r + v): every entry tells where it was read from."""
    t, r, v = np.meshgrid(np.arange(steps), np.arange(rows), np.arange(vocab), indexing="ij")
    return tuple(-(100.0 * t + 10.0 * r + v).astype(np.float32))


def test_greedy_reads_each_rows_chosen_token():
    got = compute_transition_scores(GREEDY_SEQUENCES, GREEDY_SCORES)
    np.testing.assert_array_equal(got, np.array([[0.5, 0.7], [2.0, 1.5]], dtype=np.float32))
    assert got.dtype == np.float32


def test_greedy_normalize_logits_is_a_log_softmax_over_the_vocabulary():
    got = compute_transition_scores(GREEDY_SEQUENCES, GREEDY_SCORES, normalize_logits=True)
    expected = [[0.5 - math.log(math.exp(0.1) + math.exp(0.5) + math.exp(-1.0)),
                 0.7 - math.log(math.exp(-0.2) + math.exp(0.3) + math.exp(0.7))],
                [2.0 - math.log(math.exp(2.0) + math.exp(0.0)),  # exp(-inf) = 0
                 1.5 - math.log(math.exp(1.0) + math.exp(1.5) + math.exp(-0.5))]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    picked_inf = compute_transition_scores(np.array([[7, 1, 2], [7, 1, 1]]), GREEDY_SCORES, normalize_logits=True)
    assert picked_inf[1, 0] == -INF and np.isfinite(np.delete(picked_inf.ravel(), 2)).all()


def test_beam_search_reads_the_row_each_token_came_from_and_zeroes_ended_hypotheses():
    # batch 2 x beams 2 = 4 rows of scores; 2 returned sequences per input
    beam_indices = np.array([[0, 1, -1], [1, 1, 0], [2, 3, 3], [3, -1, -1]], dtype=np.int32)
    sequences = np.array([[7, 2, 0, 1], [7, 1, 1, 2], [7, 0, 2, 1], [7, 2, 1, 1]])
    got = compute_transition_scores(sequences, _beam_scores(), beam_indices)
    np.testing.assert_array_equal(got, [[-2, -110, 0], [-11, -111, -202], [-20, -132, -231], [-32, 0, 0]])


def test_beam_search_output_is_cut_to_the_longest_hypothesis():
    # 3 steps of scores, but the returned hypotheses have 1 and 2 tokens: 2 columns, read
    # from the last 2 columns of sequences; an ended position's id may be anything (here 5)
    beam_indices = np.array([[0, -1, -1], [1, 3, -1]])
    sequences = np.array([[7, 2, 5], [7, 0, 2]])
    got = compute_transition_scores(sequences, _beam_scores(), beam_indices)
    np.testing.assert_array_equal(got, [[-2, 0], [-10, -132]])


def test_scores_as_a_list_and_int64_beam_indices_are_accepted():
    got = compute_transition_scores(GREEDY_SEQUENCES, list(GREEDY_SCORES), np.array([[0, 0], [1, 1]]))
    np.testing.assert_array_equal(got, np.array([[0.5, 0.7], [2.0, 1.5]], dtype=np.float32))


TWO = np.zeros((2, 3), dtype=np.float32)
ERRORS = [
    (dict(scores=np.stack(GREEDY_SCORES)), TypeError, "scores: expected a tuple"),
    (dict(scores=()), ValueError, "scores is empty"),
    (dict(scores=(TWO, np.zeros((2, 4), dtype=np.float32))), ValueError, r"scores\[1\] has shape \(2, 4\)"),
    (dict(scores=(TWO, [[0.0, 0.0, 0.0]] * 2)), TypeError, r"scores\[1\] is a list"),
    (dict(scores=(np.zeros((2, 3), dtype=np.int64),) * 2), TypeError, r"scores\[0\] has dtype int64"),
    (dict(scores=(np.zeros(3, dtype=np.float32),) * 2), ValueError, r"scores\[0\] has shape \(3,\)"),
    (dict(sequences=[[7, 1, 2], [7, 0, 1]]), TypeError, "sequences is a list"),
    (dict(sequences=np.array([7, 1, 2])), ValueError, "sequences has shape"),
    (dict(sequences=GREEDY_SEQUENCES.astype(np.float32)), TypeError, "sequences has dtype float32"),
    (dict(sequences=GREEDY_SEQUENCES[:1]), ValueError, "sequences has 1 rows but each scores array has 2"),
    (dict(sequences=np.array([[7, 1], [7, 0]])[:, :1]), ValueError, "sequences has 1 columns"),
    (dict(sequences=np.array([[7, 3, 2], [7, 0, 1]])), ValueError, r"token id 3 .*\[0, 3\)"),
    (dict(sequences=np.array([[7, 1, 2], [7, -1, 1]])), ValueError, "token id -1"),
    (dict(beam_indices=np.array([[0, 0]])), ValueError, "beam_indices has 1 rows: expected one per sequence"),
    (dict(beam_indices=np.array([[0, 2], [1, 1]])), ValueError, r"beam_indices contains 2: .*\[0, 2\)"),
    (dict(beam_indices=np.array([[0, 0, 0], [1, 1, 1]])), ValueError, "3 generated positions .* only 2 steps"),
    (dict(beam_indices=np.array([[0.0, 0.0], [1.0, 1.0]])), TypeError, "beam_indices has dtype float64"),
    (dict(normalize_logits="yes"), TypeError, "normalize_logits='yes'"),
]


@pytest.mark.parametrize("change, error, message", ERRORS, ids=[m for _, _, m in ERRORS])
def test_bad_input_gets_a_clear_error(change, error, message):
    arguments = {"sequences": GREEDY_SEQUENCES, "scores": GREEDY_SCORES, **change}
    with pytest.raises(error, match=message):
        compute_transition_scores(**arguments)


def test_the_model_method_checks_the_vocabulary_size():
    model = load_model("toy_bert2bert")
    with pytest.raises(ValueError, match=f"scores has 3 entries per row: expected the model's "
                                         f"vocab_size={model.config.decoder.vocab_size}"):
        model.compute_transition_scores(GREEDY_SEQUENCES, GREEDY_SCORES)


# -- beam_indices from our own beam search (also beam sampling, which transformers cannot replay) --

BEAM_SETTINGS = [
    ("toy_bert2bert", {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 2.0}),
    ("random_seq2seq", {"num_beams": 3, "num_return_sequences": 2, "eos_token_id": 14, "length_penalty": 0.5}),
    ("random_seq2seq", {"num_beams": 3, "num_return_sequences": 3, "eos_token_id": 14, "do_sample": True}),
    ("random_decoder", {"num_beams": 4, "num_return_sequences": 2, "eos_token_id": 87, "early_stopping": True}),
]


@pytest.mark.parametrize("model_name, settings", BEAM_SETTINGS, ids=[f"{m}-{s}" for m, s in BEAM_SETTINGS])
def test_beam_indices_structure_and_the_sequences_scores_they_rebuild(model_name, settings):
    model = load_model(model_name)
    ids, mask = model_inputs({"model": model_name, "inputs": "batch"})
    out = model.generate(ids, attention_mask=mask, max_new_tokens=8, return_dict_in_generate=True,
                         output_scores=True, seed=0, **settings)
    beams, n, batch = settings["num_beams"], settings["num_return_sequences"], ids.shape[0]
    prompt_len = 1 if model_name != "random_decoder" else ids.shape[1]
    beam_indices = out.beam_indices
    assert beam_indices.dtype == np.int32
    assert beam_indices.shape == (batch * n, out.sequences.shape[1] - prompt_len)
    lengths = (beam_indices >= 0).sum(axis=1)  # [batch * n]
    assert lengths.max() == beam_indices.shape[1]
    ended = np.arange(beam_indices.shape[1])[None, :] >= lengths[:, None]
    np.testing.assert_array_equal(beam_indices < 0, ended)  # a prefix of rows, then -1 only
    first_row = (np.arange(batch * n) // n) * beams  # row of beam 0 of each input
    np.testing.assert_array_equal(beam_indices[:, 0], first_row)  # only beam 0 is alive at the first step
    live = np.where(ended, first_row[:, None], beam_indices)
    assert ((live >= first_row[:, None]) & (live < first_row[:, None] + beams)).all()  # its own input's beams

    transition = model.compute_transition_scores(out.sequences, out.scores, beam_indices)
    assert transition.shape == beam_indices.shape and (transition[ended] == 0).all()
    penalty = settings.get("length_penalty", 1.0)
    np.testing.assert_allclose(transition.sum(axis=1) / lengths ** penalty, out.sequences_scores, rtol=1e-5, atol=1e-5)


# -- CuPy (skips without CuPy and a GPU) ---------------------------------------------------------

@needs_gpu
def test_on_cupy_same_as_numpy():
    import cupy

    from gen_helpers import FIXTURES
    from minibertgen.encoder_decoder import EncoderDecoderModel

    beam_indices = np.array([[0, 1, -1], [1, 1, 0], [2, 3, 3], [3, -1, -1]], dtype=np.int32)
    sequences = np.array([[7, 2, 0, 1], [7, 1, 1, 2], [7, 0, 2, 1], [7, 2, 1, 1]])
    on_gpu = compute_transition_scores(cupy.asarray(sequences), tuple(cupy.asarray(s) for s in _beam_scores()),
                                       cupy.asarray(beam_indices), normalize_logits=True)
    assert isinstance(on_gpu, cupy.ndarray)
    np.testing.assert_allclose(on_gpu.get(), compute_transition_scores(sequences, _beam_scores(), beam_indices,
                                                                       normalize_logits=True), atol=1e-6)

    ids, mask = model_inputs({"model": "toy_bert2bert", "inputs": "batch"})
    settings = dict(num_beams=3, num_return_sequences=2, return_dict_in_generate=True, output_scores=True)
    cpu = load_model("toy_bert2bert").generate(ids, attention_mask=mask, **settings)
    gpu_model = EncoderDecoderModel.from_pretrained(FIXTURES / "toy_bert2bert", device=0)
    gpu = gpu_model.generate(ids, attention_mask=mask, **settings)
    assert isinstance(gpu.beam_indices, cupy.ndarray)
    np.testing.assert_array_equal(gpu.beam_indices.get(), cpu.beam_indices)
    got = gpu_model.compute_transition_scores(gpu.sequences, gpu.scores, gpu.beam_indices)
    expected = load_model("toy_bert2bert").compute_transition_scores(cpu.sequences, cpu.scores, cpu.beam_indices)
    np.testing.assert_allclose(got.get(), expected, atol=1e-4)
