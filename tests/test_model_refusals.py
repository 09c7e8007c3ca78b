"""Model-level inputs that issue 32 found unclear or silently wrong: each now a clear error
naming the argument, before any work (or allocation) is done."""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import minibertgen as mb
from conftest import require_module
from minibertgen import loading

TOY = Path(__file__).parent / "fixtures" / "generation" / "toy_bert2bert"
SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=32, is_decoder=True)
EMPTY = np.zeros((1, 0), dtype=np.int64)


def decoder(**overrides):
    return mb.BertGenerationDecoder(mb.BertGenerationConfig(**{**SMALL, **overrides}), seed=0)


def test_set_input_embeddings_refuses_an_integer_table():
    model = decoder()
    before = model(input_ids=np.array([[2, 5, 7]])).logits
    with pytest.raises(TypeError, match="the table has dtype int64: expected floating point"):
        model.set_input_embeddings(np.zeros((30, 16), dtype=np.int64))
    after = model(input_ids=np.array([[2, 5, 7]])).logits
    assert after.dtype == np.float32  # the old code computed float64 logits from the int table
    np.testing.assert_array_equal(after, before)


def test_an_empty_sequence_is_a_clear_error_in_forward_and_generate():
    model = decoder()
    with pytest.raises(ValueError, match=r"input_ids has shape \(1, 0\): an empty sequence"):
        model(input_ids=EMPTY)
    with pytest.raises(ValueError, match=r"input_ids has shape \(1, 0\): an empty prompt"):
        model.generate(EMPTY, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"inputs_embeds has shape \(1, 0, 16\): an empty sequence"):
        model(inputs_embeds=np.zeros((1, 0, 16), dtype=np.float32))
    seq2seq = mb.EncoderDecoderModel.from_pretrained(TOY)
    with pytest.raises(ValueError, match=r"input_ids has shape \(1, 0\): an empty sequence"):
        seq2seq.generate(EMPTY, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"input_ids has shape \(1, 0\): an empty sequence"):
        seq2seq(input_ids=EMPTY, decoder_input_ids=np.array([[2]]))


def test_encoder_outputs_of_the_wrong_type_are_named_as_encoder_outputs():
    seq2seq = mb.EncoderDecoderModel.from_pretrained(TOY)
    for call in (lambda: seq2seq(encoder_outputs="x", decoder_input_ids=np.array([[2]])),
                 lambda: seq2seq(input_ids=np.array([[2, 5]]), encoder_outputs="x", decoder_input_ids=np.array([[2]])),
                 lambda: seq2seq.generate(np.array([[2, 5]]), encoder_outputs="x", max_new_tokens=2)):
        with pytest.raises(TypeError, match="encoder_outputs='x': expected the encoder's output"):
            call()


def test_a_million_layers_over_a_small_checkpoint_is_refused_before_any_layer_is_listed(tmp_path, monkeypatch):
    directory = tmp_path / "toy"
    shutil.copytree(TOY, directory)
    config = json.loads((directory / "config.json").read_text())
    config["decoder"]["num_hidden_layers"] = 1_000_000
    (directory / "config.json").write_text(json.dumps(config))
    real = loading.expected_shapes

    def listed(config, *args):
        assert config.num_hidden_layers < 1000, "a per-layer table of a million layers was built"
        return real(config, *args)

    monkeypatch.setattr(loading, "expected_shapes", listed)
    with pytest.raises(ValueError, match="holds 2 layer.* but num_hidden_layers=1000000"):
        mb.EncoderDecoderModel.from_pretrained(directory)


def test_a_gpt2_model_type_in_a_bert_checkpoint_warns_naming_model_type(tmp_path, caplog):
    transformers = require_module("transformers")
    require_module("torch")
    config = {key: value for key, value in SMALL.items() if key != "is_decoder"}
    transformers.BertModel(transformers.BertConfig(**config)).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "model_type": "gpt2"}))
    verbosity = transformers.logging.get_verbosity()  # other tests may have silenced transformers
    transformers.logging.set_verbosity_warning()
    transformers.logging.enable_propagation()  # transformers' records reach caplog too
    try:
        with caplog.at_level(logging.WARNING):
            transformers.BertModel.from_pretrained(tmp_path)
            mb.BertModel.from_pretrained(tmp_path)
    finally:
        transformers.logging.disable_propagation()
        transformers.logging.set_verbosity(verbosity)
    theirs = [r.getMessage() for r in caplog.records if r.name.startswith("transformers")]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("minibertgen")]
    assert any("model of type gpt2 to instantiate a model of type bert" in message for message in theirs)
    assert any("model_type='gpt2'" in m and "model of type gpt2 to instantiate a model of type bert" in m
               for m in ours), ours


def test_an_assistant_is_a_model_with_positions_for_the_whole_run():
    model = decoder()
    with pytest.raises(TypeError, match="assistant_model='toy': expected a minibertgen model"):
        model.generate(np.array([[2, 5]]), max_new_tokens=2, assistant_model="toy")
    short = decoder(max_position_embeddings=8)
    with pytest.raises(ValueError, match=r"assistant_model \(BertGenerationDecoder\) has max_position_embeddings=8, "
                                         r"fewer than max_length=23"):
        model.generate(np.array([[2, 5, 7]]), max_new_tokens=20, assistant_model=short)
    fits = model.generate(np.array([[2, 5, 7]]), max_new_tokens=4, assistant_model=short)
    np.testing.assert_array_equal(fits, model.generate(np.array([[2, 5, 7]]), max_new_tokens=4))


def test_resize_refuses_a_vocabulary_that_cannot_fit_naming_the_bytes(monkeypatch):
    from minibertgen import embeddings_surface

    model = decoder()
    monkeypatch.setattr(embeddings_surface, "_resized", lambda *a: pytest.fail("a table was allocated"))
    with pytest.raises(ValueError, match=r"new_num_tokens=10000000000: 1 table\(s\) of \[10000000000, 16\] float32 "
                                         r"would take 640,000,000,000 bytes"):
        model.resize_token_embeddings(10**10)
    assert model.config.vocab_size == 30 and model.get_input_embeddings().weight.shape == (30, 16)
