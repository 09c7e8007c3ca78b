"""Quantized models end to end: which weights, bytes, quality against float32, generation.

Numbers measured when this was written (CPU, NumPy) are in the comments next to each
threshold; the thresholds are the issue's targets, not the measurements.
"""
import json
import warnings

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES
from fixtures.generation.toy_task import held_out_examples
from minibertgen.quantization import BitsAndBytesConfig, QuantizedWeight4bit, quantize_params, quantized_weights

TOY = FIXTURES / "generation" / "toy_bert2bert"
BERT2BERT = FIXTURES / "reference" / "bert2bert"
NF4 = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4")
NF4_DQ = dict(NF4, bnb_4bit_use_double_quant=True)
FP4 = dict(load_in_4bit=True, bnb_4bit_quant_type="fp4")
INT8 = dict(load_in_8bit=True)


def cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)  # [positions]


def linear_bytes(model):
    """(bytes of the quantized linear weights, bytes the same weights take in float32)."""
    found = quantized_weights(model.params)
    return sum(w.nbytes for w in found.values()), sum(4 * w.size for w in found.values())


# -- which weights -------------------------------------------------------------------------
def test_linear_weights_are_quantized_and_the_rest_is_not():
    model = mb.EncoderDecoderModel.from_pretrained(BERT2BERT, quantization_config=BitsAndBytesConfig(**NF4))
    state = model.state_dict()
    quantized = {name for name, value in state.items() if getattr(value, "is_quantized", False)}
    layers = model.config.encoder.num_hidden_layers
    per_encoder_layer = ["attention.self.query", "attention.self.key", "attention.self.value",
                         "attention.output.dense", "intermediate.dense", "output.dense"]
    expected = {f"encoder.encoder.layer.{i}.{m}.weight" for i in range(layers) for m in per_encoder_layer}
    cross = [m.replace("attention.", "crossattention.") for m in per_encoder_layer[:4]]
    expected |= {f"decoder.bert.encoder.layer.{i}.{m}.weight" for i in range(model.config.decoder.num_hidden_layers)
                 for m in per_encoder_layer + cross}
    assert quantized == expected
    for name, value in state.items():
        if name not in quantized:
            assert isinstance(value, np.ndarray), name  # embeddings, LayerNorms, biases, LM head
    assert isinstance(state["decoder.lm_head.decoder.weight"], np.ndarray)


def test_skip_modules_and_tied_weights():
    model = mb.EncoderDecoderModel.from_pretrained(BERT2BERT)
    skip = ["crossattention", "encoder.encoder.layer.0"]
    # A list replaces transformers' defaults (the LM head among them); this decoder's head is
    # tied to its word embeddings, which transformers 4.57 then fails to load: refused, naming it.
    with pytest.raises(ValueError, match=r"leaves 'decoder.lm_head.decoder' to be quantized, but its weight is "
                                         r"tied to 'decoder.bert.embeddings.word_embeddings'.*Add 'decoder.lm_head"):
        quantize_params(model.params, BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip))
    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip + ["lm_head"])
    tree = quantize_params(model.params, config)
    names = set(quantized_weights(tree))
    assert not any("crossattention" in n for n in names)
    assert not any(n.startswith("encoder.encoder.layer.0.") for n in names)
    assert any(n.startswith("encoder.encoder.layer.1.") for n in names)
    assert any("decoder.bert.encoder.layer.0.attention" in n for n in names)  # "layer.0" of the encoder only
    assert not any("lm_head" in n for n in names)
    shared = {"a": {"weight": np.ones((4, 8), np.float32)}}
    shared["b"] = {"weight": shared["a"]["weight"]}
    tied = quantize_params(shared, BitsAndBytesConfig(**INT8))
    assert tied["a"]["weight"] is tied["b"]["weight"] is shared["a"]["weight"]  # tied: kept float, one array
    with pytest.raises(ValueError, match="leaves 'a' to be quantized, but its weight is tied to 'b'"):
        quantize_params(shared, BitsAndBytesConfig(**INT8, llm_int8_skip_modules=[]))
    assert model.params["encoder"]["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"].dtype == np.float32


