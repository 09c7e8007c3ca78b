"""BERT-family halves against recorded transformers 4.57 outputs (tests/fixtures/make_bert_family.py),
and what is refused at load.  NumPy only: no torch, no transformers."""
import json
import shutil

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES, assert_loss_close

CASES = FIXTURES / "bert_family"
TOL = 1e-4
FAMILIES = {"bg": "bert-generation", "bert": "bert", "roberta": "roberta"}
PAIRINGS = [f"{e}2{d}" for e in FAMILIES for d in FAMILIES] + ["bert2bert_tied", "roberta2roberta_tied"]
CLASSES = {"bert-generation": ("BertGenerationEncoder", "BertGenerationDecoder"),
           "bert": ("BertModel", "BertLMHeadModel"),
           "roberta": ("RobertaModel", "RobertaForCausalLM")}


def load_io(case):
    with np.load(CASES / case / "io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module", params=PAIRINGS)
def pairing(request):
    return request.param, mb.EncoderDecoderModel.from_pretrained(CASES / request.param), load_io(request.param)


def test_each_half_is_built_from_its_model_type(pairing):
    case, model, _ = pairing
    enc, dec = case.split("_")[0].split("2")
    assert type(model.encoder).__name__ == CLASSES[FAMILIES[enc]][0]
    assert type(model.decoder).__name__ == CLASSES[FAMILIES[dec]][1]


def test_pairing_logits_and_loss(pairing):
    _, model, io = pairing
    inputs = {k[3:]: v for k, v in io.items() if k.startswith("in.") and k != "in.token_type_ids"}
    out = model(**inputs)
    assert np.abs(out.logits - io["out.logits"]).max() <= TOL
    assert_loss_close(out.loss, io["out.loss"])
    assert np.abs(out.encoder_last_hidden_state - io["out.encoder_last_hidden_state"]).max() <= TOL


def test_pairing_with_token_type_ids(pairing):
    case, model, io = pairing
    if "in.token_type_ids" not in io:
        pytest.skip("BertGeneration encoders have no token types")
    inputs = {k[3:]: v for k, v in io.items() if k.startswith("in.")}
    out = model(**inputs)
    assert np.abs(out.logits - io["out.typed_logits"]).max() <= TOL
    assert_loss_close(out.loss, io["out.typed_loss"])
    if case.startswith("bert2"):  # random 0/1 types: they change the result, and are honoured
        assert np.abs(io["out.typed_logits"] - io["out.logits"]).max() > 1e-3


@pytest.mark.parametrize("num_beams, key", [(1, "out.greedy"), (3, "out.beam")])
def test_pairing_generation_ids(pairing, num_beams, key):
    _, model, io = pairing
    ids = model.generate(io["in.input_ids"], attention_mask=io["in.attention_mask"], max_new_tokens=6,
                         num_beams=num_beams)
    np.testing.assert_array_equal(np.asarray(ids), io[key])


def test_tied_pairings_share_the_decoders_arrays():
    for case in ("bert2bert_tied", "roberta2roberta_tied"):
        model = mb.EncoderDecoderModel.from_pretrained(CASES / case)
        enc, dec = model.encoder.params, model.decoder.params["bert"]
        enc_dense, dec_dense = (part["encoder"]["layer"][1]["output"]["dense"] for part in (enc, dec))
        assert enc_dense["weight"] is dec_dense["weight"]
        assert enc["embeddings"]["word_embeddings"]["weight"] is model.decoder.params["lm_head"]["decoder"]["weight"]
        assert "pooler" in enc  # the encoder's own: the decoder body has none


