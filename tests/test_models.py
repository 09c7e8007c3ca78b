"""Model behaviour that needs no reference: bad input, caching, outputs, saving, init."""
import json
import warnings

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES
from minibertgen.checkpoint.errors import CheckpointError

SMALL = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
             max_position_embeddings=12)


@pytest.fixture(scope="module")
def encoder():
    return mb.BertGenerationEncoder(mb.BertGenerationConfig(**SMALL), seed=0)


@pytest.fixture(scope="module")
def decoder():
    return mb.BertGenerationDecoder(mb.BertGenerationConfig(**SMALL, is_decoder=True, add_cross_attention=True),
                                    seed=1)


IDS = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(input_ids=np.array([1, 2, 3])), ValueError, r"input_ids has shape \(3,\).*2 dimensions"),
    (dict(input_ids=IDS.astype(np.float32)), TypeError, "input_ids has dtype float32"),
    (dict(input_ids=IDS + 47), ValueError, r"input_ids contains id 55: expected ids in \[0, 50\)"),
    (dict(input_ids=-IDS), ValueError, "input_ids contains id -8"),
    (dict(input_ids=np.ones((1, 13), dtype=np.int64)), ValueError, "exceeds max_position_embeddings=12"),
    (dict(input_ids=IDS, inputs_embeds=np.zeros((2, 4, 16), np.float32)), ValueError, "got both"),
    (dict(), ValueError, "got neither"),
    (dict(input_ids=IDS, attention_mask=np.ones((2, 5))), ValueError, r"attention_mask has shape \(2, 5\)"),
    (dict(input_ids=IDS, head_mask=np.ones(3)), ValueError, r"head_mask has shape \(3,\)"),
    (dict(input_ids=IDS, encoder_hidden_states=np.zeros((2, 3, 16), np.float32)), ValueError,
     "no cross-attention"),
    (dict(input_ids=IDS, pixel_values=1), TypeError, "pixel_values"),
])
def test_bad_input_is_named(encoder, kwargs, error, message):
    with pytest.raises(error, match=message):
        encoder(**kwargs)


def test_decoder_bad_cross_inputs(decoder):
    with pytest.raises(ValueError, match=r"encoder_hidden_states has shape \(2, 3, 8\)"):
        decoder(IDS, encoder_hidden_states=np.zeros((2, 3, 8), np.float32))
    with pytest.raises(ValueError, match="encoder_hidden_states has batch 1"):
        decoder(IDS, encoder_hidden_states=np.zeros((1, 3, 16), np.float32))
    with pytest.raises(ValueError, match="encoder_attention_mask has shape"):
        decoder(IDS, encoder_hidden_states=np.zeros((2, 3, 16), np.float32), encoder_attention_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="labels contains id 99"):
        decoder(IDS, labels=IDS * 0 + 99, encoder_hidden_states=np.zeros((2, 3, 16), np.float32))


def test_inputs_embeds_equal_input_ids(encoder):
    table = encoder.params["embeddings"]["word_embeddings"]["weight"]
    a = encoder(input_ids=IDS).last_hidden_state
    b = encoder(inputs_embeds=table[IDS]).last_hidden_state
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_lists_and_token_type_ids_are_accepted(encoder):
    out = encoder(input_ids=IDS.tolist(), token_type_ids=np.zeros_like(IDS))
    assert out.last_hidden_state.shape == (2, 4, 16)
    assert out[0] is out.last_hidden_state and out["last_hidden_state"] is out.last_hidden_state


def test_padding_does_not_change_real_positions(encoder):
    short = encoder(input_ids=IDS[:1, :3]).last_hidden_state
    padded = encoder(input_ids=np.array([[1, 2, 3, 0]]), attention_mask=np.array([[1, 1, 1, 0]])).last_hidden_state
    np.testing.assert_allclose(padded[:, :3], short, atol=1e-5)


def test_cached_steps_equal_full_recompute(decoder):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (2, 9))
    states = rng.normal(size=(2, 4, 16)).astype(np.float32)
    mask = np.ones((2, 4))
    mask[1, 3] = 0
    full = decoder(ids, encoder_hidden_states=states, encoder_attention_mask=mask, use_cache=False).logits
    out = decoder(ids[:, :5], encoder_hidden_states=states, encoder_attention_mask=mask)
    cache, steps = out.past_key_values, [out.logits]
    for t in range(5, 9):
        out = decoder(ids[:, t:t + 1], encoder_hidden_states=states, encoder_attention_mask=mask,
                      past_key_values=cache)
        steps.append(out.logits)
    assert cache.get_seq_length() == 9
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_cache_past_too_long_is_an_error(decoder):
    states = np.zeros((2, 3, 16), np.float32)
    cache = decoder(np.ones((2, 10), np.int64), encoder_hidden_states=states).past_key_values
    with pytest.raises(ValueError, match=r"sequence length 13 \(past 10 \+ new 3\)"):
        decoder(np.ones((2, 3), np.int64), encoder_hidden_states=states, past_key_values=cache)


