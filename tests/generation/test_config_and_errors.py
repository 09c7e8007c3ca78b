"""GenerationConfig (names, defaults, files, precedence) and generate()'s errors on bad input."""
import json

import numpy as np
import pytest

from cases import FIXTURES, model_inputs
from conftest import require_module
from gen_helpers import load_model
from minibertgen.generation import GenerationConfig

TOY = FIXTURES / "toy_bert2bert"


def _toy_inputs():
    return model_inputs({"model": "toy_bert2bert", "inputs": "batch"})


def test_defaults_are_transformers():
    config = GenerationConfig()
    assert (config.max_length, config.min_length, config.num_beams, config.do_sample) == (20, 0, 1, False)
    assert (config.temperature, config.top_k, config.top_p, config.length_penalty) == (1.0, 50, 1.0, 1.0)
    assert config.early_stopping is False and config.max_new_tokens is None


def test_defaults_match_transformers_live():
    transformers = require_module("transformers")
    theirs = transformers.GenerationConfig().to_dict()
    mine = GenerationConfig().to_dict()
    for key, value in mine.items():
        if key in theirs and key not in ("transformers_version",):
            assert theirs[key] == value, key


def test_round_trip_and_transformers_reads_our_file(tmp_path):
    config = GenerationConfig(num_beams=4, early_stopping="never", bad_words_ids=[[3]], custom_key=1)
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "generation_config.json").read_text())
    assert data["num_beams"] == 4 and "max_length" not in data  # only non-defaults are written
    assert GenerationConfig.from_pretrained(tmp_path) == config
    transformers = require_module("transformers")
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert theirs.num_beams == 4 and theirs.early_stopping == "never"


def test_model_generation_config_comes_from_the_file_or_model_config(tmp_path):
    model = load_model("toy_bert2bert")
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id,
            model.generation_config.pad_token_id) == (2, 1, 0)
    derived = GenerationConfig.from_model_config(model.config)
    assert derived.pad_token_id == 0 and derived.eos_token_id == 1 and derived.bos_token_id == 2


def test_generation_config_json_is_honoured(tmp_path):
    import shutil

    from minibertgen import EncoderDecoderModel

    for f in TOY.iterdir():
        shutil.copy(f, tmp_path / f.name)
    GenerationConfig(num_beams=3, max_new_tokens=4, bos_token_id=2, eos_token_id=1,
                     pad_token_id=0).save_pretrained(tmp_path)
    model = EncoderDecoderModel.from_pretrained(tmp_path)
    ids, mask = _toy_inputs()
    out = model.generate(ids, attention_mask=mask)
    assert out.shape[1] <= 5
    np.testing.assert_array_equal(out, load_model("toy_bert2bert").generate(ids, attention_mask=mask,
                                                                              num_beams=3, max_new_tokens=4))
    # keyword arguments override the file; a passed config's default fields come from the file
    assert model.generate(ids, attention_mask=mask, max_new_tokens=2).shape[1] <= 3
    passed = model.generate(ids, attention_mask=mask, generation_config=GenerationConfig(length_penalty=3.0))
    np.testing.assert_array_equal(passed, load_model("toy_bert2bert").generate(
        ids, attention_mask=mask, num_beams=3, max_new_tokens=4, length_penalty=3.0))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
    ({"num_return_sequences": 2}, "num_return_sequences"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"do_sample": True, "top_p": 1.5}, "top_p"),
    ({"do_sample": True, "top_p": -0.1}, "top_p"),  # top_p=0.0 is allowed, as in transformers: greedy
    ({"do_sample": True, "temperature": 0.0}, "temperature"),
    ({"do_sample": True, "temperature": -1.0}, "temperature"),
    ({"early_stopping": "sometimes"}, "early_stopping"),
    ({"max_length": 65}, "max_position_embeddings"),
    ({"max_new_tokens": 80}, "max_position_embeddings"),
    ({"max_length": 1}, "max_length"),
    ({"num_beam_groups": 2, "num_beams": 4}, "not supported"),
    ({"penalty_alpha": 0.6}, "not supported"),
    ({"bad_words_ids": [[]]}, "bad_words_ids"),
    ({"bad_words_ids": [[99]]}, "vocabulary"),
    ({"forced_bos_token_id": 500}, "forced_bos_token_id"),
])
def test_bad_settings_raise_clear_errors(kwargs, match):
    ids, mask = _toy_inputs()
    with pytest.raises(ValueError, match=match):
        load_model("toy_bert2bert").generate(ids, attention_mask=mask, **kwargs)


def test_unknown_keyword_and_bad_seed_are_type_errors():
    ids, mask = _toy_inputs()
    model = load_model("toy_bert2bert")
    with pytest.raises(TypeError, match="num_beam"):
        model.generate(ids, num_beam=3)
    with pytest.raises(TypeError, match="seed"):
        model.generate(ids, do_sample=True, seed="abc")
    with pytest.raises(TypeError, match="generation_config"):
        model.generate(ids, generation_config={"num_beams": 2})


def test_missing_decoder_start_token_is_an_error():
    ids, mask = _toy_inputs()
    model = load_model("toy_bert2bert")
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        model.generate(ids, decoder_start_token_id=None, bos_token_id=None)
    with pytest.raises(ValueError, match="input_ids"):
        model.generate()


def test_encoder_outputs_can_be_passed():
    ids, mask = _toy_inputs()
    model = load_model("toy_bert2bert")
    encoded = model.encode(ids, attention_mask=mask)
    np.testing.assert_array_equal(model.generate(encoder_outputs=encoded, attention_mask=mask, num_beams=2),
                                  model.generate(ids, attention_mask=mask, num_beams=2))


def test_decoder_alone_generates_from_a_prompt():
    """The decoder-only example: BertGenerationDecoder continuing a prompt."""
    model = load_model("random_decoder")
    prompt = np.array([[2, 17, 33, 41]])
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (1, 10)
    np.testing.assert_array_equal(out[:, :4], prompt)
    # from bos alone: 20 new tokens by default (eos held off: the loud fixture would stop at once)
    assert model.generate(min_new_tokens=20).shape == (1, 21)


def test_finished_rows_are_padded_and_output_starts_with_start_token():
    ids, mask = _toy_inputs()
    out = load_model("toy_bert2bert").generate(ids, attention_mask=mask)
    assert (out[:, 0] == 2).all()
    for row in out:
        ends = np.flatnonzero(row == 1)
        if ends.size:
            assert (row[ends[0] + 1:] == 0).all()
