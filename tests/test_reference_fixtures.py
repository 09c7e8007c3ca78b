"""minibertgen against outputs transformers 4.57 recorded (tests/fixtures/make_reference.py).

NumPy only: these run without torch.  Tolerance: float32 max |diff| <= 1e-4 (DESIGN.md).
"""
import warnings

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES, assert_loss_close

REF = FIXTURES / "reference"
TOL = 1e-4


def load_io(case):
    data = np.load(REF / case / "io.npz")
    inputs = {k[3:]: data[k] for k in data.files if k.startswith("in.")}
    outputs = {k[4:]: data[k] for k in data.files if k.startswith("out.")}
    return inputs, outputs


def stacked(outputs, name):
    items = sorted((k for k in outputs if k.startswith(name + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return [outputs[k] for k in items]


def assert_close(actual, expected, tol=TOL, what=""):
    actual = np.asarray(actual, dtype=np.float32)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = float(np.abs(actual - expected).max())
    assert diff <= tol, f"{what}: max |diff| {diff:.3g} > {tol}"


def compare_all(out, expected, names, tol=TOL):
    for name in names:
        if name == "loss" and name in expected:
            assert_loss_close(out[name], expected[name])  # 1e-5 relative, DESIGN.md's loss policy
        elif name in expected:
            assert_close(out[name], expected[name], tol, name)
        refs = stacked(expected, name)
        if refs:
            assert len(out[name]) == len(refs), name
            for i, ref in enumerate(refs):
                assert_close(out[name][i], ref, tol, f"{name}[{i}]")


ENCODER_CASES = ["encoder", "encoder_bin", "encoder_head_mask"] + [
    p.name for p in sorted(REF.glob("act_*"))]


@pytest.mark.parametrize("case", ENCODER_CASES)
def test_encoder_matches_transformers(case):
    inputs, expected = load_io(case)
    model = mb.BertGenerationEncoder.from_pretrained(REF / case)
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    compare_all(out, expected, ["last_hidden_state", "hidden_states", "attentions"])


def test_activation_cases_cover_every_supported_activation():
    from minibertgen.config import ACTIVATIONS

    assert sorted(p.name[4:] for p in REF.glob("act_*")) == sorted(ACTIVATIONS)


def test_float16_checkpoint_keeps_its_dtype_with_auto():
    inputs, expected = load_io("encoder_float16")
    model = mb.BertGenerationEncoder.from_pretrained(REF / "encoder_float16", dtype="auto")
    assert model.dtype == np.float16
    out = model(**inputs)
    assert out.last_hidden_state.dtype == np.float16
    # torch computes float16 matmuls with float32 accumulation; NumPy's float16 matmul
    # rounds differently, so the two agree to float16 precision (eps 1e-3) times the size
    # of hidden states after LayerNorm (~3), within DESIGN.md's 2e-2 float16 bound.
    assert_close(out.last_hidden_state, expected["last_hidden_state"], 2e-2, "float16 last_hidden_state")


def test_float16_checkpoint_loads_as_float32_by_default():
    model = mb.BertGenerationEncoder.from_pretrained(REF / "encoder_float16")
    assert model.dtype == np.float32


def test_bfloat16_checkpoint_is_computed_in_float32():
    inputs, expected = load_io("encoder_bfloat16")
    model = mb.BertGenerationEncoder.from_pretrained(REF / "encoder_bfloat16", dtype="auto")
    assert model.dtype == np.float32  # NumPy has no bfloat16: exact upcast, documented in README
    compare_all(model(**inputs, output_attentions=True, output_hidden_states=True), expected,
                ["last_hidden_state", "hidden_states", "attentions"])


@pytest.mark.parametrize("case", ["decoder_cross", "decoder_lm"])
def test_decoder_matches_transformers(case):
    inputs, expected = load_io(case)
    model = mb.BertGenerationDecoder.from_pretrained(REF / case)
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    compare_all(out, expected, ["logits", "loss", "hidden_states", "attentions", "cross_attentions"])


@pytest.mark.parametrize("case", ["bert2bert", "shared", "relative_key", "relative_key_query", "projection"])
def test_encoder_decoder_matches_transformers(case):
    inputs, expected = load_io(case)
    model = mb.EncoderDecoderModel.from_pretrained(REF / case)
    # recorded with use_cache=False (make_reference.py): with a cache, transformers measures a
    # relative_key(_query) decoder's distances from the last key (test_relative_distances_live.py)
    out = model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
    compare_all(out, expected, ["logits", "loss", "encoder_last_hidden_state", "decoder_hidden_states",
                                "decoder_attentions", "cross_attentions", "encoder_hidden_states",
                                "encoder_attentions"])
    # labels alone: decoder inputs are the labels shifted right with decoder_start_token_id
    shifted = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    labels=inputs["labels"], use_cache=False)
    assert_close(shifted.logits, expected["shifted_logits"], what="shifted logits")
    assert_loss_close(shifted.loss, expected["shifted_loss"], what="shifted loss")


def test_shared_model_ties_decoder_to_encoder():
    model = mb.EncoderDecoderModel.from_pretrained(REF / "shared")
    enc_layer = model.encoder.params["encoder"]["layer"][0]
    dec_layer = model.decoder.params["bert"]["encoder"]["layer"][0]
    assert dec_layer["attention"]["self"]["query"]["weight"] is enc_layer["attention"]["self"]["query"]["weight"]
    assert "crossattention" in dec_layer and "crossattention" not in enc_layer


def test_bert_checkpoint_warm_starts_encoder_and_decoder():
    inputs, expected = load_io("bert_plain")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = mb.BertGenerationEncoder.from_pretrained(REF / "bert_plain", bos_token_id=101, eos_token_id=102)
    message = " ".join(str(w.message) for w in caught)
    assert "token_type_embeddings" in message and "pooler" in message  # unused weights are reported
    assert encoder.config.bos_token_id == 101 and encoder.config.eos_token_id == 102
    assert_close(encoder(**inputs).last_hidden_state, expected["last_hidden_state"], what="warm-started encoder")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder = mb.BertGenerationDecoder.from_pretrained(REF / "bert_plain", is_decoder=True)
    assert "lm_head.bias" in " ".join(str(w.message) for w in caught)  # new, zero-initialised
    assert decoder.params["lm_head"]["decoder"]["weight"] is decoder.params["bert"]["embeddings"][
        "word_embeddings"]["weight"]
    assert_close(decoder(**inputs, use_cache=False).logits, expected["logits"], what="warm-started decoder")
