"""The model surface transformers' tests reach for, and the issue-20 bugs on loading:
tie direction, output_loading_info, return_dict=False, accessors, resizing, loading options.
Reference values are transformers' recorded fixtures (tests/fixtures/bert_family)."""
import json
import shutil

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES
from minibertgen.checkpoint.files import load_state_dict
from minibertgen.checkpoint.safetensors_io import write_safetensors

CASES = FIXTURES / "bert_family"
TOL = 1e-4


def load_io(case):
    with np.load(CASES / case / "io.npz") as data:
        return {k: data[k] for k in data.files}


def inputs_of(io):
    return {k[3:]: v for k, v in io.items() if k.startswith("in.") and k != "in.token_type_ids"}


# -- bug 2: tie_encoder_decoder takes the DECODER's weights --------------------------------------

def test_tied_encoder_uses_the_decoders_weights_when_the_file_holds_both(tmp_path):
    """A file with an (older, stale) encoder copy beside the decoder's: transformers ties the
    encoder to the decoder after loading, so the decoder's values are the model; so are ours."""
    target = tmp_path / "tied"
    shutil.copytree(CASES / "bert2bert_tied", target)
    state = {k: np.asarray(v) for k, v in load_state_dict(target).items()}
    for name in list(state):
        if name.startswith("decoder.bert.") and ".crossattention." not in name:
            state["encoder." + name[len("decoder.bert."):]] = np.full_like(state[name], 7.0)  # stale copy
    write_safetensors(state, target / "model.safetensors", metadata={"format": "pt"})
    model = mb.EncoderDecoderModel.from_pretrained(target)
    io = load_io("bert2bert_tied")
    assert np.abs(model(**inputs_of(io)).logits - io["out.logits"]).max() <= TOL


def test_tie_when_joining_instances_keeps_the_decoders_arrays():
    config = dict(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=8)
    encoder = mb.BertModel(mb.BertConfig(**config), seed=1)
    decoder = mb.BertLMHeadModel(mb.BertConfig(**config, is_decoder=True, add_cross_attention=True), seed=2)
    weight = decoder.params["bert"]["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"]
    joined = mb.EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config,
                                                                  tie_encoder_decoder=True)
    model = mb.EncoderDecoderModel(joined, encoder, decoder)
    assert model.encoder.params["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"] is weight


# -- bug 3: output_loading_info, and no loading option in the config ----------------------------

