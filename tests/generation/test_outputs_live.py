"""generate(return_dict_in_generate=True, output_attentions / output_hidden_states) against
transformers 4.57 live: every per-step, per-layer tensor, its shape and the nesting lengths."""
import warnings

import numpy as np
import pytest

from cases import model_inputs
from conftest import require_module
from gen_helpers import load_model, transformers_model

SEQ2SEQ_FIELDS = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                  "decoder_hidden_states")
DECODER_FIELDS = ("attentions", "hidden_states")
BOTH = {"output_attentions": True, "output_hidden_states": True}

# (model, settings): bert2bert greedy and beam search with both outputs, and the cases that
# show where the rows come from (num_return_sequences with beams and with sampling: the
# encoder's outputs stay one row per input) or how many positions a step covers (no cache).
SEQ2SEQ_CASES = [
    ("toy_bert2bert", {**BOTH}),
    ("toy_bert2bert", {**BOTH, "num_beams": 3}),
    ("toy_bert2bert", {**BOTH, "num_beams": 3, "num_return_sequences": 2}),
    ("toy_bert2bert", {"output_attentions": True, "num_beams": 2}),
    ("random_seq2seq", {**BOTH, "do_sample": True, "top_k": 1, "num_return_sequences": 2, "max_new_tokens": 6}),
    ("random_seq2seq", {"output_hidden_states": True, "use_cache": False, "num_beams": 2, "max_new_tokens": 5}),
    ("random_seq2seq_relative", {**BOTH, "max_new_tokens": 6}),
]
# left-padded prompts [7, 4, 9] tokens: the first step covers the whole prompt
DECODER_CASES = [
    {**BOTH, "max_new_tokens": 6},
    {**BOTH, "max_new_tokens": 6, "num_beams": 3},
    {"output_attentions": True, "max_new_tokens": 4, "use_cache": False},
]


def _generate_both(model_name, settings):
    """(ours, transformers') ModelOutput for the batch inputs of ``model_name``."""
    torch = require_module("torch")
    reference = transformers_model(model_name)
    ids, mask = model_inputs({"model": model_name, "inputs": "batch"})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                    return_dict_in_generate=True, **settings)
    ours = load_model(model_name).generate(ids, attention_mask=mask, return_dict_in_generate=True, **settings)
    return ours, theirs


def assert_nested_close(mine, theirs, where):
    """Same nesting (tuple lengths at every level), then every tensor's shape and values."""
    if isinstance(theirs, tuple):
        assert isinstance(mine, tuple), f"{where}: got {type(mine).__name__}, expected a tuple"
        assert len(mine) == len(theirs), f"{where}: length {len(mine)} != transformers' {len(theirs)}"
        for i, (a, b) in enumerate(zip(mine, theirs)):
            assert_nested_close(a, b, f"{where}[{i}]")
        return
    expected = theirs.numpy()
    got = np.asarray(mine)
    assert got.shape == expected.shape, f"{where}: shape {got.shape} != transformers' {expected.shape}"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=where)


def _compare(ours, theirs, fields, settings):
    np.testing.assert_array_equal(ours.sequences, theirs.sequences.numpy(), err_msg=str(settings))
    for name in fields:
        expected = getattr(theirs, name)
        if expected is None:  # not asked for: None on both sides
            assert getattr(ours, name) is None, f"{name}: transformers leaves it None, we returned it"
            continue
        assert_nested_close(getattr(ours, name), expected, name)


@pytest.mark.parametrize("model_name, settings", SEQ2SEQ_CASES,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in s.items())}" for m, s in SEQ2SEQ_CASES])
def test_seq2seq_attentions_and_hidden_states_match_transformers(model_name, settings):
    ours, theirs = _generate_both(model_name, settings)
    _compare(ours, theirs, SEQ2SEQ_FIELDS, settings)
    assert ours.attentions is None and ours.hidden_states is None  # decoder-only names are not used here
    batch = model_inputs({"model": model_name, "inputs": "batch"})[0].shape[0]
    rows = batch * max(settings.get("num_beams", 1), settings.get("num_return_sequences", 1))
    if settings.get("output_attentions"):
        assert ours.encoder_attentions[0].shape[0] == batch  # one row per input, not per beam
        assert ours.decoder_attentions[0][0].shape[0] == rows and ours.cross_attentions[-1][0].shape[0] == rows
        assert len(ours.decoder_attentions) == ours.sequences.shape[1] - 1  # one entry per generated step
    if settings.get("output_hidden_states"):
        assert ours.encoder_hidden_states[0].shape[0] == batch
        assert len(ours.decoder_hidden_states[0]) == load_model(model_name).config.decoder.num_hidden_layers + 1


@pytest.mark.parametrize("settings", DECODER_CASES, ids=[str(s) for s in DECODER_CASES])
def test_decoder_alone_attentions_and_hidden_states_match_transformers(settings):
    ours, theirs = _generate_both("random_decoder", settings)
    _compare(ours, theirs, DECODER_FIELDS, settings)
    for name in SEQ2SEQ_FIELDS:
        assert getattr(ours, name) is None, name
    prompt_len = model_inputs({"model": "random_decoder", "inputs": "batch"})[0].shape[1]
    first = ours.attentions[0][0]  # step 0, layer 0: [rows, heads, prompt_len, prompt_len]
    assert first.shape[2:] == (prompt_len, prompt_len)
