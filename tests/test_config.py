import json

import pytest

import minibertgen as mb
from minibertgen.config import ACTIVATIONS

TINY = dict(vocab_size=20, num_hidden_layers=1, intermediate_size=16, max_position_embeddings=16)


def test_defaults_are_transformers_defaults():
    c = mb.BertGenerationConfig()
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (
        50358, 1024, 24, 16, 4096)
    assert c.hidden_act == "gelu" and c.hidden_dropout_prob == 0.1 and c.attention_probs_dropout_prob == 0.1
    assert c.max_position_embeddings == 512 and c.initializer_range == 0.02 and c.layer_norm_eps == 1e-12
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id) == (0, 2, 1)
    assert c.position_embedding_type == "absolute" and c.use_cache is True
    assert c.is_decoder is False and c.add_cross_attention is False and c.tie_word_embeddings is True
    assert c.decoder_start_token_id is None


def test_round_trip_keeps_unknown_keys_and_overrides(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4, "type_vocab_size": 2,
         "torch_dtype": "float16", "my_custom_field": [1, 2]}))
    c = mb.BertGenerationConfig.from_pretrained(tmp_path, bos_token_id=101, is_decoder=True)
    assert c.bos_token_id == 101 and c.is_decoder is True and c.hidden_size == 64
    assert c.type_vocab_size == 2 and c.my_custom_field == [1, 2]
    assert c.dtype == "float16"  # torch_dtype is the old name of dtype
    out = tmp_path / "saved"
    c.save_pretrained(out)
    data = json.loads((out / "config.json").read_text())
    assert data["model_type"] == "bert-generation" and data["my_custom_field"] == [1, 2]
    assert data["bos_token_id"] == 101
    assert mb.BertGenerationConfig.from_pretrained(out) == c


@pytest.mark.parametrize("bad, message", [
    (dict(hidden_size=30, num_attention_heads=4), "not divisible"),
    (dict(hidden_act="gelu_fancy"), "hidden_act='gelu_fancy'"),
    (dict(position_embedding_type="rotary"), "position_embedding_type='rotary'"),
    (dict(num_hidden_layers=0), "num_hidden_layers=0"),
    (dict(add_cross_attention=True), "is_decoder"),
])
def test_invalid_values_are_accepted_as_data_and_named_when_a_model_is_built(bad, message):
    config = mb.BertGenerationConfig(**{**TINY, **bad})  # a config is data: created without a word (transformers)
    with pytest.raises(ValueError, match=message):
        mb.BertGenerationEncoder(config)


def test_every_listed_activation_is_accepted():
    for act in ACTIVATIONS:
        assert mb.BertGenerationConfig(hidden_act=act).hidden_act == act


def test_missing_and_corrupt_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mb.BertGenerationConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        mb.BertGenerationConfig.from_pretrained(tmp_path)


def test_unknown_hub_id_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="pip install huggingface_hub && hf download google/nothing-here"):
        mb.BertGenerationConfig.from_pretrained("google/nothing-here")


def test_hub_cache_snapshot_is_found(tmp_path, monkeypatch):
    repo = tmp_path / "models--org--tiny"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2).save_pretrained(repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert mb.BertGenerationConfig.from_pretrained("org/tiny").hidden_size == 8


def test_encoder_decoder_config_marks_decoder_and_round_trips(tmp_path):
    enc = mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2)
    config = mb.EncoderDecoderConfig.from_encoder_decoder_configs(enc, enc, decoder_start_token_id=2)
    assert config.decoder.is_decoder and config.decoder.add_cross_attention
    assert not enc.is_decoder  # the caller's config is not modified
    assert config.is_encoder_decoder and config.decoder_start_token_id == 2
    config.save_pretrained(tmp_path)
    again = mb.EncoderDecoderConfig.from_pretrained(tmp_path)
    assert again.decoder.add_cross_attention and again.encoder.hidden_size == 8
    assert again.decoder_start_token_id == 2