def test_random_init_follows_transformers():
    config = mb.BertGenerationConfig(vocab_size=400, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=128)
    model = mb.BertGenerationDecoder(config, seed=3)
    flat = model.state_dict()
    assert abs(float(flat["bert.encoder.layer.0.intermediate.dense.weight"].std()) - 0.02) < 0.001
    assert not flat["bert.embeddings.word_embeddings.weight"][0].any()  # padding row is zero
    np.testing.assert_array_equal(flat["bert.embeddings.LayerNorm.weight"], 1.0)
    assert not flat["lm_head.bias"].any() and not flat["bert.encoder.layer.0.output.dense.bias"].any()
    assert flat["lm_head.decoder.weight"] is flat["bert.embeddings.word_embeddings.weight"]


def test_save_and_reload_round_trip(decoder, tmp_path):
    decoder.save_pretrained(tmp_path)
    again = mb.BertGenerationDecoder.from_pretrained(tmp_path)
    states = np.ones((2, 3, 16), np.float32)
    np.testing.assert_array_equal(again(IDS, encoder_hidden_states=states).logits,
                                  decoder(IDS, encoder_hidden_states=states).logits)


def test_loaded_weights_are_memory_mapped(encoder, tmp_path, monkeypatch):
    """Weights the CPU layout leaves in place (layout.py; here, with no row counted as
    short, all of them) are views of the file, not copies."""
    import minibertgen.fast.layout

    monkeypatch.setattr(minibertgen.fast.layout, "SHORT_ROWS", 0)
    encoder.save_pretrained(tmp_path)
    loaded = mb.BertGenerationEncoder.from_pretrained(tmp_path)
    weight = loaded.params["encoder"]["layer"][0]["intermediate"]["dense"]["weight"]
    base = weight
    while getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, (np.memmap, memoryview)) or type(base).__name__ == "mmap"
    assert not weight.flags.writeable


def test_shape_mismatch_names_key_and_shapes(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 24
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"intermediate\.dense\.(weight' has shape \(20, 16\)|bias' has shape \(20,\)) but the config expects"):
        mb.BertGenerationEncoder.from_pretrained(tmp_path)


def test_missing_weights_file_and_truncated_file(encoder, tmp_path):
    mb.BertGenerationConfig(**SMALL).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        mb.BertGenerationEncoder.from_pretrained(tmp_path)
    encoder.save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        mb.BertGenerationEncoder.from_pretrained(tmp_path)


