"""Saving and reloading quantized models in bitsandbytes' serialized layout.

The reference checkpoints in tests/fixtures/quantization/bnb_* were written by
transformers 4.57 + bitsandbytes 0.50.2 on the CPU (make_bnb_reference.py), together with
the logits and greedy ids transformers computed with them.  Numbers measured when this
was written are in the comments next to each threshold.
"""
import json
import warnings

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES, require_module
from minibertgen.checkpoint.safetensors_io import read_safetensors, write_safetensors
from minibertgen.quantization import (BitsAndBytesConfig, QuantizedWeight4bit, QuantizedWeight8bit,
                                      quantize_rows_int8, quantized_weights)
from minibertgen.quantization.serialization import QuantizedCheckpointError, load_prequantized

TOY = FIXTURES / "generation" / "toy_bert2bert"
BNB = FIXTURES / "quantization"
SETTINGS = {
    "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
    "nf4_dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
    "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
    "fp4_fp16": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype="float16"),
    "int8": dict(load_in_8bit=True),
}
QUERY = "encoder.encoder.layer.0.attention.self.query.weight"
LINEAR_LAYERS = 2 * 6 + 2 * 10  # toy encoder: 2 layers x 6 linears; decoder: 2 x (6 + 4 cross-attention)


def reference(name):
    return read_safetensors(BNB / name / "reference.safetensors")


def forward(model, ref):
    return model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                 decoder_input_ids=ref["decoder_input_ids"]).logits


def greedy(model, ref):
    return model.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=10)


def cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def quantized(settings, path=TOY):
    return mb.EncoderDecoderModel.from_pretrained(path, quantization_config=BitsAndBytesConfig(**settings))