def test_bert_model_alone_with_pooler():
    io = load_io("bert_model")
    model = mb.BertModel.from_pretrained(CASES / "bert_model")
    out = model(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"])
    assert np.abs(out.last_hidden_state - io["out.last_hidden_state"]).max() <= TOL
    assert np.abs(out.pooler_output - io["out.pooler_output"]).max() <= TOL
    typed = model(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"],
                  token_type_ids=io["in.token_type_ids"])
    assert np.abs(typed.last_hidden_state - io["out.typed_last_hidden_state"]).max() <= TOL
    assert np.abs(typed.pooler_output - io["out.typed_pooler_output"]).max() <= TOL


def test_roberta_positions_from_inputs_embeds():
    io = load_io("roberta_embeds")
    model = mb.RobertaModel.from_pretrained(CASES / "roberta_embeds")
    out = model(inputs_embeds=io["in.inputs_embeds"])
    assert np.abs(out.last_hidden_state - io["out.last_hidden_state"]).max() <= TOL
    assert np.abs(out.pooler_output - io["out.pooler_output"]).max() <= TOL


@pytest.mark.parametrize("case, cls", [("bert_lm", "BertLMHeadModel"), ("roberta_lm", "RobertaForCausalLM")])
def test_causal_lm_alone(case, cls):
    io = load_io(case)
    model = getattr(mb, cls).from_pretrained(CASES / case)
    out = model(input_ids=io["in.input_ids"], attention_mask=io["in.attention_mask"], labels=io["in.labels"])
    assert np.abs(out.logits - io["out.logits"]).max() <= TOL
    assert_loss_close(out.loss, io["out.loss"])


def test_save_writes_each_half_with_its_own_names(tmp_path):
    model = mb.EncoderDecoderModel.from_pretrained(CASES / "roberta2bert")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["encoder"]["model_type"], config["decoder"]["model_type"]) == ("roberta", "bert")
    assert config["encoder"]["architectures"] == ["RobertaModel"]
    assert config["decoder"]["architectures"] == ["BertLMHeadModel"]
    from minibertgen.checkpoint.files import load_state_dict

    ours = set(load_state_dict(tmp_path))
    theirs = set(load_state_dict(CASES / "roberta2bert"))
    assert ours == theirs  # the same names transformers wrote (tied head written once)
    again = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    io = load_io("roberta2bert")
    out = again(**{k[3:]: v for k, v in io.items() if k.startswith("in.") and k != "in.token_type_ids"})
    assert np.abs(out.logits - io["out.logits"]).max() <= TOL


# -- refused at load, naming what ---------------------------------------------------------------

def _edited_copy(tmp_path, case, edit):
    target = tmp_path / case
    shutil.copytree(CASES / case, target)
    config = json.loads((target / "config.json").read_text())
    edit(config)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["decoder"].update(model_type="gpt2"), r"decoder.model_type='gpt2'.*bert-generation, bert, roberta"),
    (lambda c: c["encoder"].update(model_type="bart"), r"encoder.model_type='bart'"),
    (lambda c: c["encoder"].update(pruned_heads={"0": [1]}), r"pruned_heads=\{'0': \[1\]\} is not supported"),
    (lambda c: c["decoder"].update(position_embedding_type="rotary"), r"position_embedding_type='rotary'"),
    (lambda c: c["encoder"].update(pad_token_id=None), r"pad_token_id=None: RoBERTa counts positions"),
    (lambda c: c["encoder"].update(type_vocab_size=0), r"type_vocab_size=0: expected a positive integer"),
    (lambda c: c["encoder"].update(num_hidden_layers=1),
     r"tie_encoder_decoder=True with encoder.num_hidden_layers=1 < decoder.num_hidden_layers=2"),
    (lambda c: c["decoder"].update(cross_attention_hidden_size=8), r"cross_attention_hidden_size=8 must equal"),
])
def test_refused_configs_name_the_field(tmp_path, edit, message):
    target = _edited_copy(tmp_path, "roberta2roberta_tied", edit)
    with pytest.raises((ValueError, TypeError), match=message):
        mb.EncoderDecoderModel.from_pretrained(target)


def test_half_class_refuses_another_familys_config():
    with pytest.raises(TypeError, match="BertModel expects a BertConfig, got RobertaConfig"):
        mb.BertModel(mb.RobertaConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=8))


def test_roberta_positions_past_the_table_are_an_error():
    config = mb.RobertaConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=8, max_position_embeddings=10)
    model = mb.RobertaModel(config, seed=0)
    model(input_ids=np.full((1, 8), 5))  # positions 2 .. 9
    message = r"sequence length 9 .* exceeds max_position_embeddings=10 .*pad_token_id \+ 1 = 2"
    with pytest.raises(ValueError, match=message):
        model(input_ids=np.full((1, 9), 5))