def test_missing_weights_are_listed_in_one_warning(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mb.BertGenerationDecoder.from_pretrained(tmp_path, is_decoder=True, add_cross_attention=True)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "encoder.layer.{0-1}.crossattention.self.query.weight" in text and "lm_head.bias" in text


def test_encoder_decoder_needs_cross_attention(encoder):
    plain_decoder = mb.BertGenerationDecoder(mb.BertGenerationConfig(**SMALL, is_decoder=True))
    with pytest.raises(ValueError, match="no cross-attention"):
        mb.EncoderDecoderModel(encoder=encoder, decoder=plain_decoder)
    with pytest.raises(ValueError, match="needs a config"):
        mb.EncoderDecoderModel(encoder=encoder)


def test_labels_without_start_token_is_a_clear_error(encoder, decoder):
    model = mb.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        model(input_ids=IDS, labels=IDS)
    model.config.decoder_start_token_id, model.config.pad_token_id = 2, 0
    out = model(input_ids=IDS, labels=IDS)
    assert out.loss.shape == () and np.isfinite(out.loss)
    assert out[0] is out.loss  # loss comes first, as in transformers' tuples


def test_gpu_request_without_cupy_fails_before_loading(tmp_path):
    pytest.importorskip_reason = None
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: this checks the CPU-only error")
    with pytest.raises(RuntimeError, match="needs CuPy"):
        mb.BertGenerationEncoder(mb.BertGenerationConfig(**SMALL), device="cuda")


def test_tie_encoder_decoder_shares_arrays_when_built_from_parts():
    enc = mb.BertGenerationEncoder(mb.BertGenerationConfig(**SMALL), seed=5)
    dec = mb.BertGenerationDecoder(mb.BertGenerationConfig(**SMALL, is_decoder=True, add_cross_attention=True),
                                   seed=6)
    config = mb.EncoderDecoderConfig.from_encoder_decoder_configs(enc.config, dec.config, tie_encoder_decoder=True)
    model = mb.EncoderDecoderModel(config, enc, dec)
    flat = model.state_dict()
    assert flat["decoder.bert.encoder.layer.1.output.dense.weight"] is flat["encoder.encoder.layer.1.output.dense.weight"]
    assert flat["decoder.lm_head.decoder.weight"] is flat["encoder.embeddings.word_embeddings.weight"]
    assert "decoder.bert.encoder.layer.0.crossattention.self.query.weight" in flat
    assert model.get_memory_footprint() < mb.EncoderDecoderModel(encoder=enc, decoder=mb.BertGenerationDecoder(
        dec.config, seed=6)).get_memory_footprint()


def test_load_warning_points_at_the_caller(tmp_path):
    mb.BertGenerationEncoder(mb.BertGenerationConfig(**SMALL), seed=0).save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mb.BertGenerationDecoder.from_pretrained(tmp_path, is_decoder=True)
    assert caught[0].filename == __file__


def test_generating_models_save_their_generation_config(decoder, tmp_path):
    decoder.generation_config.max_new_tokens = 7
    try:
        decoder.save_pretrained(tmp_path)
    finally:
        decoder.generation_config.max_new_tokens = None
    again = mb.BertGenerationDecoder.from_pretrained(tmp_path)
    assert again.generation_config.max_new_tokens == 7
    assert json.loads((tmp_path / "generation_config.json").read_text())["max_new_tokens"] == 7


def test_num_parameters_only_trainable_leaves_out_quantized_weights():
    """bitsandbytes' 4-bit and 8-bit weights do not require grad, so transformers'
    only_trainable count leaves them out; the total counts the values they stand for."""
    path = FIXTURES / "generation" / "random_seq2seq"
    full = mb.EncoderDecoderModel.from_pretrained(path)
    quantized = mb.EncoderDecoderModel.from_pretrained(path, quantization_config=mb.BitsAndBytesConfig(load_in_4bit=True))
    packed = sum(a.size for a in {id(a): a for a in quantized.state_dict().values()
                                  if getattr(a, "is_quantized", False)}.values())
    assert packed > 0 and quantized.num_parameters() == full.num_parameters()
    assert quantized.num_parameters(only_trainable=True) == full.num_parameters() - packed
    assert quantized.num_parameters(only_trainable=True) == sum(p.numel() for p in quantized.parameters())



def test_forward_cpu_and_cuda_spellings_of_torch_modules():
    model = mb.EncoderDecoderModel.from_pretrained(FIXTURES / "generation" / "random_seq2seq")
    ids, start = np.array([[5, 6, 7]]), np.array([[2, 8]])
    np.testing.assert_array_equal(model.forward(input_ids=ids, decoder_input_ids=start).logits,
                                  model(input_ids=ids, decoder_input_ids=start).logits)
    assert model.cpu() is model and model.device.kind == "cpu"
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="needs CuPy"):
            model.cuda()
    decoder = mb.BertGenerationDecoder.from_pretrained(FIXTURES / "generation" / "random_decoder")
    np.testing.assert_array_equal(decoder.forward(ids).logits, decoder(ids).logits)


@pytest.mark.parametrize("cast", [lambda m: m.half(), lambda m: m.to("float16"), lambda m: m.to("cpu", np.float16),
                                  lambda m: m.to(dtype="float16")])
def test_casting_a_loaded_model_equals_loading_it_in_that_dtype(cast):
    path = FIXTURES / "generation" / "random_seq2seq"
    ids, start = np.array([[5, 6, 7, 9]]), np.array([[2, 8, 4]])
    model = mb.EncoderDecoderModel.from_pretrained(path)
    assert cast(model) is model and model.dtype == np.float16
    loaded = mb.EncoderDecoderModel.from_pretrained(path, dtype="float16")
    np.testing.assert_array_equal(model(input_ids=ids, decoder_input_ids=start).logits,
                                  loaded(input_ids=ids, decoder_input_ids=start).logits)
    state = model.state_dict()
    tied = [(a, b) for a in state for b in state if a < b and state[a] is state[b]]
    assert tied and tied == [(a, b) for a in loaded.state_dict() for b in loaded.state_dict()
                             if a < b and loaded.state_dict()[a] is loaded.state_dict()[b]]
    model.float()
    assert model.dtype == np.float32
    for name, array in model.state_dict().items():  # float16 values, widened exactly
        np.testing.assert_array_equal(array, np.asarray(loaded.state_dict()[name], dtype=np.float32), err_msg=name)


def test_casting_is_refused_for_quantized_models_and_bad_arguments():
    path = FIXTURES / "generation" / "random_seq2seq"
    quantized = mb.EncoderDecoderModel.from_pretrained(path, quantization_config=mb.BitsAndBytesConfig(load_in_8bit=True))
    with pytest.raises(ValueError, match="8-bit / 4-bit weights, which cannot be cast"):
        quantized.half()
    model = mb.BertGenerationDecoder.from_pretrained(FIXTURES / "generation" / "random_decoder")
    with pytest.raises(TypeError, match="two devices"):
        model.to("cpu", "cuda")
    with pytest.raises(ValueError, match="dtype='int8'"):
        model.to(dtype="int8")
    assert model.half().dtype == np.float16 and model(np.array([[4, 5]])).logits.dtype == np.float16
