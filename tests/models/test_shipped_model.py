"""The shipped model bert2bert-dates (minibertgen/models/bert2bert_dates): its files, its model
card's claims, and transformers 4.57 live on a few held-out rows (same token ids, same text).

The targets are Babel's (written by examples/train_shipped_model.py into heldout.jsonl); the
reference token ids and generated text come from transformers in this run.
"""
import datetime
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

import minibertgen as mb
from minibertgen.cli import main as cli_main

from conftest import require_module

DIRECTORY = mb.models.bert2bert_dates()
FILES = ("config.json", "generation_config.json", "model.safetensors", "spiece.model", "tokenizer_config.json",
         "special_tokens_map.json", "README.md", "heldout.jsonl")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _rows():
    return [json.loads(line) for line in (DIRECTORY / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]


def _card():
    return (DIRECTORY / "README.md").read_text(encoding="utf-8")


def _claimed(pattern):
    found = re.search(pattern, _card())
    assert found, f"the model card has no line matching {pattern!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def shipped():
    return mb.EncoderDecoderModel.from_pretrained(DIRECTORY), mb.AutoTokenizer.from_pretrained(DIRECTORY)


def _generate(model, tokenizer, sources):
    encoded = tokenizer(sources, padding=True, return_tensors="np")
    out = model.generate(encoded["input_ids"], attention_mask=encoded["attention_mask"])
    return np.asarray(out), tokenizer.batch_decode(out, skip_special_tokens=True)


def test_files_are_shipped_and_small():
    sizes = {name: (DIRECTORY / name).stat().st_size for name in FILES}
    assert sum(sizes.values()) <= 10 * 1024 * 1024
    assert sum(p.stat().st_size for p in DIRECTORY.iterdir()) <= 10 * 1024 * 1024
    assert mb.models.shipped_model_dir("bert2bert-dates") == DIRECTORY


def test_pyproject_ships_the_directory():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"minibertgen.models" = ["bert2bert_dates/*"]' in text


def test_heldout_rows_are_heldout_days():
    rows = _rows()
    assert len(rows) >= 50 and len(rows) == int(_claimed(r"holds the first (\d+) of those rows"))
    assert all(set(row) == {"source", "target"} for row in rows)
    spec = importlib.util.spec_from_file_location("dates_task", EXAMPLES / "dates_task.py")
    dates_task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dates_task)
    train_days, heldout_days = dates_task.split_days(0)
    assert not set(train_days) & set(heldout_days)
    heldout = set(heldout_days)
    assert all(datetime.date.fromisoformat(row["target"]) in heldout for row in rows)
    assert len(heldout_days) == int(_claimed(r"\(\d+ \+ (\d+) days\)"))


def _misses_within_the_claim(model, tokenizer, claim_pattern, count=50):
    """Generate the first ``count`` shipped rows: their misses cannot exceed those the card claims
    on all of them (a share of the shipped rows)."""
    rows = _rows()
    claimed_misses = round((1 - float(_claimed(claim_pattern).rstrip("%")) / 100) * len(rows))
    _, texts = _generate(model, tokenizer, [row["source"] for row in rows[:count]])
    misses = sum(text != row["target"] for text, row in zip(texts, rows))
    assert misses <= claimed_misses, f"{misses} of {count} rows wrong; the card claims {claimed_misses} of {len(rows)}"


def test_card_figures(shipped):
    model, tokenizer = shipped
    assert model.num_parameters() == int(_claimed(r"; (\d+) parameters, float32"))
    assert tokenizer.vocab_size == len(tokenizer) == model.config.decoder.vocab_size
    assert float(_claimed(r"\| float32 \| ([\d.]+)%")) >= 95.0
    _misses_within_the_claim(model, tokenizer, r"float32 model scores ([\d.]+%)")


def test_nf4_figure_on_the_shipped_rows(shipped):
    model = mb.EncoderDecoderModel.from_pretrained(
        DIRECTORY, quantization_config=mb.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    _misses_within_the_claim(model, shipped[1], r"with NF4 weights ([\d.]+%)")


def test_same_ids_and_text_as_transformers(shipped):
    require_module("torch")
    transformers = require_module("transformers")
    model, tokenizer = shipped
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(DIRECTORY)
    reference = transformers.EncoderDecoderModel.from_pretrained(DIRECTORY).eval()
    rows = _rows()[:8]
    sources = [row["source"] for row in rows]
    for source in sources + [row["target"] for row in rows]:
        assert tokenizer(source)["input_ids"] == reference_tokenizer(source)["input_ids"]
    encoded = reference_tokenizer(sources, padding=True, return_tensors="pt")
    expected = reference.generate(**encoded).numpy()
    expected_text = reference_tokenizer.batch_decode(expected, skip_special_tokens=True)
    ids, texts = _generate(model, tokenizer, sources)
    np.testing.assert_array_equal(ids, expected)
    assert texts == expected_text
    assert sum(text == row["target"] for text, row in zip(texts, rows)) >= 7


def test_pipeline_and_cli_by_name():
    rows = _rows()[:3]
    generator = mb.pipeline("text2text-generation", model="bert2bert-dates")
    assert [out["generated_text"] for out in generator([row["source"] for row in rows])] == \
        [row["target"] for row in rows]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli_main(["run", "--model", "bert2bert-dates", "--quiet"],
                    stdin=io.StringIO("".join(row["source"] + "\n" for row in rows)), stdout=stdout, stderr=stderr)
    assert code == 0, stderr.getvalue()
    # pipe records are "row<TAB>text" (every record names its row: README, "Guarantees")
    assert stdout.getvalue().splitlines() == [f"{i}\t{row['target']}" for i, row in enumerate(rows, 1)]


def test_a_local_directory_of_the_same_name_comes_first(tmp_path, monkeypatch):
    from minibertgen.checkpoint.hub import resolve_model_dir

    assert resolve_model_dir("bert2bert-dates") == DIRECTORY
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bert2bert-dates").mkdir()
    assert resolve_model_dir("bert2bert-dates").resolve() == (tmp_path / "bert2bert-dates").resolve()