def test_token_type_ids_are_checked():
    model = mb.BertModel.from_pretrained(CASES / "bert_model")
    ids = np.ones((1, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"token_type_ids contains id 2: expected ids in \[0, 2\)"):
        model(input_ids=ids, token_type_ids=ids * 2)
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(1, 3\): expected \(1, 4\)"):
        model(input_ids=ids, token_type_ids=ids[:, :3] * 0)


def test_generate_checks_token_type_ids_and_refuses_what_it_cannot_use():
    lm = mb.BertLMHeadModel.from_pretrained(CASES / "bert_lm")
    prompt = np.full((2, 3), 5, dtype=np.int64)
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(2, 2\): expected \(2, 3\)"):
        lm.generate(prompt, token_type_ids=np.zeros((2, 2), dtype=np.int64), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"token_type_ids contains id 9"):
        lm.generate(prompt, token_type_ids=np.full((2, 3), 9), max_new_tokens=2)
    with pytest.raises(NotImplementedError, match="token_type_ids with assisted generation"):
        lm.generate(prompt, token_type_ids=np.zeros((2, 3), dtype=np.int64), prompt_lookup_num_tokens=2,
                    max_new_tokens=2)
    embeds = np.zeros((2, 3, lm.config.hidden_size), dtype=np.float32)
    with pytest.raises(NotImplementedError, match="token_type_ids with inputs_embeds"):
        lm.generate(inputs_embeds=embeds, token_type_ids=np.zeros((2, 3), dtype=np.int64), max_new_tokens=2)
    seq2seq = mb.EncoderDecoderModel.from_pretrained(CASES / "bg2bert")  # a BertGeneration encoder
    with pytest.raises(ValueError, match=r"token_type_ids: this encoder \(BertGenerationEncoder"):
        seq2seq.generate(prompt, token_type_ids=np.zeros((2, 3), dtype=np.int64), max_new_tokens=2)
    decoder = mb.BertGenerationDecoder.from_pretrained(FIXTURES / "generation" / "random_decoder")
    with pytest.raises(ValueError, match=r"token_type_ids: this model \(BertGenerationDecoder"):
        decoder.generate(prompt, token_type_ids=np.zeros((2, 3), dtype=np.int64), max_new_tokens=2)


TINY = dict(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)


@pytest.mark.parametrize("overrides, message", [
    (dict(max_position_embeddings=2), r"RobertaModel: max_position_embeddings=2 leaves no position after "
                                      r"pad_token_id \+ 1 = 2"),
    (dict(pad_token_id=20), r"RobertaModel: pad_token_id=20: RoBERTa counts positions from pad_token_id \+ 1, "
                            r"so it needs a token id in \[0, 20\)"),
])
def test_roberta_position_table_refusals(overrides, message):
    with pytest.raises(ValueError, match=message):
        mb.RobertaModel(mb.RobertaConfig(**{**TINY, **overrides}), seed=0)


def test_joining_halves_that_cannot_be_joined_is_refused():
    encoder = mb.BertModel(mb.BertConfig(**TINY), seed=0)
    with pytest.raises(ValueError, match=r"the decoder \(BertModel\) has no LM head: use BertLMHeadModel"):
        mb.EncoderDecoderModel(encoder=encoder, decoder=mb.BertModel(mb.BertConfig(**TINY), seed=1))
    plain = mb.RobertaForCausalLM(mb.RobertaConfig(**TINY, is_decoder=True), seed=2)
    with pytest.raises(ValueError, match=r"the decoder has no cross-attention layers: load it with "
                                         r"is_decoder=True, add_cross_attention=True"):
        mb.EncoderDecoderModel(encoder=encoder, decoder=plain)


def test_attention_implementations_we_do_not_have_are_refused():
    with pytest.raises(ValueError, match=r"attn_implementation='flash_attention_2': expected one of 'eager', "
                                         r"'sdpa'"):
        mb.BertModel.from_pretrained(CASES / "bert_model", attn_implementation="flash_attention_2")