def test_encoder_decoder_config_rejects_foreign_model_types():
    with pytest.raises(ValueError, match="encoder.model_type='t5'"):
        mb.EncoderDecoderConfig(encoder={"model_type": "t5"}, decoder={})


def test_offline_or_local_only_never_downloads(tmp_path, monkeypatch):
    calls = []
    fake = type("hub", (), {"snapshot_download": staticmethod(lambda *a, **k: calls.append((a, k)))})
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", fake)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        mb.BertGenerationConfig.from_pretrained("org/absent")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        mb.BertGenerationConfig.from_pretrained("org/absent", local_files_only=True)
    assert calls == []


def test_download_fetches_only_the_needed_files(tmp_path, monkeypatch):
    snapshot = tmp_path / "snap"
    mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2).save_pretrained(snapshot)
    calls = []

    def snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(snapshot)

    fake = type("hub", (), {"snapshot_download": staticmethod(snapshot_download)})
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", fake)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert mb.BertGenerationConfig.from_pretrained("org/remote").hidden_size == 8
    (repo_id, revision, patterns), = calls
    assert repo_id == "org/remote" and revision == "main"
    assert "config.json" in patterns and "model.safetensors" in patterns and "*.msgpack" not in patterns


def test_revision_and_commit_hash_pick_their_snapshot(tmp_path, monkeypatch):
    repo = tmp_path / "models--org--tiny"
    main_commit, tag_commit = "a" * 40, "b" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(main_commit)
    (repo / "refs" / "v1").write_text(tag_commit + "\n")
    mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2).save_pretrained(repo / "snapshots" / main_commit)
    mb.BertGenerationConfig(hidden_size=12, num_attention_heads=2).save_pretrained(repo / "snapshots" / tag_commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert mb.BertGenerationConfig.from_pretrained("org/tiny").hidden_size == 8
    assert mb.BertGenerationConfig.from_pretrained("org/tiny", revision="v1").hidden_size == 12
    assert mb.BertGenerationConfig.from_pretrained("org/tiny", revision=tag_commit).hidden_size == 12
    with pytest.raises(FileNotFoundError, match="--revision v2"):
        mb.BertGenerationConfig.from_pretrained("org/tiny", revision="v2")


def test_local_directory_wins_over_the_cache(tmp_path, monkeypatch):
    local = tmp_path / "org" / "tiny"
    mb.BertGenerationConfig(hidden_size=4, num_attention_heads=2).save_pretrained(local)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert mb.BertGenerationConfig.from_pretrained("org/tiny").hidden_size == 4


# -- issue 20: configs are data; issue 17: every bad config.json is a clear error -------------------
def transformers_or_skip():
    from conftest import require_module

    require_module("torch")
    return require_module("transformers")


def test_hidden_size_37_is_accepted_at_creation_and_refused_by_the_model_as_in_transformers():
    transformers = transformers_or_skip()
    ours = mb.BertGenerationConfig(hidden_size=37, **TINY)
    theirs = transformers.BertGenerationConfig(hidden_size=37, **TINY)
    assert ours.hidden_size == theirs.hidden_size == 37
    with pytest.raises(ValueError):
        transformers.BertGenerationEncoder(theirs)
    with pytest.raises(ValueError, match="hidden_size=37 is not divisible by num_attention_heads=16"):
        mb.BertGenerationEncoder(ours)


@pytest.mark.parametrize("name, value, message", [
    ("layer_norm_eps", "1e-12", "layer_norm_eps='1e-12': expected a positive number"),
    ("layer_norm_eps", None, "layer_norm_eps=None"),
    ("layer_norm_eps", 0.0, "layer_norm_eps=0.0: expected a finite number > 0"),
    ("layer_norm_eps", -1e-5, "layer_norm_eps=-1e-05"),
    ("layer_norm_eps", float("inf"), "layer_norm_eps=inf"),
    ("layer_norm_eps", float("nan"), "layer_norm_eps=nan"),
    ("initializer_range", "0.02", "initializer_range='0.02': expected a non-negative number"),
    ("initializer_range", -0.02, "initializer_range=-0.02: expected a finite number >= 0"),
])
def test_bad_numbers_are_named_when_a_model_is_built_or_loaded(tmp_path, name, value, message):
    config = mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2, **TINY, **{name: value})
    with pytest.raises(ValueError, match=message):
        mb.BertGenerationEncoder(config)
    good = mb.BertGenerationEncoder(mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2, **TINY))
    good.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, name: value}))
    with pytest.raises(ValueError, match=message):  # before any weight is read or initialised
        mb.BertGenerationDecoder.from_pretrained(tmp_path, is_decoder=True)