def test_projection_stays_float_as_in_transformers():
    """enc_to_dec_proj is an EncoderDecoderModel's last module, which transformers keeps float
    (test_quant_selection.py checks the rule against transformers itself)."""
    model = mb.EncoderDecoderModel.from_pretrained(FIXTURES / "reference" / "projection",
                                                   quantization_config=BitsAndBytesConfig(**NF4))
    assert isinstance(model.enc_to_dec_proj["weight"], np.ndarray)
    assert quantized_weights(model.params)  # the rest is quantized
    skip = BitsAndBytesConfig(**NF4, llm_int8_skip_modules=["lm_head"])  # a list replaces the defaults
    model = mb.EncoderDecoderModel.from_pretrained(FIXTURES / "reference" / "projection", quantization_config=skip)
    assert isinstance(model.enc_to_dec_proj["weight"], QuantizedWeight4bit)
    assert model(input_ids=np.array([[5, 6, 7]]), decoder_input_ids=np.array([[1, 2]])).logits.shape[:2] == (1, 2)


def test_encoder_and_decoder_classes_quantize_too():
    encoder = mb.BertGenerationEncoder.from_pretrained(FIXTURES / "reference" / "encoder",
                                                       quantization_config=BitsAndBytesConfig(**INT8).to_dict())
    decoder = mb.BertGenerationDecoder.from_pretrained(FIXTURES / "reference" / "decoder_lm",
                                                       quantization_config=BitsAndBytesConfig(**NF4_DQ))
    assert quantized_weights(encoder.params) and quantized_weights(decoder.params)
    assert not any(n.startswith("lm_head") for n in quantized_weights(decoder.params))
    reference = mb.BertGenerationDecoder.from_pretrained(FIXTURES / "reference" / "decoder_lm")
    ids = np.array([[3, 4, 5, 6]])
    assert cosine(decoder(input_ids=ids).logits, reference(input_ids=ids).logits).mean() > 0.9


def test_errors():
    model = mb.EncoderDecoderModel.from_pretrained(BERT2BERT)
    with pytest.raises(ValueError, match="load_in_8bit=False and load_in_4bit=False"):
        quantize_params(model.params, BitsAndBytesConfig())
    with pytest.raises(TypeError, match="quantization_config: expected a minibertgen.BitsAndBytesConfig"):
        mb.EncoderDecoderModel.from_pretrained(BERT2BERT, quantization_config="nf4")
    tree = quantize_params(model.params, BitsAndBytesConfig(**NF4))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_params(tree, BitsAndBytesConfig(**NF4))
    weight = tree["encoder"]["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"]
    with pytest.raises(TypeError, match="cannot be turned into an array implicitly: call .dequantize()"):
        np.asarray(weight)  # never silently dequantized


# -- bytes -----------------------------------------------------------------------------------
def bertgen_warm_start(minilm_dir, encoder_quantization_config=None, decoder_quantization_config=None):
    """The measured bert2bert: BertGeneration halves warm-started from MiniLM (BERT's own
    from_encoder_decoder_pretrained would build BertModel + BertLMHeadModel, as transformers)."""
    encoder = mb.BertGenerationEncoder.from_pretrained(minilm_dir, seed=0, quantization_config=encoder_quantization_config)
    decoder = mb.BertGenerationDecoder.from_pretrained(minilm_dir, seed=0, is_decoder=True, add_cross_attention=True,
                                                       quantization_config=decoder_quantization_config)
    return mb.EncoderDecoderModel.from_encoder_decoder_pretrained(encoder_model=encoder, decoder_model=decoder)