def test_output_loading_info_returns_model_and_info(tmp_path):
    model, info = mb.BertLMHeadModel.from_pretrained(CASES / "bert_model", is_decoder=True, output_loading_info=True)
    assert isinstance(model, mb.BertLMHeadModel)
    assert set(info) == {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    assert "cls.predictions.transform.dense.weight" in info["missing_keys"]  # a BertModel file has no head
    assert "pooler.dense.weight" in info["unexpected_keys"]
    assert not hasattr(model.config, "output_loading_info")
    model.save_pretrained(tmp_path)
    assert "output_loading_info" not in json.loads((tmp_path / "config.json").read_text())


def test_unknown_loading_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument.*not_an_option"):
        mb.BertModel.from_pretrained(CASES / "bert_model", not_an_option=1)


def test_from_pretrained_none_with_config_and_state_dict():
    config = mb.BertConfig.from_pretrained(CASES / "bert_model")
    state = load_state_dict(CASES / "bert_model")
    model = mb.BertModel.from_pretrained(None, config=config, state_dict=dict(state))
    io = load_io("bert_model")
    out = model(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"])
    assert np.abs(out.pooler_output - io["out.pooler_output"]).max() <= TOL
    with pytest.raises(ValueError, match=r"from_pretrained\(None, ...\) needs both config= and state_dict="):
        mb.BertModel.from_pretrained(None, config=config)


# -- bug 4: return_dict=False gives transformers' tuple -----------------------------------------

def test_return_dict_false_tuples_in_transformers_order():
    io = load_io("bert2roberta")
    model = mb.EncoderDecoderModel.from_pretrained(CASES / "bert2roberta")
    out = model(**inputs_of(io), return_dict=False)
    assert isinstance(out, tuple)
    # (loss, logits, past_key_values, encoder last_hidden_state, pooler_output): decoder outputs + encoder outputs
    assert len(out) == 5
    assert abs(float(out[0]) - float(io["out.loss"])) <= TOL
    assert np.abs(out[1] - io["out.logits"]).max() <= TOL
    assert isinstance(out[2], mb.EncoderDecoderCache)
    assert np.abs(out[3] - io["out.encoder_last_hidden_state"]).max() <= TOL
    assert out[4].shape == (3, 16)  # BertModel's pooler_output, as transformers' tuple holds it
    bert = mb.BertModel.from_pretrained(CASES / "bert_model")
    io = load_io("bert_model")
    hidden, pooled = bert(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"], return_dict=False)
    assert np.abs(pooled - io["out.pooler_output"]).max() <= TOL
    bert.config.return_dict = False  # the config's default, as transformers reads it
    assert isinstance(bert(input_ids=io["in.input_ids"]), tuple)


# -- the model surface ----------------------------------------------------------------------------

def test_embedding_accessors_and_class_attributes():
    model = mb.EncoderDecoderModel.from_pretrained(CASES / "roberta2bert")
    table = model.encoder.params["embeddings"]["word_embeddings"]["weight"]
    assert model.get_input_embeddings().weight is table
    assert model.get_input_embeddings().num_embeddings == 61 and model.get_input_embeddings().embedding_dim == 16
    assert model.get_output_embeddings().weight is model.decoder.params["lm_head"]["decoder"]["weight"]
    assert model.encoder.get_output_embeddings() is None
    assert model.can_generate() and model.decoder.can_generate() and not model.encoder.can_generate()
    assert model.main_input_name == "input_ids" and model.base_model_prefix == "encoder_decoder"
    assert model.encoder.base_model_prefix == "roberta" and model.decoder.base_model_prefix == "bert"
    base = model.decoder.base_model
    assert isinstance(base, mb.BertModel) and base.params is model.decoder.params["bert"]
    new = np.zeros_like(table)
    model.encoder.set_input_embeddings(new)
    assert model.encoder.get_input_embeddings().weight is new
    # any [rows, width] table is taken, as transformers takes any module (issue 33); not a 1-D one
    with pytest.raises(ValueError, match=r"expected a \[vocab, hidden\] matrix"):
        model.encoder.set_input_embeddings(np.zeros(5, np.float32))


def test_resize_token_embeddings_keeps_the_tie():
    model = mb.BertLMHeadModel.from_pretrained(CASES / "bert_lm")
    old = np.array(model.get_input_embeddings().weight)
    model.resize_token_embeddings(70)
    table = model.get_input_embeddings().weight
    assert table.shape == (70, 16) and model.config.vocab_size == 70
    assert model.get_output_embeddings().weight is table
    assert model.params["lm_head"]["bias"].shape == (70,)
    np.testing.assert_array_equal(table[:61], old)
    np.testing.assert_allclose(table[61:], np.broadcast_to(old.mean(axis=0), (9, 16)), rtol=1e-6)
    assert model(input_ids=np.array([[65, 3]])).logits.shape == (1, 2, 70)
    model.resize_token_embeddings(50, pad_to_multiple_of=16)
    assert model.config.vocab_size == 64
    with pytest.raises(NotImplementedError, match="model.encoder.resize_token_embeddings"):
        mb.EncoderDecoderModel.from_pretrained(CASES / "bg2bg").resize_token_embeddings(10)


def test_prepare_inputs_for_generation():
    model = mb.EncoderDecoderModel.from_pretrained(CASES / "bert2bert")
    io = load_io("bert2bert")
    out = model(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"],
                decoder_input_ids=io["in.decoder_input_ids"][:, :3])
    step = model.prepare_inputs_for_generation(io["in.decoder_input_ids"][:, :4], past_key_values=out.past_key_values,
                                               encoder_outputs={"last_hidden_state": out.encoder_last_hidden_state},
                                               attention_mask=io["in.attention_mask"])
    assert step["decoder_input_ids"].shape == (3, 1) and step["past_key_values"] is out.past_key_values
    nxt = model(**step)
    full = model(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"],
                 decoder_input_ids=io["in.decoder_input_ids"][:, :4])
    np.testing.assert_allclose(nxt.logits[:, -1], full.logits[:, -1], atol=1e-5)
    decoder = mb.RobertaForCausalLM.from_pretrained(CASES / "roberta_lm")
    inputs = decoder.prepare_inputs_for_generation(np.array([[0, 5, 6]]), attention_mask=np.array([[0, 1, 1]]))
    np.testing.assert_array_equal(inputs["position_ids"], [[1, 0, 1]])  # from the mask, as transformers


def test_save_pretrained_safe_serialization_false_is_refused(tmp_path):
    model = mb.BertModel.from_pretrained(CASES / "bert_model")
    with pytest.raises(ValueError, match="safe_serialization=False: minibertgen writes safetensors only"):
        model.save_pretrained(tmp_path, safe_serialization=False)
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()


def test_from_encoder_decoder_pretrained_takes_instances():
    encoder = mb.RobertaModel.from_pretrained(CASES / "roberta_embeds")
    decoder = mb.BertLMHeadModel.from_pretrained(CASES / "bert_lm", add_cross_attention=True, seed=0)
    model = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(encoder_model=encoder, decoder_model=decoder,
                                                                   pad_token_id=0)
    assert model.encoder is encoder and model.decoder is decoder
    assert model.config.pad_token_id == 0  # unprefixed keywords go to the EncoderDecoderConfig
    model.generation_config.decoder_start_token_id = 2
    assert model.generate(np.array([[5, 6, 7]]), max_new_tokens=3).shape == (1, 4)
    with pytest.raises(ValueError, match="the encoder .*BertLMHeadModel.* has an LM head"):
        mb.EncoderDecoderModel(encoder=decoder, decoder=decoder)


def test_warm_start_refuses_other_model_types(tmp_path):
    shutil.copytree(CASES / "bert_model", tmp_path / "gpt2")
    config = json.loads((tmp_path / "gpt2" / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type='gpt2' is not supported.*bert-generation, bert, roberta"):
        mb.EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "gpt2", CASES / "bert_lm")


def test_cache_layers_view():
    model = mb.EncoderDecoderModel.from_pretrained(CASES / "bg2roberta")
    io = load_io("bg2roberta")
    cache = model(**{k: v for k, v in inputs_of(io).items() if k != "labels"}).past_key_values
    legacy = cache.to_legacy_cache()
    assert len(cache.layers) == 2
    np.testing.assert_array_equal(cache.layers[1].keys, legacy[1][0])
    np.testing.assert_array_equal(cache.self_attention_cache.layers[0].values, legacy[0][1])
    np.testing.assert_array_equal(cache.cross_attention_cache.layers[0].keys, legacy[0][2])
    assert cache.layers[0].keys.shape == (3, 2, 5, 8)  # [batch, heads, tgt, head_dim]
    assert len(cache[1]) == 4


def test_from_pretrained_subfolder(tmp_path):
    shutil.copytree(CASES / "bert_model", tmp_path / "encoder")
    model = mb.BertModel.from_pretrained(tmp_path, subfolder="encoder")
    io = load_io("bert_model")
    out = model(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"])
    assert np.abs(out.last_hidden_state - io["out.last_hidden_state"]).max() <= TOL


def test_legacy_generation_rule_needs_an_unchanged_generation_config():
    """transformers rebuilds the generation config from model.config only when it was derived
    from the model config AND has not been changed since; a changed one is used as it is."""
    model = mb.EncoderDecoderModel.from_pretrained(CASES / "bert2bert")
    assert model.generation_config._from_model_config
    model.config.num_beams = 3  # a generation parameter set on the model config
    with pytest.warns(UserWarning, match=r"rebuilt from model.config"):
        assert model.generation_config.num_beams == 3
    other = mb.EncoderDecoderModel.from_pretrained(CASES / "bert2bert")
    other.generation_config.max_length = 12  # the user changed the generation config itself
    other.config.num_beams = 3
    assert other.generation_config.num_beams == 1 and other.generation_config.max_length == 12