def test_config_json_that_is_not_utf8_names_the_file(tmp_path):
    (tmp_path / "config.json").write_bytes(b'{"hidden_size": 8, "name": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"config\.json: config\.json is not UTF-8 text \(byte 28"):
        mb.BertGenerationConfig.from_pretrained(tmp_path)


def test_config_json_nested_3000_deep_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"x": ' + "[" * 3000 + "]" * 3000 + "}")
    with pytest.raises(ValueError, match="nested .*deep"):
        mb.BertGenerationConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"x": ' + '{"a": ' * 300 + "1" + "}" * 300 + "}")
    with pytest.raises(ValueError, match="nested more than 200 levels"):
        mb.BertGenerationConfig.from_pretrained(tmp_path)


def test_a_gpt2_config_warns_as_transformers_warns(tmp_path, caplog):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "hidden_size": 8,
                                                      "num_attention_heads": 2}))
    with caplog.at_level("WARNING", logger="minibertgen.config"):
        config = mb.BertGenerationConfig.from_pretrained(tmp_path)
    assert config.hidden_size == 8
    assert "model of type gpt2 to instantiate a model of type bert-generation" in caplog.text
    caplog.clear()
    mb.BertGenerationEncoder(mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2, **TINY)).save_pretrained(
        tmp_path / "model")
    data = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**data, "model_type": "gpt2"}))
    with caplog.at_level("WARNING", logger="minibertgen.config"):
        mb.BertGenerationEncoder.from_pretrained(tmp_path / "model")  # loading a model says it too
    assert "model of type gpt2" in caplog.text


def test_to_json_file_from_json_file_and_the_saved_file_equal_transformers(tmp_path):
    transformers = transformers_or_skip()
    kwargs = dict(hidden_size=8, num_attention_heads=2, bos_token_id=5, is_decoder=True, num_labels=3,
                  max_length=7, my_field=[1, 2])
    ours, theirs = mb.BertGenerationConfig(**kwargs), transformers.BertGenerationConfig(**kwargs)
    ours.to_json_file(tmp_path / "ours.json")
    theirs.to_json_file(tmp_path / "theirs.json")
    assert json.loads((tmp_path / "ours.json").read_text()) == json.loads((tmp_path / "theirs.json").read_text())
    ours.to_json_file(tmp_path / "full.json", use_diff=False)
    assert set(json.loads((tmp_path / "full.json").read_text())) >= set(theirs.to_dict()) - {"_name_or_path"}
    again = mb.BertGenerationConfig.from_json_file(tmp_path / "theirs.json")
    assert again == ours and again.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    with pytest.warns(UserWarning, match="non-default generation parameters.*max_length"):  # as transformers
        ours.save_pretrained(tmp_path / "a")
    with pytest.warns(UserWarning, match="max_length"):
        theirs.save_pretrained(tmp_path / "b")
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == \
        json.loads((tmp_path / "b" / "config.json").read_text())


def test_encoder_decoder_config_saves_as_transformers_saves(tmp_path):
    transformers = transformers_or_skip()

    def build(lib):
        half = dict(hidden_size=8, num_attention_heads=2, vocab_size=40)
        return lib.EncoderDecoderConfig.from_encoder_decoder_configs(
            lib.BertGenerationConfig(**half), lib.BertGenerationConfig(**half, bos_token_id=7),
            decoder_start_token_id=2, pad_token_id=0)

    build(mb).save_pretrained(tmp_path / "a")
    build(transformers).save_pretrained(tmp_path / "b")
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == \
        json.loads((tmp_path / "b" / "config.json").read_text())