@pytest.fixture(scope="module")
def minilm_models(minilm_dir):
    def load(settings=None):
        kw = {}
        if settings is not None:
            config = BitsAndBytesConfig(**settings)
            kw = dict(encoder_quantization_config=config, decoder_quantization_config=config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # new cross-attention weights, unused pooler
            return bertgen_warm_start(minilm_dir, **kw)
    names = {"float32": None, "int8": INT8, "nf4": NF4, "nf4_dq": NF4_DQ, "fp4": FP4}
    return {name: load(settings) for name, settings in names.items()}


@pytest.mark.parametrize("name, limit", [("nf4", 0.15), ("nf4_dq", 0.135), ("fp4", 0.15), ("int8", 0.27)])
def test_bytes_of_quantized_linear_layers(minilm_models, name, limit):
    held, as_float32 = linear_bytes(minilm_models[name])
    assert as_float32 == 4 * 12 * (4 * 384 * 384 + 2 * 384 * 1536) + 4 * 6 * 4 * 384 * 384  # every linear layer
    print(f"{name}: linear layers {held / as_float32:.4f} x float32")  # 0.1406 / 0.1290 / 0.1406 / 0.2526
    assert held / as_float32 <= limit
    whole = minilm_models[name].get_memory_footprint() / minilm_models["float32"].get_memory_footprint()
    assert whole < 1.0  # embeddings (30522 x 384, twice) stay float32


# -- quality ----------------------------------------------------------------------------------
HELD_OUT = ["The quick brown fox jumps over the lazy dog.",
            "Quantization stores weights in fewer bits to save memory.",
            "A student reads the whole forward pass in one sitting.",
            "Rain is expected in the north of the country tomorrow afternoon."]


def minilm_inputs(minilm_dir):
    from minibertgen.tokenizers import BertTokenizer

    batch = BertTokenizer.from_pretrained(minilm_dir)(HELD_OUT, padding=True, return_tensors="np")
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  decoder_input_ids=batch.input_ids, decoder_attention_mask=batch.attention_mask,
                  labels=np.where(batch.attention_mask == 1, batch.input_ids, -100))
    return inputs, batch.attention_mask.reshape(-1) == 1


@pytest.fixture(scope="module")
def minilm_quality(minilm_models, minilm_dir):
    """{name: (mean cosine of logits vs float32, loss increase)} on the held-out sentences."""
    inputs, keep = minilm_inputs(minilm_dir)
    reference = minilm_models["float32"](**inputs)
    results = {}
    for name in ("int8", "nf4", "nf4_dq", "fp4"):
        out = minilm_models[name](**inputs)
        results[name] = (cosine(out.logits, reference.logits)[keep].mean(), float(out.loss) - float(reference.loss))
        print(f"{name}: mean cosine {results[name][0]:.5f}, loss {float(reference.loss):.4f} +{results[name][1]:.4f}")
    return results


def test_minilm_bert2bert_quality_ordering(minilm_quality):
    """What must hold whatever the absolute numbers: more bits, and NF4 over FP4, are closer to float32."""
    cos = {name: value[0] for name, value in minilm_quality.items()}
    loss = {name: value[1] for name, value in minilm_quality.items()}
    assert cos["int8"] > cos["nf4"] > cos["fp4"]
    assert loss["int8"] < loss["nf4"] < loss["fp4"]
    assert abs(cos["nf4_dq"] - cos["nf4"]) < 0.005  # double quantization costs (almost) nothing


def test_minilm_int8_outlier_decomposition_helps(minilm_models, minilm_dir):
    """Threshold 6 (mixed precision) against threshold 0 (every feature through int8)."""
    inputs, keep = minilm_inputs(minilm_dir)
    reference = minilm_models["float32"](**inputs).logits
    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = bertgen_warm_start(minilm_dir, encoder_quantization_config=config, decoder_quantization_config=config)
    mixed_cos = cosine(minilm_models["int8"](**inputs).logits, reference)[keep].mean()
    plain_cos = cosine(plain(**inputs).logits, reference)[keep].mean()
    assert 1 - mixed_cos < (1 - plain_cos) / 2  # measured 0.99844 vs 0.99133


# The targets on the MiniLM warm-started bert2bert, not met (measured on these sentences):
# int8 0.99844 (>= 0.999 asked), NF4 0.94759, NF4 + double quant 0.94758, FP4 0.92573 (>= 0.99 asked).
# The 4-bit codes are bit-identical to bitsandbytes' reference algorithm (checked when written,
# against the torch code in bitsandbytes 0.50.2's default backend).  The warm-started decoder was
# never trained as a decoder and is very sensitive: int8 weights with *unquantized* activations
# already give 0.99916, quantizing the encoder alone (NF4) leaves the logits at 0.999, and the
# trained toy model meets every target (test_trained_toy_model_quality_and_greedy_agreement).
# transformers 4.57 + bitsandbytes 0.50.2 on the same float32 checkpoint and sentences measured
# int8 0.99847, NF4 0.94759, NF4 + double quant 0.94753, FP4 0.92573: the targets are out of reach
# of the algorithm itself on this model.  (Those transformers numbers come from
# benchmarks/bnb_minilm_quality.py as of commit e446540, when minibertgen's
# from_encoder_decoder_pretrained still built BertGeneration halves from a BERT checkpoint; it now
# builds BertModel + BertLMHeadModel, as transformers does, so rerunning that script measures that
# pair, not the BertGeneration pair measured here.)
# The targets stay as strict xfails; the measured values are pinned both ways below, so a
# regression (or an improvement) shows.
MEASURED = {"int8": 0.99844, "nf4": 0.94759, "nf4_dq": 0.94758, "fp4": 0.92573}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_minilm_quality_pinned_at_its_measured_value(minilm_quality, name):
    # deterministic float32 arithmetic on fixed weights and sentences: the last printed digit
    assert abs(minilm_quality[name][0] - MEASURED[name]) <= 1e-5


