"""transformers' public processor classes: each equal to transformers' own on the same input,
their argument checks, and generate() with logits_processor / prefix_allowed_tokens_fn /
the sampling variants / exponential_decay_length_penalty against transformers."""
import numpy as np
import pytest

import minibertgen
from cases import model_inputs
from conftest import require_module
from gen_helpers import load_model, transformers_model
from minibertgen.generation import processors as P

RNG = np.random.default_rng(3)
IDS = RNG.integers(0, 20, size=(4, 7))
SCORES = (RNG.normal(size=(4, 20)) * 3).astype(np.float32)
SCORES[1, 4] = -np.inf  # an already forbidden token


def _pairs(torch, T):
    """(transformers' processor, ours) built with the same arguments."""
    enc = IDS[:2, ::-1].copy()
    decay = ((2, 1.8), [3, 5], 4)
    return {
        "repetition": (T.RepetitionPenaltyLogitsProcessor(1.4), P.RepetitionPenaltyLogitsProcessor(1.4)),
        "repetition_ignore": (T.RepetitionPenaltyLogitsProcessor(1.4, prompt_ignore_length=3),
                              P.RepetitionPenaltyLogitsProcessor(1.4, prompt_ignore_length=3)),
        "encoder_repetition": (T.EncoderRepetitionPenaltyLogitsProcessor(1.6, torch.tensor(IDS[:, :3])),
                               P.EncoderRepetitionPenaltyLogitsProcessor(1.6, IDS[:, :3])),
        "ngram": (T.NoRepeatNGramLogitsProcessor(2), P.NoRepeatNGramLogitsProcessor(2)),
        "encoder_ngram": (T.EncoderNoRepeatNGramLogitsProcessor(2, torch.tensor(enc)),
                          P.EncoderNoRepeatNGramLogitsProcessor(2, enc)),
        "sequence_bias": (T.SequenceBiasLogitsProcessor([[[int(IDS[0, -1]), 9], 2.5], [[3], -1.5]]),
                          P.SequenceBiasLogitsProcessor([[[int(IDS[0, -1]), 9], 2.5], [[3], -1.5]])),
        "bad_words": (T.NoBadWordsLogitsProcessor([[4], [int(IDS[1, -1]), 8], [3]], [3, 5]),
                      P.NoBadWordsLogitsProcessor([[4], [int(IDS[1, -1]), 8], [3]], [3, 5])),
        "min_length": (T.MinLengthLogitsProcessor(9, [3, 5, 99]), P.MinLengthLogitsProcessor(9, [3, 5, 99])),
        "min_new": (T.MinNewTokensLengthLogitsProcessor(3, 5, [2]), P.MinNewTokensLengthLogitsProcessor(3, 5, [2])),
        "prefix": (T.PrefixConstrainedLogitsProcessor(lambda b, s: [b, int(s[-1]), 11], 2),
                   P.PrefixConstrainedLogitsProcessor(lambda b, s: [b, int(s[-1]), 11], 2)),
        "forced_bos": (T.ForcedBOSTokenLogitsProcessor(6), P.ForcedBOSTokenLogitsProcessor(6)),
        "forced_eos": (T.ForcedEOSTokenLogitsProcessor(8, [3, 5]), P.ForcedEOSTokenLogitsProcessor(8, [3, 5])),
        "inf_nan": (T.InfNanRemoveLogitsProcessor(), P.InfNanRemoveLogitsProcessor()),
        "decay": (T.ExponentialDecayLengthPenalty(*decay), P.ExponentialDecayLengthPenalty(*decay)),
        "normalise": (T.LogitNormalization(), P.LogitNormalization()),
        "suppress": (T.SuppressTokensLogitsProcessor([1, 7, 99]), P.SuppressTokensLogitsProcessor([1, 7, 99])),
        "suppress_begin": (T.SuppressTokensAtBeginLogitsProcessor([2, 8], 7),
                           P.SuppressTokensAtBeginLogitsProcessor([2, 8], 7)),
        "temperature": (T.TemperatureLogitsWarper(0.6), P.TemperatureLogitsWarper(0.6)),
        "top_k": (T.TopKLogitsWarper(4, min_tokens_to_keep=2), P.TopKLogitsWarper(4, min_tokens_to_keep=2)),
        "top_p": (T.TopPLogitsWarper(0.7), P.TopPLogitsWarper(0.7)),
        "min_p": (T.MinPLogitsWarper(0.1, min_tokens_to_keep=3), P.MinPLogitsWarper(0.1, min_tokens_to_keep=3)),
        "typical": (T.TypicalLogitsWarper(0.6), P.TypicalLogitsWarper(0.6)),
        "typical_keep": (T.TypicalLogitsWarper(0.2, min_tokens_to_keep=4),
                         P.TypicalLogitsWarper(0.2, min_tokens_to_keep=4)),
        "epsilon": (T.EpsilonLogitsWarper(0.05), P.EpsilonLogitsWarper(0.05)),
        "epsilon_keep": (T.EpsilonLogitsWarper(0.3, min_tokens_to_keep=3),
                         P.EpsilonLogitsWarper(0.3, min_tokens_to_keep=3)),
        "eta": (T.EtaLogitsWarper(0.05), P.EtaLogitsWarper(0.05)),
        "eta_keep": (T.EtaLogitsWarper(0.5, min_tokens_to_keep=2), P.EtaLogitsWarper(0.5, min_tokens_to_keep=2)),
    }


