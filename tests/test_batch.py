"""minibertgen.batch: length-sorted batches give each row its unbatched result, in input order,
streamed; bad rows fail alone with their row number."""
import itertools

import numpy as np
import pytest

import minibertgen as mb
from batch_models import random_texts, with_tokenizer
from conftest import require_module
from minibertgen.batch import Row, generate_rows, rows_from_texts

MODELS = ["toy_bert2bert", "random_seq2seq", "random_seq2seq_relative"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_models")
    return {name: with_tokenizer(name, root / name) for name in MODELS}


def unbatched_ids(generator, text, **settings):
    """The row alone through model.generate: no padding at all."""
    ids = np.array([generator.encode(text)])
    out = generator.model.generate(ids, generation_config=generator.generation_config, **settings)
    return [np.asarray(row) for row in out]


def strip_end(ids, tokens):
    ids = list(np.asarray(ids))
    while ids and ids[-1] in tokens:
        ids.pop()
    return ids


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_sorted_batches_give_each_row_its_unbatched_ids(model_dirs, name, num_beams):
    generator = mb.pipeline(model=str(model_dirs[name]), num_beams=num_beams, max_new_tokens=8)
    texts = random_texts(name, 48 if num_beams == 1 else 16, seed=len(name), longest=30)
    results = list(generate_rows(generator, rows_from_texts(texts), batch_size=8, window=24, return_tensors=True))
    assert [result.row.number for result in results] == list(range(1, len(texts) + 1))
    # Beam search: transformers closes a hypothesis shorter than its batch's longest with an
    # end token, which a row alone at max_length does not get; so beams compare without it.
    ends = {generator.model.generation_config.pad_token_id}
    if num_beams > 1:
        ends.add(generator.model.generation_config.eos_token_id)
    for text, result in zip(texts, results):
        (record,) = result.records
        (alone,) = unbatched_ids(generator, text)
        assert strip_end(record["generated_token_ids"], ends) == strip_end(alone, ends), text


def test_pipeline_batch_size_equals_one_at_a_time(model_dirs):
    generator = mb.pipeline(model=str(model_dirs["toy_bert2bert"]), num_beams=1, max_new_tokens=8)
    texts = random_texts("toy_bert2bert", 40, seed=3)
    assert generator(texts, batch_size=8) == [generator(text)[0] for text in texts]


def test_pipeline_batches_match_transformers_pipeline(model_dirs):
    transformers = require_module("transformers")
    require_module("torch")
    transformers.logging.set_verbosity_error()
    directory = str(model_dirs["random_seq2seq"])
    texts = random_texts("random_seq2seq", 24, seed=5, longest=25)
    theirs = transformers.pipeline("text2text-generation", model=directory, num_beams=2, max_new_tokens=6)
    ours = mb.pipeline("text2text-generation", model=directory, num_beams=2, max_new_tokens=6)
    assert ours(texts, batch_size=8) == theirs(texts, batch_size=8)


def test_rows_stream_through_windows():
    read = []

    def endless():
        for number in itertools.count(1):
            read.append(number)
            yield Row(number, "copy cat")

    generator = _EchoGenerator()
    first = next(generate_rows(generator, endless(), batch_size=4, window=8))
    assert first.row.number == 1 and first.records == [{"generated_text": "4"}]  # batches of 4
    assert len(read) == 8  # one window read ahead, not the stream
    taken = list(itertools.islice(generate_rows(generator, endless(), batch_size=4, window=8), 20))
    assert [result.row.number for result in taken] == list(range(1, 21))


def test_sampling_keeps_input_order_in_batches(model_dirs):
    generator = mb.pipeline(model=str(model_dirs["random_seq2seq"]), num_beams=1, max_new_tokens=6, do_sample=True)
    texts = random_texts("random_seq2seq", 12, seed=9)
    batched = generator(texts, batch_size=4, seed=7)
    in_order = [records[0] for i in range(0, 12, 4) for records in generator.generate_batch(
        [generator.encode(text) for text in texts[i:i + 4]], generate_kwargs={"seed": 7})]
    assert batched == in_order


def test_a_bad_row_fails_alone_with_its_number(model_dirs):
    generator = mb.pipeline(model=str(model_dirs["toy_bert2bert"]), num_beams=1, max_new_tokens=5)
    too_long = " ".join(["cat"] * 80)  # 82 tokens; the toy encoder has 64 positions
    rows = [Row(1, "copy cat"), Row(2, None, 3, "field 'text' is missing (null): expected a string"),
            Row(3, too_long), Row(4, "copy dog")]
    results = list(generate_rows(generator, rows, batch_size=4))
    assert [r.error is None for r in results] == [True, False, False, True]
    assert results[1].error.startswith("field 'text' is missing") and results[1].row.where() == "row 2 (line 3)"
    assert "82 tokens" in results[2].error and "at most 64" in results[2].error
    assert results[0].records == generator("copy cat") and results[3].records == generator("copy dog")
    with pytest.raises(ValueError, match="82 tokens"):
        generator(["copy cat", too_long], batch_size=2)


def test_batch_size_is_checked(model_dirs):
    generator = mb.pipeline(model=str(model_dirs["toy_bert2bert"]), max_new_tokens=5)
    with pytest.raises(ValueError, match="batch_size=-2"):
        generator(["copy cat"], batch_size=-2)


def test_progress_bar_counts_rows_per_second(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    import minibertgen.progress as progress

    monkeypatch.setattr(progress, "progress_bars_enabled", lambda: True)
    results = list(generate_rows(_EchoGenerator(), rows_from_texts(["copy cat"] * 20), batch_size=4))
    assert len(results) == 20
    assert "row/s" in capsys.readouterr().err


class _EchoGenerator:
    """Stands in for a pipeline: 'generates' the batch width, to see what was batched together."""

    task = "text2text-generation"

    def samples(self, generate_kwargs):
        return False

    def encode(self, text, truncation=False):
        return [0] * len(text)

    def generate_batch(self, ids, **options):
        return [[{"generated_text": str(len(ids))}] for _ in ids]
