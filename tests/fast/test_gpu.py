"""The CuPy backend: the parity suite on an NVIDIA GPU (skips where there is none; CI has none).

Targets (issue: GPU inference without torch): float32 outputs within 1e-4 of transformers'
recorded outputs and of the CPU path, float16 within 2e-2, greedy and beam ids identical
to the CPU path (and to transformers' recorded ids) in float32.
"""
import io
import json
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES, needs_gpu

sys.path.insert(0, str(Path(__file__).parents[1] / "generation"))
from cases import CASES, MODELS, model_inputs  # noqa: E402
from test_reference_fixtures import ENCODER_CASES, assert_close, compare_all, load_io  # noqa: E402




pytestmark = needs_gpu
REF = FIXTURES / "reference"
GEN = FIXTURES / "generation"
RECORDED = {r["id"]: r["expected"] for r in json.loads((GEN / "reference.json").read_text())["cases"]}


def host(x):
    return x.get() if hasattr(x, "get") and not isinstance(x, dict) else np.asarray(x)


def on_host(out):
    """A ModelOutput with every CuPy array (also inside tuples) copied to NumPy."""
    converted = {}
    for key, value in out.items():
        if isinstance(value, tuple):
            converted[key] = tuple(None if v is None else host(v) for v in value)
        elif value is not None and hasattr(value, "shape"):
            converted[key] = host(value)
    return converted


# -- the recorded transformers outputs, replayed on the GPU ------------------------------------------

@pytest.mark.parametrize("case", ENCODER_CASES)
def test_encoder_matches_transformers_on_gpu(case):
    import cupy

    inputs, expected = load_io(case)
    model = mb.BertGenerationEncoder.from_pretrained(REF / case, device=0)
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    assert isinstance(out.last_hidden_state, cupy.ndarray)
    compare_all(on_host(out), expected, ["last_hidden_state", "hidden_states", "attentions"])


@pytest.mark.parametrize("case", ["decoder_cross", "decoder_lm"])
def test_decoder_matches_transformers_on_gpu(case):
    inputs, expected = load_io(case)
    model = mb.BertGenerationDecoder.from_pretrained(REF / case, device=0)
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    compare_all(on_host(out), expected, ["logits", "loss", "hidden_states", "attentions", "cross_attentions"])


@pytest.mark.parametrize("case", ["bert2bert", "shared", "relative_key", "relative_key_query", "projection"])
def test_encoder_decoder_matches_transformers_and_cpu_on_gpu(case):
    import cupy

    inputs, expected = load_io(case)
    gpu = mb.EncoderDecoderModel.from_pretrained(REF / case, device=0)
    out = gpu(**inputs, output_attentions=True, output_hidden_states=True)
    assert isinstance(out.logits, cupy.ndarray)
    compare_all(on_host(out), expected, ["logits", "loss", "encoder_last_hidden_state", "decoder_hidden_states",
                                         "decoder_attentions", "cross_attentions"])
    cpu = mb.EncoderDecoderModel.from_pretrained(REF / case)(**inputs)
    assert float(np.abs(host(out.logits) - cpu.logits).max()) <= 1e-4
    # float16 end to end on the GPU (softmax, LayerNorm statistics and loss in float32)
    half = mb.EncoderDecoderModel.from_pretrained(REF / case, device=0, dtype="float16")(**inputs)
    assert half.logits.dtype == np.float16
    assert float(np.abs(host(half.logits).astype(np.float32) - cpu.logits).max()) <= 2e-2
    assert half.loss.dtype == np.float32 and abs(float(half.loss) - float(cpu.loss)) <= 2e-2


def test_bfloat16_checkpoint_on_gpu_is_computed_in_float32():
    inputs, expected = load_io("encoder_bfloat16")
    model = mb.BertGenerationEncoder.from_pretrained(REF / "encoder_bfloat16", dtype="auto", device=0)
    assert model.dtype == np.float32  # converted on load (documented in README)
    compare_all(on_host(model(**inputs, output_hidden_states=True)), expected,
                ["last_hidden_state", "hidden_states"])


def test_float16_checkpoint_on_gpu():
    inputs, expected = load_io("encoder_float16")
    model = mb.BertGenerationEncoder.from_pretrained(REF / "encoder_float16", dtype="auto", device=0)
    out = model(**inputs)
    assert out.last_hidden_state.dtype == np.float16
    assert_close(host(out.last_hidden_state), expected["last_hidden_state"], 2e-2, "float16 on GPU")