NAMES = [
    "repetition", "repetition_ignore", "encoder_repetition", "ngram", "encoder_ngram", "sequence_bias",
    "bad_words", "min_length", "min_new", "prefix", "forced_bos", "forced_eos", "inf_nan", "decay",
    "normalise", "suppress", "suppress_begin", "temperature", "top_k", "top_p", "min_p", "typical",
    "typical_keep", "epsilon", "epsilon_keep", "eta", "eta_keep"]


@pytest.mark.parametrize("name", NAMES)
def test_class_matches_transformers(name):
    torch = require_module("torch")
    T = require_module("transformers")
    theirs, mine = _pairs(torch, T)[name]
    ids, scores = IDS, SCORES.copy()
    if name == "inf_nan":
        scores[0, 0], scores[2, 3] = np.nan, np.inf
    expected = theirs(torch.tensor(ids), torch.tensor(scores)).numpy()
    got = mine(ids, scores.copy())
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-6, atol=1e-6)


def test_the_list_applies_in_order_and_names_are_public():
    chain = minibertgen.LogitsProcessorList([minibertgen.TemperatureLogitsWarper(0.5),
                                             minibertgen.TopKLogitsWarper(3)])
    out = chain(IDS, SCORES)
    assert np.isfinite(out).sum(axis=1).tolist() == [3, 3, 3, 3]
    np.testing.assert_allclose(out[np.isfinite(out)], (SCORES / np.float32(0.5))[np.isfinite(out)])
    with pytest.raises(NotImplementedError):
        minibertgen.LogitsProcessor()(IDS, SCORES)


@pytest.mark.parametrize("build, match", [
    (lambda: P.TemperatureLogitsWarper(float("nan")), "temperature"),
    (lambda: P.TemperatureLogitsWarper(0.0), "temperature"),
    (lambda: P.RepetitionPenaltyLogitsProcessor(-1.0), "penalty"),
    (lambda: P.TopKLogitsWarper(0), "top_k"),
    (lambda: P.TopPLogitsWarper(1.5), "top_p"),
    (lambda: P.TypicalLogitsWarper(1.0), "typical_p"),
    (lambda: P.EpsilonLogitsWarper(0.0), "epsilon_cutoff"),
    (lambda: P.EtaLogitsWarper(1.0), "eta_cutoff"),
    (lambda: P.TopKLogitsWarper(3, filter_value="low"), "filter_value"),  # any number works (issue 33)
    (lambda: P.MinPLogitsWarper(0.1, min_tokens_to_keep=0), "min_tokens_to_keep"),
    (lambda: P.SequenceBiasLogitsProcessor({(3,): "a"}), "sequence_bias"),
    (lambda: P.NoBadWordsLogitsProcessor([[]]), "bad_words_ids"),
    (lambda: P.ExponentialDecayLengthPenalty((1, float("inf")), [1], 3), "decay_factor"),
    (lambda: P.SuppressTokensLogitsProcessor("9"), "suppress_tokens"),
])
def test_constructor_checks(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_prefix_fn_returning_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="prefix_allowed_tokens_fn"):
        P.PrefixConstrainedLogitsProcessor(lambda b, s: [], 1)(IDS, SCORES)
    with pytest.raises(ValueError, match="prefix_allowed_tokens_fn"):
        P.PrefixConstrainedLogitsProcessor(lambda b, s: [500], 1)(IDS, SCORES)


