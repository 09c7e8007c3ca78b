"""Ray Data: a real local cluster (2 CPUs) generates a few hundred rows equal, in order, to the
single-process result, with none lost or duplicated, also when an actor dies mid-job.

Skips without ray, except under MINIBERTGEN_REQUIRE_REFERENCE=1 (CI installs the ray extra)."""
import faulthandler
import io
import json
import os
from pathlib import Path

import pytest

from batch_models import random_texts, with_tokenizer
from conftest import STRICT

try:
    import ray
    import ray.data
except ImportError as exc:
    if STRICT:
        raise ImportError(f"ray is not installed ({exc}): CI installs the 'ray' extra (pip install -e '.[ray]')")
    pytest.skip(f"ray is not installed ({exc}): pip install -e '.[ray]'", allow_module_level=True)

import minibertgen as mb
from minibertgen.batch import Row, generate_rows
from minibertgen.batch_io import text_error
from minibertgen.cli import main as cli_main
from minibertgen.ray_data import Text2TextPredictor, generate_dataset

TESTS = Path(__file__).resolve().parent
SETTINGS = {"max_new_tokens": 6, "num_beams": 1}
ROWS = 300


@pytest.fixture(scope="module")
def cluster():
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "MINIBERTGEN_QUIET": "1"}})
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_hang():
    """A job that waits for resources waits forever: end the run with a traceback instead."""
    faulthandler.dump_traceback_later(180, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return str(with_tokenizer("toy_bert2bert", tmp_path_factory.mktemp("ray") / "toy"))


@pytest.fixture(scope="module")
def texts_and_expected(toy):
    texts = random_texts("toy_bert2bert", ROWS, seed=11)
    texts[17] = ""  # a bad row: reported, not generated
    generator = mb.pipeline(model=toy, **SETTINGS)
    rows = [Row(number, text, error=text_error(text)) for number, text in enumerate(texts, start=1)]
    expected = [None if r.records is None else r.records[0]["generated_text"]
                for r in generate_rows(generator, rows, batch_size=8)]
    assert expected[17] is None and None not in expected[:17] + expected[18:]
    return texts, expected


def run_dataset(toy, texts, predictor=Text2TextPredictor, **options):
    ds = ray.data.from_items([{"row": i + 1, "text": text} for i, text in enumerate(texts)])
    out = generate_dataset(ds, toy, actors=2, batch_size=8, rows_per_task=25, predictor=predictor,
                           **SETTINGS, **options)
    return list(out.iter_rows())


def check_rows(records, texts, expected):
    assert [record["row"] for record in records] == list(range(1, len(texts) + 1))  # in order, each once
    assert [record["generated_text"] for record in records] == expected
    errors = [(record["row"], record["error"]) for record in records if record["error"]]
    assert errors == [(18, "the text is empty")]


def test_cluster_rows_equal_single_process_in_order(cluster, toy, texts_and_expected):
    texts, expected = texts_and_expected
    check_rows(run_dataset(toy, texts), texts, expected)


class DiesOnce(Text2TextPredictor):
    """The first actor to reach its second batch exits the process (as a crashed node would)."""

    def __init__(self, *args, marker, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker, self.calls = marker, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super().__call__(batch)


def test_a_killed_actor_loses_and_duplicates_nothing(cluster, toy, texts_and_expected, tmp_path):
    texts, expected = texts_and_expected
    marker = tmp_path / "died"
    records = run_dataset(toy, texts, predictor=DiesOnce, marker=str(marker))
    assert marker.exists()  # an actor did die mid-job
    check_rows(records, texts, expected)


def test_cli_ray_equals_local_cli(cluster, toy, texts_and_expected, tmp_path):
    texts, _ = texts_and_expected
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts[:60]))
    outputs = []
    for extra in ([], ["--ray", "--actors", "2"]):
        target = tmp_path / f"out{len(extra)}.jsonl"
        err = io.StringIO()
        code = cli_main(["run", "--model", toy, "--input", str(source), "--output", str(target), "--batch-size", "8",
                         "--max-new-tokens", "6", "--num-beams", "1", "--quiet", *extra], stderr=err)
        assert code == 3 and "row 18: field 'text' is empty" in err.getvalue()
        outputs.append(sorted(target.read_text().splitlines(), key=lambda line: json.loads(line)["row"]))
    # The local job writes each batch as it finishes, Ray in input order: the same records, by row.
    assert outputs[0] == outputs[1] and len(outputs[0]) == 60 and "error" in json.loads(outputs[0][17])


def test_example_reads_parquet_generates_and_writes(cluster, toy, texts_and_expected, tmp_path):
    import importlib.util

    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, expected = texts_and_expected
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"row": list(range(1, 41)), "text": texts[:40]}), source)
    spec = importlib.util.spec_from_file_location("ray_generate", TESTS.parent / "examples" / "ray_generate.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # One actor: on 2 CPUs, the parquet read and the JSON write need the other one.
    assert example.main(["--model", toy, "--input", str(source), "--output", str(tmp_path / "out"), "--actors", "1",
                         "--batch-size", "8", "--max-new-tokens", "6", "--num-beams", "1"]) == 0
    records = [json.loads(line) for path in sorted((tmp_path / "out").glob("*.json"))
               for line in path.read_text().splitlines()]
    assert sorted(record["row"] for record in records) == list(range(1, 41))
    assert {record["row"]: record["generated_text"] for record in records} == dict(zip(range(1, 41), expected[:40]))