def test_weights_live_on_the_gpu_once():
    import cupy

    model = mb.EncoderDecoderModel.from_pretrained(GEN / "toy_bert2bert", device=0)
    arrays = {}
    for part in (model.encoder, model.decoder):
        for name, array in part.state_dict().items():
            assert isinstance(array, cupy.ndarray), name
            arrays[id(array)] = array
    weight_bytes = sum(a.nbytes for a in arrays.values())
    file_bytes = (GEN / "toy_bert2bert" / "model.safetensors").stat().st_size
    assert weight_bytes <= 1.05 * file_bytes


# -- generation: the recorded transformers ids, and the CPU path ---------------------------------

@lru_cache(maxsize=None)
def gpu_model(name):
    cls = mb.EncoderDecoderModel if MODELS[name]["kind"] == "seq2seq" else mb.BertGenerationDecoder
    return cls.from_pretrained(GEN / name, device=0)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_generation_matches_recorded_transformers_ids_on_gpu(case):
    ids, mask = model_inputs(case)
    kwargs = dict(case["settings"])
    if "decoder_input_ids" in kwargs:
        kwargs["decoder_input_ids"] = np.array(kwargs["decoder_input_ids"])
    got = host(gpu_model(case["model"]).generate(ids, attention_mask=mask, **kwargs))
    np.testing.assert_array_equal(got, np.array(RECORDED[case["id"]]), err_msg=str(case["settings"]))


@pytest.mark.parametrize("settings", [
    {"do_sample": True, "seed": 3, "top_k": 5},
    {"do_sample": True, "seed": 4, "top_p": 0.8, "temperature": 0.7, "num_return_sequences": 3},
    {"do_sample": True, "seed": 5, "num_beams": 3},
])
def test_seeded_sampling_matches_cpu(settings):
    cpu = mb.EncoderDecoderModel.from_pretrained(GEN / "toy_bert2bert")
    ids, mask = model_inputs({"model": "toy_bert2bert", "inputs": "batch"})
    want = np.asarray(cpu.generate(ids, attention_mask=mask, max_new_tokens=10, **settings))
    got = host(gpu_model("toy_bert2bert").generate(ids, attention_mask=mask, max_new_tokens=10, **settings))
    np.testing.assert_array_equal(got, want)


# -- the user surface on device=0 ----------------------------------------------------------------

def test_pipeline_and_cli_on_gpu(tmp_path):
    from minibertgen.cli import main as cli_main
    from test_docs_examples import make_roberta2roberta

    make_roberta2roberta(tmp_path)
    texts = ["Plants create energy", "hello"]
    cpu = mb.pipeline("text2text-generation", model=str(tmp_path))(texts)
    gpu = mb.pipeline("text2text-generation", model=str(tmp_path), device=0)(texts)
    assert gpu == cpu
    printed = {}
    for device in ("cpu", "0"):
        out = io.StringIO()
        code = cli_main(["run", "--model", str(tmp_path), "--device", device, "--quiet"],
                        stdin=io.StringIO("\n".join(texts) + "\n"), stdout=out)
        assert code == 0
        printed[device] = out.getvalue()
    assert printed["0"] == printed["cpu"] and len(printed["0"].splitlines()) == 2


@pytest.mark.parametrize("flags", [dict(load_in_4bit=True), dict(load_in_4bit=True, bnb_4bit_use_double_quant=True),
                                   dict(load_in_8bit=True)])
def test_quantized_model_on_gpu_matches_quantized_cpu(flags):
    import cupy

    config = mb.BitsAndBytesConfig(**flags)
    inputs, _ = load_io("bert2bert")
    cpu = mb.EncoderDecoderModel.from_pretrained(REF / "bert2bert", quantization_config=config)
    gpu = mb.EncoderDecoderModel.from_pretrained(REF / "bert2bert", quantization_config=config, device=0)
    want, got = cpu(**inputs), gpu(**inputs)
    assert isinstance(got.logits, cupy.ndarray)
    # same codes on both devices; only the float32 GEMM's summation order differs
    assert float(np.abs(host(got.logits) - want.logits).max()) <= 1e-4
    assert gpu.get_memory_footprint() == cpu.get_memory_footprint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = np.array([[5, 6, 7, 8, 9, 10]])
        np.testing.assert_array_equal(host(gpu.generate(source, max_new_tokens=6)),
                                      np.asarray(cpu.generate(source, max_new_tokens=6)))