# -- checkpoints written by transformers + bitsandbytes ----------------------------------------
@pytest.mark.parametrize("name", ["bnb_nf4_dq", "bnb_fp4"])
def test_bitsandbytes_4bit_checkpoint_loads_quantized_with_transformers_logits(name):
    model = mb.EncoderDecoderModel.from_pretrained(BNB / name)  # no quantization_config argument
    found = quantized_weights(model.params)
    assert len(found) == LINEAR_LAYERS and all(isinstance(w, QuantizedWeight4bit) for w in found.values())
    state = read_safetensors(BNB / name / "model.safetensors")
    np.testing.assert_array_equal(found[QUERY].q.packed, state[QUERY].reshape(-1))  # the file's codes, as stored
    ref = reference(name)
    # measured max |diff| 4.9e-6 (nf4 + double quant) and 3.6e-6 (fp4): the same dequantized
    # weights, float32 matmuls summed in another order
    np.testing.assert_allclose(forward(model, ref), ref["logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(greedy(model, ref), ref["greedy"])
    assert model.config.quantization_config["load_in_4bit"] is True


def test_bitsandbytes_int8_checkpoint_loads_quantized():
    model = mb.EncoderDecoderModel.from_pretrained(BNB / "bnb_int8")
    found = quantized_weights(model.params)
    assert len(found) == LINEAR_LAYERS and all(isinstance(w, QuantizedWeight8bit) for w in found.values())
    state = read_safetensors(BNB / "bnb_int8" / "model.safetensors")
    np.testing.assert_array_equal(found[QUERY].q.codes, state[QUERY])
    np.testing.assert_array_equal(found[QUERY].q.row_absmax, state[QUERY[:-len("weight")] + "SCB"])
    ref = reference("bnb_int8")
    # bitsandbytes rounds the activations to float16 before quantizing them (and multiplies
    # the outlier features in float16); minibertgen keeps them in float32.  Measured: cosine
    # of the logits >= 0.99980 per position, max |diff| 0.107 on logits up to 9.2, same ids.
    assert cosine(forward(model, ref), ref["logits"]).min() > 0.9995
    np.testing.assert_array_equal(greedy(model, ref), ref["greedy"])


def test_our_4bit_files_hold_what_bitsandbytes_writes():
    """Quantizing the float toy model ourselves gives bitsandbytes' file, tensor for tensor."""
    ours = flat_file(quantized(SETTINGS["fp4"]))
    theirs = read_safetensors(BNB / "bnb_fp4" / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, array in theirs.items():
        assert ours[name].dtype == array.dtype and ours[name].shape == array.shape, name
        np.testing.assert_array_equal(ours[name], array, err_msg=name)  # codes, absmax, quant_map, JSON bytes


def test_our_double_quant_files_match_bitsandbytes_up_to_the_mean():
    """Double quantization subtracts the mean of the absmax values (nested_offset).  Its float32
    rounding depends on the summation order (torch's differs from NumPy's in the last bit for 14
    of the 32 weights here), which can move a quantized scale by one level (4 of 32 weights)."""
    ours = flat_file(quantized(SETTINGS["nf4_dq"]))
    theirs = read_safetensors(BNB / "bnb_nf4_dq" / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, array in theirs.items():
        assert ours[name].dtype == array.dtype, name
        if name.endswith(".weight") or name.endswith("quant_map"):
            np.testing.assert_array_equal(ours[name], array, err_msg=name)  # 4-bit codes and code books
        elif name.endswith(".absmax"):  # 8-bit codes of absmax - offset
            assert ours[name].shape == array.shape and np.abs(ours[name].astype(int) - array.astype(int)).max() <= 1, name
        elif name.endswith("nested_absmax"):
            np.testing.assert_allclose(ours[name], array, rtol=1e-6, err_msg=name)
        elif "quant_state" in name:
            mine, bnb = json.loads(bytes(ours[name])), json.loads(bytes(array))
            assert mine.pop("nested_offset") == pytest.approx(bnb.pop("nested_offset"), rel=2.5e-7)  # 2 ulp
            assert mine == bnb


def test_int8_files_match_bitsandbytes_from_float16_weights():
    """bitsandbytes quantizes a float16 copy of the weight: same SCB, codes within one step."""
    floats = read_safetensors(TOY / "model.safetensors")
    theirs = read_safetensors(BNB / "bnb_int8" / "model.safetensors")
    ours = flat_file(quantized(SETTINGS["int8"]))
    assert set(ours) == set(theirs)
    changed = total = 0
    for name in [n for n in theirs if n.endswith(".SCB")]:
        weight = name[:-len("SCB")] + "weight"
        q = quantize_rows_int8(floats[weight].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(q.row_absmax, theirs[name])
        assert np.abs(q.codes.astype(int) - theirs[weight]).max() <= 1  # bitsandbytes rounds in float16
        changed, total = changed + int((q.codes != theirs[weight]).sum()), total + q.codes.size
        assert theirs[name[:-len("SCB")] + "weight_format"].shape == () and ours[weight].dtype == np.int8
    assert changed / total < 1e-3  # measured 23 of 163840


def flat_file(model):
    """What model.save_pretrained writes to model.safetensors, read back as arrays."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        return {k: np.array(v) for k, v in read_safetensors(f"{directory}/model.safetensors").items()}


# -- our own round trip --------------------------------------------------------------------------
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_save_and_reload_is_exact_and_packed(tmp_path, setting):
    model = quantized(SETTINGS[setting])
    ref = reference("bnb_fp4")  # just the inputs
    before = forward(model, ref)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"] == BitsAndBytesConfig(**SETTINGS[setting]).to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing, nothing unused, no config clash
        again = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(forward(again, ref), before)
    np.testing.assert_array_equal(greedy(again, ref), greedy(model, ref))

    state = read_safetensors(tmp_path / "model.safetensors")
    held = quantized_weights(model.params)
    for name, weight in held.items():
        prefix = name[:-len("weight")]
        parts = [state[name]] + [state[k] for k in state if k.startswith(name + ".") and k.endswith("absmax")]
        parts += [state[prefix + "SCB"]] if prefix + "SCB" in state else []
        offset = 4 if weight.is_quantized and getattr(weight.q, "absmax_q", None) is not None else 0
        assert sum(p.nbytes for p in parts) + offset == weight.nbytes, name  # the bytes held, as written
        assert state[name].dtype == (np.int8 if setting == "int8" else np.uint8)  # no float copy
    float_file = (TOY / "model.safetensors").stat().st_size
    assert (tmp_path / "model.safetensors").stat().st_size < 0.45 * float_file  # measured 0.25x (nf4) to 0.35x (int8)
    again.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_decoder_alone_round_trip_and_compute_dtype_kept(tmp_path):
    source = FIXTURES / "reference" / "decoder_lm"
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype="float16")
    decoder = mb.BertGenerationDecoder.from_pretrained(source, quantization_config=config)
    decoder.save_pretrained(tmp_path)
    again = mb.BertGenerationDecoder.from_pretrained(tmp_path)
    ids = np.array([[3, 4, 5, 6]])
    np.testing.assert_array_equal(again(input_ids=ids).logits, decoder(input_ids=ids).logits)
    assert all(w.dtype == np.float16 for w in quantized_weights(again.params).values())
    assert "lm_head.decoder.weight" in read_safetensors(tmp_path / "model.safetensors") or \
        decoder.config.tie_word_embeddings


def test_a_different_quantization_config_for_a_quantized_checkpoint_warns(tmp_path):
    quantized(SETTINGS["nf4"]).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="already quantized: the quantization_config from its config.json"):
        model = mb.EncoderDecoderModel.from_pretrained(tmp_path, quantization_config=BitsAndBytesConfig(
            load_in_8bit=True))
    assert all(w.q.quant_type == "nf4" for w in quantized_weights(model.params).values())


def test_parts_quantized_alike_save_under_one_config(tmp_path):
    encoder_dir, decoder_dir = FIXTURES / "reference" / "encoder", FIXTURES / "reference" / "decoder_cross"
    config = BitsAndBytesConfig(**SETTINGS["int8"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(
            encoder_dir, decoder_dir, encoder_quantization_config=config, decoder_quantization_config=config,
            decoder_seed=0)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"] == config.to_dict()
    again = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    inputs = dict(input_ids=np.array([[5, 6, 7]]), decoder_input_ids=np.array([[1, 2]]))
    np.testing.assert_array_equal(again(**inputs).logits, model(**inputs).logits)


def test_moving_a_quantized_model_keeps_its_outputs():
    model = quantized(SETTINGS["nf4_dq"])
    ref = reference("bnb_fp4")
    before = forward(model, ref)
    model.to("cpu")
    assert isinstance(model.params["encoder"]["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"],
                      QuantizedWeight4bit)
    np.testing.assert_array_equal(forward(model, ref), before)


def test_saving_int8_with_fp16_weights_is_refused(tmp_path):
    model = quantized(dict(load_in_8bit=True, llm_int8_has_fp16_weight=True))
    with pytest.raises(ValueError, match="llm_int8_has_fp16_weight=True is not supported"):
        model.save_pretrained(tmp_path)


# -- damaged files: clear errors, never guesses -------------------------------------------------
def saved_state(setting):
    model = quantized(SETTINGS[setting])
    return flat_file(model), model.config.quantization_config


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.__setitem__(QUERY + ".quant_state.bitsandbytes__nf4", np.frombuffer(b"{not json", np.uint8)),
     "not UTF-8 JSON"),
    (lambda s: s.__setitem__(QUERY + ".quant_state.bitsandbytes__nf4",
                             np.frombuffer(b'{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", '
                                           b'"shape": [64, 64]}', np.uint8)), "tensor name says 'nf4'"),
    (lambda s: s.__setitem__(QUERY + ".quant_map", s[QUERY + ".quant_map"][::-1].copy()), "quant_map differs"),
    (lambda s: s.pop(QUERY + ".absmax"), "has no absmax tensor"),
    (lambda s: s.__setitem__(QUERY, s[QUERY][:-1]), "weight is uint8"),
    (lambda s: s.pop(QUERY), "has no weight tensor"),
    (lambda s: s.__setitem__("encoder.x.weight.absmax", np.zeros(4, np.float32)), "without a quantized weight"),
])
def test_damaged_4bit_state_is_refused(damage, message):
    state, config = saved_state("nf4")
    damage(state)
    with pytest.raises(QuantizedCheckpointError, match=message):
        load_prequantized(state, config)


def test_damaged_8bit_state_is_refused(tmp_path):
    state, config = saved_state("int8")
    prefix = QUERY[:-len("weight")]
    bad_format = dict(state, **{prefix + "weight_format": np.array(1, np.uint8)})
    with pytest.raises(QuantizedCheckpointError, match=r"weight_format=1, only 0 \('row'\)"):
        load_prequantized(bad_format, config)
    bad_scb = dict(state, **{prefix + "SCB": state[prefix + "SCB"][:-1]})
    with pytest.raises(QuantizedCheckpointError, match="SCB is float32"):
        load_prequantized(bad_scb, config)
    # through from_pretrained too: the error names the weight
    quantized(SETTINGS["int8"]).save_pretrained(tmp_path)
    write_safetensors(bad_format, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=QUERY.replace(".", r"\.")):
        mb.EncoderDecoderModel.from_pretrained(tmp_path)


# -- live: our files in transformers + bitsandbytes (skips where bitsandbytes is not installed) ----
@pytest.mark.parametrize("setting", ["nf4_dq", "fp4"])
def test_transformers_loads_our_4bit_files(tmp_path, setting):
    require_module("bitsandbytes")  # under MINIBERTGEN_REQUIRE_REFERENCE=1 (CI) a missing one fails
    require_module("accelerate")
    torch = require_module("torch")
    from transformers import EncoderDecoderModel

    model = quantized(SETTINGS[setting])
    model.save_pretrained(tmp_path)
    theirs = EncoderDecoderModel.from_pretrained(tmp_path, dtype=torch.float32, device_map="cpu")
    for module in theirs.modules():  # the float32 path, as in make_bnb_reference.py
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    ref = reference("bnb_fp4")
    with torch.no_grad():
        logits = theirs(input_ids=torch.tensor(ref["input_ids"]), attention_mask=torch.tensor(ref["attention_mask"]),
                        decoder_input_ids=torch.tensor(ref["decoder_input_ids"])).logits.numpy()
    np.testing.assert_allclose(forward(model, ref), logits, atol=1e-4, rtol=0)
