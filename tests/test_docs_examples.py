"""The transformers BertGeneration page's examples, with `transformers` swapped for `minibertgen`.

A fake Hugging Face cache (refs/main -> snapshots/<commit>) holds small stand-ins under
the documentation's hub ids:

* google/roberta2roberta_L-24_discofuse: a tiny bert2bert with a byte-level BPE tokenizer;
* google/bert_for_seq_generation_L-24_bbc_encoder: a tiny encoder with a SentencePiece tokenizer;
* google-bert/bert-large-uncased: the real all-MiniLM-L6-v2 BERT checkpoint.

Each example runs here; the reference tests at the bottom run transformers on the same
files and compare what both print.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES, require_module
from minibertgen.cli import main as cli_main

ROBERTA = "google/roberta2roberta_L-24_discofuse"
BBC = "google/bert_for_seq_generation_L-24_bbc_encoder"
BERT_LARGE = "google-bert/bert-large-uncased"
TOKENIZERS = FIXTURES / "tokenizers"


def snapshot_dir(cache, repo_id):
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def sharpen(model, factor=6.0):
    """Random init (std 0.02) gives near-uniform logits; scale matrices so outputs are decisive."""
    seen = set()
    for name, array in model.state_dict().items():
        if array.ndim == 2 and id(array) not in seen:
            seen.add(id(array))
            array *= factor


def make_roberta2roberta(snapshot):
    common = dict(vocab_size=1200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=300, bos_token_id=0, eos_token_id=2,
                  pad_token_id=1)
    config = mb.EncoderDecoderConfig.from_encoder_decoder_configs(
        mb.BertGenerationConfig(**common), mb.BertGenerationConfig(**common),
        decoder_start_token_id=0, pad_token_id=1, eos_token_id=2)
    model = mb.EncoderDecoderModel(config, seed=11)
    sharpen(model)
    model.save_pretrained(snapshot)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZERS / "bytelevel_bpe" / name, snapshot / name)
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))


def make_bbc_encoder(snapshot):
    config = mb.BertGenerationConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    model = mb.BertGenerationEncoder(config, seed=12)
    sharpen(model)
    model.save_pretrained(snapshot)
    shutil.copy(TOKENIZERS / "botchan_en_unigram_1000.model", snapshot / "spiece.model")
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertGenerationTokenizer"}))


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf_cache")
    make_roberta2roberta(snapshot_dir(cache, ROBERTA))
    make_bbc_encoder(snapshot_dir(cache, BBC))
    return cache


@pytest.fixture
def offline_cache(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_cache


@pytest.fixture
def bert_large_cache(offline_cache, minilm_dir):
    snapshot = snapshot_dir(offline_cache, BERT_LARGE)
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (minilm_dir / name).exists() and not (snapshot / name).exists():
            os.symlink(minilm_dir / name, snapshot / name)  # the HF cache links snapshots to blobs too
    return offline_cache


# -- the examples, as the page shows them ---------------------------------------------------------

def example_pipeline():
    generator = mb.pipeline(task="text2text-generation", model=ROBERTA, dtype="float32", device=None)
    return generator("Plants create energy through ")


def example_automodel():
    model = mb.EncoderDecoderModel.from_pretrained(ROBERTA, dtype="auto")
    tokenizer = mb.AutoTokenizer.from_pretrained(ROBERTA)
    input_ids = tokenizer("Plants create energy through ", add_special_tokens=False, return_tensors="np").input_ids
    outputs = model.generate(input_ids)
    return tokenizer.decode(outputs[0])


def example_decoder():
    tokenizer = mb.AutoTokenizer.from_pretrained(BBC)
    config = mb.BertGenerationConfig.from_pretrained(BBC)
    config.is_decoder = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the LM head is new: listed in a warning, as in transformers
        model = mb.BertGenerationDecoder.from_pretrained(BBC, config=config)
    inputs = tokenizer("Hello, my dog is cute", return_token_type_ids=False, return_tensors="np")
    outputs = model(**inputs)
    return inputs, outputs.logits


def example_bert2bert():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = mb.BertGenerationEncoder.from_pretrained(BERT_LARGE, bos_token_id=101, eos_token_id=102)
        decoder = mb.BertGenerationDecoder.from_pretrained(
            BERT_LARGE, add_cross_attention=True, is_decoder=True, bos_token_id=101, eos_token_id=102, seed=0)
    bert2bert = mb.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    tokenizer = mb.BertTokenizer.from_pretrained(BERT_LARGE)
    input_ids = tokenizer("This is a long article to summarize", add_special_tokens=False,
                          return_tensors="np").input_ids
    labels = tokenizer("This is a short summary", return_tensors="np").input_ids
    loss = bert2bert(input_ids=input_ids, decoder_input_ids=labels, labels=labels).loss
    return bert2bert, input_ids, labels, loss


def run_cli(argv, stdin_text):
    out = io.StringIO()
    code = cli_main(argv, stdin=io.StringIO(stdin_text), stdout=out)
    return code, out.getvalue()


# -- what each example must do -------------------------------------------------------------------

def test_pipeline_example(offline_cache):
    result = example_pipeline()
    assert isinstance(result, list) and len(result) == 1 and set(result[0]) == {"generated_text"}
    assert isinstance(result[0]["generated_text"], str) and result[0]["generated_text"]


def test_automodel_example(offline_cache):
    text = example_automodel()
    assert text.startswith("<s>")  # decode without skip_special_tokens keeps the start token


def test_decoder_example(offline_cache):
    inputs, logits = example_decoder()
    assert logits.shape == (1, inputs.input_ids.shape[1], 1000)
    assert "token_type_ids" not in inputs


def test_bert2bert_example(bert_large_cache):
    _, _, _, loss = example_bert2bert()
    assert np.isfinite(float(loss)) and float(loss) > 0


def test_cli_example_on_cpu_prints_one_line_per_input(offline_cache):
    code, out = run_cli(["run", "--task", "text2text-generation", "--model", ROBERTA, "--max-new-tokens", "8",
                         "--quiet"], "Plants create energy through \nHello world\n")
    assert code == 0
    assert len(out.splitlines()) == 2


def test_cli_example_with_device_0_fails_cleanly_without_gpu(offline_cache, capsys):
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: --device 0 may work")
    code, out = run_cli(["run", "--task", "text2text-generation", "--model", ROBERTA, "--device", "0"], "x\n")
    err = capsys.readouterr().err
    assert code == 1 and out == ""
    assert err.startswith("minibertgen: error: RuntimeError:") and "CuPy" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_formats_and_errors(offline_cache, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Plants create energy through "}) + "\n"
                      + json.dumps({"text": "Hello"}) + "\n")
    code, _ = run_cli(["run", "--model", ROBERTA, "--input", str(source), "--format", "jsonl", "--output",
                       str(tmp_path / "out.csv"), "--max-new-tokens", "4", "--num-beams", "2", "--quiet"], "")
    assert code == 1 and "names a csv file" in capsys.readouterr().err  # JSON lines never go into a .csv
    target = tmp_path / "out.jsonl"
    code, _ = run_cli(["run", "--model", ROBERTA, "--input", str(source), "--format", "jsonl", "--output",
                       str(target), "--max-new-tokens", "4", "--num-beams", "2", "--quiet"], "")
    assert code == 0
    lines = target.read_text().splitlines()
    assert lines[0].startswith('{"input": "Plants create energy through "') and len(lines) == 2
    code, _ = run_cli(["run", "--model", ROBERTA, "--input", str(source), "--output", str(target)], "")
    assert code == 1 and "pass --overwrite" in capsys.readouterr().err
    code, _ = run_cli(["run", "--model", "google/not-cached"], "x\n")
    err = capsys.readouterr().err
    assert code == 1 and "hf download google/not-cached" in err
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["run", "--model", ROBERTA, "--num-beams", "many"], "")
    assert exit_info.value.code == 2  # argparse: bad option value


@pytest.mark.parametrize("flag", ["--load-in-4bit", "--load-in-8bit"])
def test_cli_runs_quantized_models(offline_cache, flag):
    code, out = run_cli(["run", "--model", ROBERTA, flag, "--max-new-tokens", "3", "--num-beams", "1",
                         "--quiet"], "Plants create energy through \n")
    assert code == 0 and len(out.splitlines()) == 1


def test_cli_refuses_both_quantization_flags(offline_cache, capsys):
    code, _ = run_cli(["run", "--model", ROBERTA, "--load-in-4bit", "--load-in-8bit"], "x\n")
    assert code == 1 and "choose one" in capsys.readouterr().err


def test_pipeline_batches_lists_and_names_outputs(offline_cache):
    generator = mb.pipeline("summarization", model=ROBERTA, max_new_tokens=5, num_beams=2)
    single = [generator(text) for text in ["Plants create energy", "A much longer input sentence here"]]
    batched = generator(["Plants create energy", "A much longer input sentence here"], batch_size=2)
    assert [s[0] for s in single] == batched and set(batched[0]) == {"summary_text"}
    with pytest.raises(TypeError, match="inputs"):
        generator(42)
    with pytest.raises(ValueError, match="task='fill-mask'"):
        mb.pipeline("fill-mask", model=ROBERTA)


def test_pipeline_generation_settings_follow_transformers(offline_cache):
    generator = mb.pipeline(model=ROBERTA)
    assert generator.generation_config.max_new_tokens == 256 and generator.generation_config.num_beams == 4
    generator = mb.pipeline(model=ROBERTA, num_beams=2, max_new_tokens=3)
    assert generator.generation_config.num_beams == 2 and generator.generation_config.max_new_tokens == 3


# -- against transformers on the same files ------------------------------------------------------

@pytest.fixture(scope="module")
def hf():
    require_module("torch")
    return require_module("transformers")


def test_pipeline_and_automodel_match_transformers(hf, offline_cache):
    snapshot = mb.checkpoint.hub.resolve_model_dir(ROBERTA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_pipe = hf.pipeline(task="text2text-generation", model=str(snapshot))
        reference = ref_pipe("Plants create energy through ")
        model = hf.EncoderDecoderModel.from_pretrained(str(snapshot), dtype="auto")
        tokenizer = hf.AutoTokenizer.from_pretrained(str(snapshot))
        ids = tokenizer("Plants create energy through ", add_special_tokens=False, return_tensors="pt").input_ids
        ref_text = tokenizer.decode(model.generate(ids)[0])
    assert example_pipeline() == reference
    assert example_automodel() == ref_text


def test_decoder_example_matches_transformers(hf, offline_cache):
    import torch

    snapshot = mb.checkpoint.hub.resolve_model_dir(BBC)
    tokenizer = hf.AutoTokenizer.from_pretrained(str(snapshot))
    config = hf.BertGenerationConfig.from_pretrained(str(snapshot))
    config.is_decoder = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = hf.BertGenerationDecoder.from_pretrained(str(snapshot), config=config).eval()
    inputs = tokenizer("Hello, my dog is cute", return_token_type_ids=False, return_tensors="pt")
    with torch.no_grad():
        reference = model(**inputs).logits.numpy()
    our_inputs, logits = example_decoder()
    np.testing.assert_array_equal(our_inputs.input_ids, inputs.input_ids.numpy())
    assert float(np.abs(logits - reference).max()) <= 1e-4


def test_bert2bert_loss_matches_transformers(hf, bert_large_cache, tmp_path):
    import torch

    bert2bert, input_ids, labels, loss = example_bert2bert()
    bert2bert.save_pretrained(tmp_path)  # the new cross-attention weights are random: compare on the same ones
    theirs = hf.EncoderDecoderModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        reference = theirs(input_ids=torch.from_numpy(input_ids), decoder_input_ids=torch.from_numpy(labels),
                           labels=torch.from_numpy(labels)).loss
    assert abs(float(loss) - float(reference)) <= 1e-4


def test_cli_matches_transformers_run(hf, offline_cache):
    stdin = "Plants create energy through \n"
    env = {**os.environ, "HF_HUB_CACHE": str(offline_cache), "HF_HUB_OFFLINE": "1"}
    ref = subprocess.run(["transformers", "run", "--task", "text2text-generation", "--model", ROBERTA],
                         input=stdin, capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    printed = ref.stdout.strip().splitlines()[-1]  # transformers prints the list of result dicts
    import ast

    reference = [record["generated_text"] for record in ast.literal_eval(printed)]
    ours = subprocess.run([sys.executable, "-m", "minibertgen", "run", "--task", "text2text-generation", "--model",
                           ROBERTA], input=stdin, capture_output=True, text=True, env=env, timeout=600)
    assert ours.returncode == 0, ours.stderr
    # Each line names its row (issue 32): row<TAB>text
    assert ours.stdout.splitlines() == [f"{row}\t{text}" for row, text in enumerate(reference, start=1)]