# -- the fast paths against the readable one --------------------------------------------------

@pytest.mark.parametrize("preview_kernels", [False, True])
def test_fused_kernels_match_the_readable_path(preview_kernels, monkeypatch):
    """The fused path against the readable one; with the preview kernels too (fast/preview.py:
    one-launch attention for the encoder and the prompt, cuda_attention.py)."""
    from minibertgen.fast import preview

    monkeypatch.setattr(preview, "ENABLED", preview_kernels)
    inputs, _ = load_io("bert2bert")
    reference = mb.EncoderDecoderModel.from_pretrained(REF / "bert2bert")(**inputs)  # CPU, float32
    for dtype in ("float32", "float16"):
        model = mb.EncoderDecoderModel.from_pretrained(REF / "bert2bert", device=0, dtype=dtype)
        plain = on_host(model.use_fast_kernels(False)(**inputs, output_attentions=True))
        fused = on_host(model.use_fast_kernels(True)(**inputs, output_attentions=True))
        if dtype == "float32":
            # The same arithmetic, summed in a different order (the fused kernels' own
            # loops against cuBLAS's): 1e-5 is ~100 float32 steps at 1.0, ten times
            # tighter than the 1e-4 bound both paths meet against transformers.
            for name in ("logits", "loss"):
                assert float(np.abs(fused[name] - plain[name]).max()) <= 1e-5, name
            for a, b in zip(fused["decoder_attentions"], plain["decoder_attentions"]):
                assert float(np.abs(a - b).max()) <= 1e-5
        else:
            # The fused kernels keep scores, softmax and GELU in float32 where the readable
            # path rounds scaled scores to float16 first, so the two float16 paths differ by
            # a few float16 steps (about 0.015 at logits near 2); each meets the float16
            # target against float32 on its own.
            for path in (plain, fused):
                assert float(np.abs(path["logits"].astype(np.float32) - reference.logits).max()) <= 2e-2


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_preview_kernels_on_many_rows_match_the_readable_path(dtype, monkeypatch):
    """More than 32 rows, so that the encoder and the prompt take the preview kernels' many-row
    paths (fast/preview.py): one-launch attention, and the dense bias + residual + LayerNorm kernel."""
    from minibertgen.fast import preview

    monkeypatch.setattr(preview, "ENABLED", True)
    cpu = mb.EncoderDecoderModel.from_pretrained(REF / "bert2bert")  # logits up to ~5 on these inputs
    model = mb.EncoderDecoderModel.from_pretrained(REF / "bert2bert", device=0, dtype=dtype)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, cpu.config.encoder.vocab_size, (4, 20))  # 80 rows
    mask = np.ones_like(ids)
    mask[1, 15:] = 0
    inputs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :12])
    want = cpu(**inputs).logits
    plain = host(model.use_fast_kernels(False)(**inputs).logits).astype(np.float32)
    fused = host(model.use_fast_kernels(True)(**inputs).logits).astype(np.float32)
    if dtype == "float32":
        # as test_fused_kernels_match_the_readable_path: the same arithmetic in another order
        assert float(np.abs(fused - plain).max()) <= 1e-5
        assert float(np.abs(fused - want).max()) <= 1e-4
    else:  # the float16 target against float32, as for the other fused kernels
        assert float(np.abs(fused - want).max()) <= 2e-2


