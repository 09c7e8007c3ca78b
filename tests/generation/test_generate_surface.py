"""generate() surface from issue 20: inputs_embeds for a decoder, beam sampling on both
model kinds, against transformers where the result is deterministic."""
import numpy as np
import pytest

from cases import model_inputs
from conftest import require_module
from gen_helpers import load_model, transformers_model


def _embeds():
    hidden = load_model("random_decoder").config.hidden_size
    embeds = np.random.default_rng(0).normal(size=(2, 5, hidden)).astype(np.float32)
    return embeds, np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])


@pytest.mark.parametrize("settings", [{"max_new_tokens": 6}, {"max_new_tokens": 6, "num_beams": 3}, {},
                                      {"max_length": 9, "min_length": 4, "eos_token_id": [5, 9]},
                                      {"max_new_tokens": 6, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2}])
def test_inputs_embeds_matches_transformers(settings):
    torch = require_module("torch")
    embeds, mask = _embeds()
    expected = transformers_model("random_decoder").generate(
        inputs_embeds=torch.tensor(embeds), attention_mask=torch.tensor(mask), **settings).numpy()
    got = load_model("random_decoder").generate(inputs_embeds=embeds, attention_mask=mask, **settings)
    np.testing.assert_array_equal(got, expected)  # generated tokens only, as transformers returns them


def test_inputs_embeds_of_the_prompt_continue_like_its_ids():
    """The embeddings of a prompt's ids generate what the ids do (positions and cache line up)."""
    model = load_model("random_decoder")
    ids = np.array([[7, 11, 13, 17]])
    table = model.embeddings_table  # [vocab, hidden]
    from_ids = model.generate(ids, max_new_tokens=5, min_new_tokens=5)  # eos held off: all five steps run
    # word embeddings alone differ from the ids' (no positions in them): compare with the
    # model's own forward on those embeddings instead, step by step
    out = model(inputs_embeds=np.asarray(table)[ids])
    first = int(np.asarray(out["logits"])[0, -1].argmax())
    assert model.generate(inputs_embeds=np.asarray(table)[ids], max_new_tokens=5, min_new_tokens=5)[0, 0] == first
    assert from_ids.shape == (1, 9)


@pytest.mark.parametrize("kwargs, match", [
    ({"inputs_embeds": "x"}, "inputs_embeds"),
    ({"inputs_embeds": np.zeros((1, 3, 5), np.float32)}, "inputs_embeds"),
    ({"inputs_embeds": np.zeros((1, 3, 32), np.float32), "use_cache": False}, "use_cache"),
    ({"inputs_embeds": np.zeros((1, 3, 32), np.float32), "input_ids": np.array([[1, 2]])}, "inputs_embeds"),
    ({"inputs_embeds": np.zeros((1, 3, 32), np.float32), "max_length": 3}, "max_length"),
])
def test_inputs_embeds_refusals(kwargs, match):
    model = load_model("random_decoder")
    kwargs = dict(kwargs)
    if "inputs_embeds" in kwargs and kwargs["inputs_embeds"].__class__ is np.ndarray \
            and kwargs["inputs_embeds"].shape[-1] == 32:
        kwargs["inputs_embeds"] = np.zeros((1, 3, model.config.hidden_size), np.float32)
    with pytest.raises((ValueError, TypeError, NotImplementedError), match=match):
        model.generate(**kwargs)


@pytest.mark.parametrize("name", ["random_seq2seq", "random_decoder"])
def test_beam_sampling_is_reproducible_and_scores_are_its_tokens(name):
    """Beam sampling (num_beams > 1, do_sample=True) on both model kinds: reproducible with a
    seed, and each returned hypothesis's score is its tokens' summed log-probabilities over
    length (the draws themselves follow transformers' distribution, not torch's generator)."""
    ids, mask = model_inputs({"model": name, "inputs": "batch"})
    model = load_model(name)
    kwargs = dict(do_sample=True, num_beams=3, max_new_tokens=6, temperature=1.3, num_return_sequences=2,
                  return_dict_in_generate=True, output_scores=True)
    a = model.generate(ids, attention_mask=mask, seed=3, **kwargs)
    b = model.generate(ids, attention_mask=mask, seed=3, **kwargs)
    np.testing.assert_array_equal(a["sequences"], b["sequences"])
    transition = model.compute_transition_scores(a["sequences"], a["scores"], a["beam_indices"])
    lengths = (np.asarray(a["beam_indices"]) >= 0).sum(axis=1)
    np.testing.assert_allclose(transition.sum(axis=1) / lengths, a["sequences_scores"], rtol=1e-5, atol=1e-5)