@pytest.mark.xfail(strict=True, reason="measured 0.99844 on the warm-started MiniLM bert2bert (target 0.999)")
def test_minilm_int8_target(minilm_quality):
    assert minilm_quality["int8"][0] >= 0.999


@pytest.mark.xfail(strict=True, reason="measured 0.94759 on the warm-started MiniLM bert2bert (target 0.99)")
def test_minilm_nf4_target(minilm_quality):
    assert minilm_quality["nf4"][0] >= 0.99


def toy_held_out(n=64, seed=123):
    """Fresh examples of the toy task (copy / reverse a few words), padded to a batch."""
    return held_out_examples(n, seed)


@pytest.mark.parametrize("name, settings, min_cosine, max_loss_ratio, min_agreement", [
    ("int8", INT8, 0.999, 1.01, 0.95),   # measured: cosine 0.99992, loss +0.2%, agreement 63/64
    ("nf4", NF4, 0.99, 1.10, 0.9),       # measured: cosine 0.99821, loss +3.3%, agreement 64/64
    ("nf4_dq", NF4_DQ, 0.99, 1.10, 0.9),  # measured: cosine 0.99818, loss +3.4%, agreement 64/64
    ("nf4_fp16", dict(NF4, bnb_4bit_compute_dtype="float16"), 0.99, 1.10, 0.9),
    ("fp4", FP4, 0.99, 1.10, 0.9),       # measured: cosine 0.99632, loss +5.8%, agreement 62/64
])
def test_trained_toy_model_quality_and_greedy_agreement(name, settings, min_cosine, max_loss_ratio, min_agreement):
    ids, mask, labels = toy_held_out()
    reference = mb.EncoderDecoderModel.from_pretrained(TOY)
    model = mb.EncoderDecoderModel.from_pretrained(TOY, quantization_config=BitsAndBytesConfig(**settings))
    expected, out = reference(input_ids=ids, attention_mask=mask, labels=labels), \
        model(input_ids=ids, attention_mask=mask, labels=labels)
    keep = (labels.reshape(-1) != -100)
    similarity = cosine(out.logits, expected.logits)[keep].mean()
    greedy_ref = reference.generate(ids, attention_mask=mask, max_new_tokens=10)
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=10)
    agreement = np.mean([np.array_equal(a, b) for a, b in zip(greedy_ref, greedy)])
    print(f"{name}: cosine {similarity:.5f}, loss {float(expected.loss):.4f} -> {float(out.loss):.4f}, "
          f"greedy agreement {agreement:.3f}")
    assert similarity >= min_cosine
    assert float(out.loss) <= float(expected.loss) * max_loss_ratio
    assert agreement >= min_agreement
    assert out.logits.dtype == np.float32  # the model stays float32; only the matmuls are quantized


def test_documentation_example_runs():
    """The documentation's 4-bit example, with a string compute dtype and dtype="auto"."""
    quantization_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype="float16")
    model = mb.EncoderDecoderModel.from_pretrained(TOY, quantization_config=quantization_config, dtype="auto")
    vocab = json.loads((TOY / "vocab.json").read_text())
    input_ids = np.array([[vocab.index(w) for w in "reverse apple bird cat dog".split()] + [1]])
    outputs = model.generate(input_ids)
    text = " ".join(vocab[i] for i in outputs[0] if i > 2)
    assert text == "dog cat bird apple"
    full = mb.EncoderDecoderModel.from_pretrained(TOY, dtype="auto")
    assert model.get_memory_footprint() < 0.5 * full.get_memory_footprint()