@pytest.fixture
def replay_counter(monkeypatch):
    """Counts CUDA-graph replays, and turns a failed capture (a warning) into an error."""
    from minibertgen.fast import cuda_graph

    calls = {"replays": 0}
    original = cuda_graph.GraphedDecoderStep._replay

    def counting(self, ids, seen):
        calls["replays"] += 1
        return original(self, ids, seen)

    monkeypatch.setattr(cuda_graph.GraphedDecoderStep, "_replay", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield calls


@pytest.mark.parametrize("name,settings", [
    ("toy_bert2bert", {}), ("toy_bert2bert", {"num_beams": 4, "num_return_sequences": 2}),
    ("random_seq2seq", {"num_beams": 3, "no_repeat_ngram_size": 2}), ("random_decoder", {"max_new_tokens": 8}),
    ("random_decoder", {"max_new_tokens": 8, "num_beams": 3}),
])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_graph_decoding_matches_eager(name, settings, dtype, replay_counter):
    cls = mb.EncoderDecoderModel if MODELS[name]["kind"] == "seq2seq" else mb.BertGenerationDecoder
    model = cls.from_pretrained(GEN / name, device=0, dtype=dtype)
    ids, mask = model_inputs({"model": name, "inputs": "batch"})
    eager = host(model.generate(ids, attention_mask=mask, use_cuda_graph=False, **settings))
    assert replay_counter["replays"] == 0
    graphed = host(model.generate(ids, attention_mask=mask, use_cuda_graph=True, **settings))
    assert replay_counter["replays"] >= 3  # the graph really ran
    np.testing.assert_array_equal(graphed, eager)
    if dtype == "float32":  # and both equal the CPU path
        cpu = cls.from_pretrained(GEN / name)
        np.testing.assert_array_equal(graphed, np.asarray(cpu.generate(ids, attention_mask=mask, **settings)))


@pytest.mark.parametrize("flags", [dict(load_in_4bit=True), dict(load_in_4bit=True, bnb_4bit_use_double_quant=True),
                                   dict(load_in_4bit=True, bnb_4bit_quant_type="fp4")])
@pytest.mark.parametrize("settings", [{}, {"num_beams": 4}])
def test_cuda_graph_decodes_4bit_models_like_the_cpu(flags, settings, replay_counter, monkeypatch):
    """4-bit decoding through the fused kernel (fast/cuda_fourbit.py), graphed: the same ids
    as the eager GPU step and as the NumPy route of quantization/."""
    from minibertgen.fast import preview

    monkeypatch.setattr(preview, "ENABLED", True)  # off by default until this test has passed on a GPU
    config = mb.BitsAndBytesConfig(**flags)
    cpu = mb.EncoderDecoderModel.from_pretrained(GEN / "toy_bert2bert", quantization_config=config)
    gpu = mb.EncoderDecoderModel.from_pretrained(GEN / "toy_bert2bert", quantization_config=config, device=0)
    ids, mask = model_inputs({"model": "toy_bert2bert", "inputs": "batch"})
    eager = host(gpu.generate(ids, attention_mask=mask, use_cuda_graph=False, **settings))
    assert replay_counter["replays"] == 0
    graphed = host(gpu.generate(ids, attention_mask=mask, use_cuda_graph=True, **settings))
    assert replay_counter["replays"] >= 3  # a 4-bit decode step is captured now
    np.testing.assert_array_equal(graphed, eager)
    np.testing.assert_array_equal(graphed, np.asarray(cpu.generate(ids, attention_mask=mask, **settings)))


@pytest.mark.parametrize("compute,x_dtype,double_quant", [("float32", "float32", False), ("float16", "float16", True),
                                                          ("float16", "float32", False), ("float32", "float16", True)])
def test_fourbit_kernel_matches_the_quantized_route_on_gpu(compute, x_dtype, double_quant, monkeypatch):
    import cupy

    from minibertgen.fast import cuda_fourbit, preview

    monkeypatch.setattr(preview, "ENABLED", True)
    from minibertgen.quantization.weights import QuantizedWeight4bit
    from test_cuda_fourbit import F16_EPS, F32_EPS, exact

    rng = np.random.default_rng(7)
    w = rng.standard_normal((200, 384)).astype(np.float32)
    on_cpu = QuantizedWeight4bit.from_float(w, "nf4", double_quant, np.dtype(compute))
    on_gpu = QuantizedWeight4bit.from_float(cupy.asarray(w), "nf4", double_quant, np.dtype(compute))
    np.testing.assert_array_equal(host(on_gpu.q.packed), on_cpu.q.packed)  # the same codes on both devices
    for rows in (1, 4, 32):
        x = rng.standard_normal((rows, 384)).astype(x_dtype)
        bias = rng.standard_normal(200).astype(x_dtype)
        assert cuda_fourbit.fits(cupy.asarray(x), on_gpu)
        got = host(cuda_fourbit.few_rows_linear_4bit(cupy.asarray(x), on_gpu, cupy.asarray(bias)))
        route = host(on_gpu.rmatmul_t(cupy.asarray(x)) + cupy.asarray(bias))  # dequantize + cuBLAS
        assert got.dtype == route.dtype == np.dtype(x_dtype)
        product, magnitude = exact(x, on_cpu)
        # the bound of tests/fast/test_cuda_fourbit.py: float32 summation order, then float16 roundings
        bound = 384 * F32_EPS * magnitude
        if "float16" in (compute, x_dtype):
            bound = bound + 2 * F16_EPS * (2 * np.abs(product) + np.abs(bias.astype(np.float64)))
        assert (np.abs(got.astype(np.float64) - (product + bias)) <= bound + 1e-30).all()
        assert (np.abs(route.astype(np.float64) - (product + bias)) <= bound + 1e-30).all()


def test_cuda_graph_is_refused_for_bad_values():
    model = gpu_model("toy_bert2bert")
    with pytest.raises(TypeError, match="use_cuda_graph"):
        model.generate(np.array([[5, 6, 7]]), use_cuda_graph="yes")


# -- BERT-family halves (bert, roberta, bert-generation in every pairing) on the GPU ------------

@pytest.mark.parametrize("case", ["bert2bert", "roberta2roberta", "bg2roberta", "roberta2bert", "bert2bert_tied",
                                  "roberta2roberta_tied"])
def test_bert_family_pairings_on_gpu_match_transformers(case):
    """The recorded transformers outputs of tests/fixtures/bert_family (token types given
    where the encoder has them), greedy and beam ids, on CuPy through the same functions."""
    directory = FIXTURES / "bert_family" / case
    with np.load(directory / "io.npz") as data:
        io = {k: data[k] for k in data.files}
    gpu = mb.EncoderDecoderModel.from_pretrained(directory, device=0)
    inputs = {k[3:]: v for k, v in io.items() if k.startswith("in.")}
    out = gpu(**inputs)
    logits_key, loss_key = ("out.typed_logits", "out.typed_loss") if "in.token_type_ids" in io else \
        ("out.logits", "out.loss")
    assert float(np.abs(host(out.logits) - io[logits_key]).max()) <= 1e-4
    assert abs(float(host(out.loss)) - float(io[loss_key])) <= 1e-4
    for num_beams, key in ((1, "out.greedy"), (3, "out.beam")):
        ids = gpu.generate(io["in.input_ids"], attention_mask=io["in.attention_mask"], max_new_tokens=6,
                           num_beams=num_beams)
        np.testing.assert_array_equal(host(ids), io[key])


def test_training_step_on_gpu_matches_the_cpu():
    """loss.backward() and AdamW on CuPy (issue 15: the same code, xp from the inputs): the
    loss and every gradient as on the CPU (whose gradients are checked against torch in
    tests/training/), and AdamW given the same gradients makes the same weights."""
    from minibertgen.optim import AdamW

    inputs, _ = load_io("bert2bert")
    models = [mb.EncoderDecoderModel.from_pretrained(REF / "bert2bert", device=device) for device in (None, 0)]
    losses = []
    for model in models:
        loss = model(**inputs).loss
        loss.backward()
        losses.append(float(host(loss)))
    assert abs(losses[0] - losses[1]) <= 1e-5
    cpu, gpu = (dict(m.named_parameters()) for m in models)
    assert cpu.keys() == gpu.keys()
    total = float(np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in cpu.values() if p.grad is not None)))
    for name, param in cpu.items():
        if param.grad is None:
            assert gpu[name].grad is None or not host(gpu[name].grad).any(), name
            continue
        np.testing.assert_allclose(host(gpu[name].grad), param.grad, rtol=1e-4, atol=1e-5 * total, err_msg=name)
    import cupy

    for name, param in cpu.items():  # the same gradients on both sides: the first Adam step is
        gpu[name].grad = cupy.asarray(param.grad)  # lr * sign(g), ill-conditioned for g ~ 0 otherwise
    for model in models:
        AdamW(model.parameters(), lr=1e-3, weight_decay=0.01).step()
    for name, param in cpu.items():
        np.testing.assert_allclose(host(gpu[name].data), param.data, rtol=1e-5, atol=1e-6, err_msg=name)