def test_labels_as_pretrained_config():
    transformers = transformers_or_skip()
    for kwargs in ({}, {"num_labels": 4}, {"id2label": {"0": "NEG", "1": "POS"}},
                   {"id2label": {0: "A"}, "label2id": {"A": 0}}):
        ours, theirs = mb.BertGenerationConfig(**kwargs), transformers.BertGenerationConfig(**kwargs)
        assert (ours.num_labels, ours.id2label, ours.label2id) == (theirs.num_labels, theirs.id2label,
                                                                  theirs.label2id), kwargs
    config = mb.BertGenerationConfig()
    config.num_labels = 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and "num_labels" not in config.to_dict()
    with pytest.raises(ValueError, match="num_labels=3 and id2label"):
        mb.BertGenerationConfig.from_dict({}, num_labels=3, id2label={0: "A"})
    with pytest.raises(ValueError, match="id2label=.*expected a dict"):
        mb.BertGenerationConfig(id2label=["A"])


def test_generation_defaults_and_other_fields_of_pretrained_config():
    transformers = transformers_or_skip()
    theirs = transformers.BertGenerationConfig()
    ours = mb.BertGenerationConfig()
    defaults = transformers.PretrainedConfig._get_global_generation_defaults()
    assert {k: getattr(ours, k) for k in defaults} == {k: getattr(theirs, k) for k in defaults}
    for key in ("torchscript", "pruned_heads", "chunk_size_feed_forward", "finetuning_task", "problem_type",
                "tokenizer_class", "prefix", "task_specific_params", "tf_legacy_loss", "use_bfloat16"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert mb.BertGenerationConfig(max_length=64).max_length == 64
    with pytest.raises(ValueError, match="problem_type='ranking'"):
        mb.BertGenerationConfig(problem_type="ranking")


def test_get_text_config():
    transformers = transformers_or_skip()
    half = dict(hidden_size=8, num_attention_heads=2)
    ours = mb.EncoderDecoderConfig.from_encoder_decoder_configs(mb.BertGenerationConfig(**half),
                                                                 mb.BertGenerationConfig(**half))
    theirs = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertGenerationConfig(**half), transformers.BertGenerationConfig(**half))
    assert ours.get_text_config() is ours.decoder and theirs.get_text_config() is theirs.decoder
    assert ours.get_text_config(decoder=True) is ours.decoder
    single = mb.BertGenerationConfig(**half)
    assert single.get_text_config() is single and single.get_text_config(encoder=True) is single


def test_from_pretrained_subfolder(tmp_path):
    mb.BertGenerationConfig(hidden_size=8, num_attention_heads=2).save_pretrained(tmp_path / "sub")
    assert mb.BertGenerationConfig.from_pretrained(tmp_path, subfolder="sub").hidden_size == 8
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mb.BertGenerationConfig.from_pretrained(tmp_path, subfolder="absent")


@pytest.mark.parametrize("value", [None, 4])
def test_config_save_warns_about_generation_parameters_as_transformers(tmp_path, value):
    """One rule (pretrained_config.non_default_generation_parameters) for generation settings held
    by a model config: None delegates to the generation config and is not reported, as transformers."""
    import warnings

    from conftest import require_module

    T = require_module("transformers")

    def generation_warnings(config, directory):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config.save_pretrained(directory)
        return [w for w in caught if "generation parameters" in str(w.message)]

    ours, theirs = mb.BertGenerationConfig(), T.BertGenerationConfig()
    ours.num_beams = theirs.num_beams = value
    expected = bool(generation_warnings(theirs, tmp_path / "theirs"))
    assert expected == (value is not None)
    assert bool(generation_warnings(ours, tmp_path / "ours")) == expected