# -- generate() with these, against transformers --------------------------------------------

def _both(name, **settings):
    ids, mask = model_inputs({"model": name, "inputs": "batch"})
    torch = require_module("torch")
    theirs_settings = {k: (v[1] if isinstance(v, tuple) and len(v) == 2 and k == "logits_processor" else v)
                       for k, v in settings.items()}
    mine_settings = {k: (v[0] if k == "logits_processor" else v) for k, v in settings.items()}
    expected = transformers_model(name).generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                 **theirs_settings)
    got = load_model(name).generate(ids, attention_mask=mask, **mine_settings)
    return np.asarray(got), expected.numpy()


@pytest.mark.parametrize("name", ["random_seq2seq", "random_decoder"])
@pytest.mark.parametrize("settings", [
    {"exponential_decay_length_penalty": (2, 2.5), "eos_token_id": [5, 9]},
    {"num_beams": 3, "exponential_decay_length_penalty": (1, 1.7), "eos_token_id": [5, 9, 13]},
    {"prefix_allowed_tokens_fn": lambda b, s: [int(s[-1]) % 7 + 4, 9, b + 10]},
    {"num_beams": 2, "prefix_allowed_tokens_fn": lambda b, s: list(range(4 + b, 30, 3))},
    {"suppress_tokens": [11, 12, 500], "begin_suppress_tokens": [13, 600]},
    {"eos_token_id": 999, "min_length": 6},
])
def test_generate_settings_match_transformers(name, settings):
    got, expected = _both(name, max_new_tokens=8, **settings)
    np.testing.assert_array_equal(got, expected)


def test_generate_with_a_custom_processor_list_matches_transformers():
    T = require_module("transformers")
    theirs = [T.RepetitionPenaltyLogitsProcessor(1.8), T.NoRepeatNGramLogitsProcessor(2)]
    mine = minibertgen.LogitsProcessorList([P.RepetitionPenaltyLogitsProcessor(1.8), P.NoRepeatNGramLogitsProcessor(2)])
    for beams in (1, 3):
        # repetition_penalty=1.2 builds one too: the user's instance replaces it, as in transformers
        got, expected = _both("random_seq2seq", max_new_tokens=8, num_beams=beams, repetition_penalty=1.2,
                              logits_processor=(mine, T.LogitsProcessorList(theirs)))
        np.testing.assert_array_equal(got, expected)


def test_a_plain_function_is_a_processor():
    ids, mask = model_inputs({"model": "random_seq2seq", "inputs": "batch"})
    model = load_model("random_seq2seq")

    def only_seven(input_ids, scores):
        out = np.full_like(scores, -np.inf)
        out[:, 7] = 0.0
        return out

    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, logits_processor=[only_seven])
    assert (out[:, 1:] == 7).all()
    with pytest.raises(TypeError, match="logits_processor"):
        model.generate(ids, attention_mask=mask, logits_processor=["not callable"])


@pytest.mark.parametrize("settings", [{"typical_p": 0.4}, {"epsilon_cutoff": 0.02}, {"eta_cutoff": 0.02},
                                      {"top_k": 0, "typical_p": 0.7, "temperature": 0.8},
                                      {"num_beams": 2, "typical_p": 0.5}])
def test_sampling_variants_first_step_scores_match_transformers(settings):
    """The first sampled step depends only on the input: its warped scores must equal
    transformers' (later steps follow different random draws)."""
    torch = require_module("torch")
    ids, mask = model_inputs({"model": "random_seq2seq", "inputs": "batch"})
    kwargs = dict(do_sample=True, max_new_tokens=2, return_dict_in_generate=True, output_scores=True, **settings)
    expected = transformers_model("random_seq2seq").generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                             **kwargs).scores[0].numpy()
    got = load_model("random_seq2seq").generate(ids, attention_mask=mask, seed=0, **kwargs)["scores"][0]
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert finite.sum() < expected.size  # the warper did drop tokens
    # warped float32 logits (up to |31| here): DESIGN.md's 1e-4 absolute, with no relative widening
    # (rtol=1e-4 allowed 3e-3 at that scale); measured <= 1.4e-5
    np.testing.assert_allclose(got[finite], expected[finite], rtol=0, atol=1e-4)
