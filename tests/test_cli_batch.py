"""`minibertgen run` as a batch job: streamed input, results written as they are done, bad rows
reported by number (issue 17 items 2, 6, 11; issue 19; issue 32: one record per row in every
format). Interruption, concurrency and foreign outputs: test_batch_faults.py."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_models import random_texts, with_tokenizer
from minibertgen.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["--max-new-tokens", "6", "--num-beams", "1"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return str(with_tokenizer("toy_bert2bert", tmp_path_factory.mktemp("cli") / "toy"))


def run(argv, stdin_text="", stdin=None, stdout=None):
    out, err = stdout or io.StringIO(), io.StringIO()
    code = cli_main(["run", *argv], stdin=stdin or io.StringIO(stdin_text), stdout=out, stderr=err)
    return code, (out.getvalue() if stdout is None else ""), err.getvalue()


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def csv_records(text):
    return list(csv.DictReader(io.StringIO(text)))


# -- bad rows (issue 17 item 6) --------------------------------------------------------------

def test_missing_csv_field_and_json_null_are_reported_never_generated(toy, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("text,id\ncopy cat,1\ncopy dog\n,3\nreverse egg fish,4\n")
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    assert code == 3  # finished, some rows failed
    records = csv_records(out)  # every row has its record, its input columns kept (the id joins back)
    assert [(r["row"], r["text"], r["id"]) for r in records] == [("1", "copy cat", "1"), ("2", "", ""), ("3", "", "3"),
                                                                 ("4", "reverse egg fish", "4")]
    assert [bool(r["generated_text"]) for r in records] == [True, False, False, True]
    assert records[1]["error"].startswith("the row has 1 fields but the header has 2")
    assert records[2]["error"] == "field 'text' is empty" and records[0]["error"] == records[3]["error"] == ""
    assert "row 2 (line 3): the row has 1 fields but the header has 2" in err
    assert "row 3 (line 4): field 'text' is empty" in err
    assert "2 rows generated, 0 skipped (already in the output), 2 failed" in err
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "copy cat"}\n\n{"text": null}\nnull\n{"other": "x", "more": 1}\n{"text": 5}\n')
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 3 and [r["row"] for r in records] == [1, 2, 3, 4, 5]
    assert "error" not in records[0] and all(r["generated_text"] is None and r["error"] for r in records[1:])
    assert "None" not in out
    assert "row 2 (line 3): field 'text' is missing (null)" in err
    assert "row 3 (line 4): the text is missing (null)" in err
    assert "row 4 (line 5): the object has no field 'text'" in err
    assert "row 5 (line 6): field 'text' is a int (5): expected a string" in err


def test_unclosed_csv_quote_names_its_row_and_loses_nothing_silently(toy, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('text\ncopy cat\n"copy dog\ncopy egg\ncopy fish\n')
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    assert code == 1
    assert "CSV row 2 (line 3): a quote opened there is never closed, so lines 3-5 would be one field" in err


def test_empty_and_non_utf8_lines_fail_alone(toy, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"copy cat\n\ncopy \xff dog\ncopy egg\n")
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    lines = [line.split("\t") for line in out.splitlines()]  # row<TAB>text, or row<TAB><TAB>error
    assert code == 3 and [line[0] for line in lines] == ["1", "2", "3", "4"]
    assert [len(line) for line in lines] == [2, 3, 3, 2]
    assert lines[1][2] == "the text is empty" and lines[2][2] == "the text is not valid UTF-8"
    assert "row 2: the text is empty" in err and "row 3: the text is not valid UTF-8" in err


def test_malformed_jsonl_line_is_named_by_its_own_line(toy, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "copy cat"}\n{"text": "copy dog"\n{"text": "copy egg"}\n')
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 3 and [r["row"] for r in records] == [1, 2, 3] and "error" in records[1]
    assert "row 2: the line is not valid JSON" in err


def test_fail_fast_stops_at_the_first_bad_row(toy, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "copy cat"}\n{"text": null}\n{"text": "copy dog"}\n')
    target = tmp_path / "out.jsonl"
    code, _, err = run(["--model", toy, "--input", str(source), "--output", str(target), "--fail-fast", *SETTINGS])
    assert code == 1 and "RowFailed: row 2: field 'text' is missing (null)" in err
    assert [r["row"] for r in jsonl(target)] == [1]  # what was done before it stays


def test_too_long_row_is_reported(toy):
    code, out, err = run(["--model", toy, *SETTINGS, "--batch-size", "2"], "copy cat\n" + "cat " * 80 + "\ncopy dog\n")
    assert code == 3 and sorted(line.split("\t")[0] for line in out.splitlines()) == ["1", "2", "3"]
    assert "row 2: the input has 82 tokens; the encoder takes at most 64" in err


# -- streaming and the output path (issue 17 item 11) -----------------------------------------

class EndlessInput(io.TextIOBase):
    """`yes "copy egg"`: lines without end, counting how many were read."""

    def __init__(self):
        self.lines_read = 0

    def readable(self):
        return True

    def __next__(self):
        self.lines_read += 1
        return "copy egg\n"

    def readline(self, size=-1):
        return next(self)


class StopAfter(io.StringIO):
    """stdout that interrupts the job (as Ctrl-C would) once it holds ``lines`` lines."""

    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def flush(self):
        if self.getvalue().count("\n") >= self.lines:
            raise KeyboardInterrupt


@pytest.mark.parametrize("batch_size", ["1", "4"])
def test_endless_stdin_is_streamed_and_results_come_as_done(toy, batch_size):
    stdin, stdout = EndlessInput(), StopAfter(3)
    code, _, err = run(["--model", toy, *SETTINGS, "--batch-size", batch_size, "--quiet"], stdin=stdin, stdout=stdout)
    assert code == 130 and "interrupted" in err
    assert stdout.getvalue().count("\n") == 3
    assert stdin.lines_read <= 32 * int(batch_size)  # one window ahead, not the whole stream


def test_output_path_is_checked_before_anything_loads(tmp_path):
    missing = tmp_path / "no_such_dir" / "out.txt"
    code, _, err = run(["--model", str(tmp_path / "no_model"), "--output", str(missing)], "copy cat\n")
    assert code == 1 and f"--output {missing}: the directory" in err and "does not exist" in err
    code, _, err = run(["--model", str(tmp_path / "no_model"), "--output", str(tmp_path)], "copy cat\n")
    assert code == 1 and "is a directory" in err


# -- temporary names (issue 17 item 2) --------------------------------------------------------

def test_planted_symlinks_at_temporary_names_are_never_followed(toy, tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "out.txt"
    for name in ("out.txt.tmp", ".out.txt.tmp", "config.json.tmp", "generation_config.tmp",
                 "out.txt.minibertgen.json"):  # the job file's name too: replaced, never written through
        os.symlink(victim, tmp_path / name)
    code, out, _ = run(["--model", toy, "--output", str(target), *SETTINGS], "copy cat\ncopy dog\n")
    assert code == 0 and out == ""
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and len(target.read_text().splitlines()) == 2
    assert not (tmp_path / "out.txt.minibertgen.json").is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]  # none left
    assert not (tmp_path / ".out.txt.minibertgen-lock").exists()  # the lock goes with the job

    import uuid

    class Fixed:
        hex = "0" * 32

    monkeypatch.setattr(uuid, "uuid4", lambda: Fixed())  # the attacker guessed the unique name
    os.symlink(victim, tmp_path / f".out.txt.minibertgen.json.{os.getpid()}.{'0' * 32}.tmp")
    code, _, err = run(["--model", toy, "--output", str(target), "--overwrite", *SETTINGS], "copy egg\n")
    assert code == 1 and "FileExistsError" in err  # exclusive creation refuses it
    assert victim.read_text() == "precious\n"
    os.symlink(victim, tmp_path / ".out.txt.minibertgen-lock")  # nor is a link at the lock's name followed
    code, _, err = run(["--model", toy, "--output", str(target), "--overwrite", *SETTINGS], "copy egg\n")
    assert code == 1 and victim.read_text() == "precious\n"


def test_overwrite_replaces_a_symlinked_jsonl_output_not_its_target(toy, tmp_path):
    victim = tmp_path / "victim.jsonl"
    victim.write_text("precious\n")
    target = tmp_path / "out.jsonl"
    os.symlink(victim, target)
    code, _, _ = run(["--model", toy, "--output", str(target), "--format", "jsonl", "--overwrite", *SETTINGS],
                     '"copy cat"\n')
    assert code == 0 and victim.read_text() == "precious\n"
    assert not target.is_symlink() and [r["row"] for r in jsonl(target)] == [1]


# -- formats, resume, summary (issue 19) ------------------------------------------------------

def write_inputs(path, fmt, texts):
    if fmt == "pipe":
        path.write_text("".join(text + "\n" for text in texts))
    elif fmt == "csv":
        path.write_text("text\n" + "".join(text + "\n" for text in texts))
    elif fmt == "json":
        path.write_text(json.dumps([{"text": text} for text in texts]))
    else:
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))


def records_by_row(text, fmt):
    """{row: the row's record} of an output in ``fmt``; each row must appear once."""
    if fmt == "pipe":
        items = [(line.split("\t")[0], line) for line in text.splitlines()]
    elif fmt == "csv":
        items = [(r["row"], r) for r in csv_records(text)]
    else:
        records = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
        items = [(r["row"], r) for r in records]
    rows = [int(row) for row, _ in items]
    assert len(rows) == len(set(rows)), "a row written twice"
    return {int(row): item for row, item in items}


@pytest.mark.parametrize("fmt", ["pipe", "csv", "json", "jsonl"])
def test_batched_cli_equals_unbatched_in_every_format(toy, tmp_path, fmt):
    texts = random_texts("toy_bert2bert", 30, seed=2)
    source = tmp_path / f"in.{fmt}"
    write_inputs(source, fmt, texts)
    outputs = []
    for batch_size in ("1", "8"):
        target = tmp_path / f"out_{batch_size}.{fmt}"
        code, _, err = run(["--model", toy, "--input", str(source), "--format", fmt, *SETTINGS,
                            "--batch-size", batch_size, "--output", str(target)])
        assert code == 0, err
        outputs.append(target.read_text())
    # Batches write rows as they finish (longest first within a window): the same records, by row.
    assert records_by_row(outputs[0], fmt) == records_by_row(outputs[1], fmt)
    assert sorted(records_by_row(outputs[1], fmt)) == list(range(1, 31))
    if fmt == "json":  # streamed, one object per line, yet one JSON list
        assert [r["row"] for r in json.loads(outputs[0])] == list(range(1, 31))
        assert outputs[0].startswith("[\n{") and outputs[0].endswith("}\n]\n")
    if fmt == "jsonl":
        assert [r["row"] for r in map(json.loads, outputs[0].splitlines())] == list(range(1, 31))
        assert [r["input"] for r in map(json.loads, outputs[0].splitlines())] == texts


def test_resume_refuses_what_it_cannot_resume(toy, tmp_path):
    code, _, err = run(["--model", toy, "--resume", "--output", str(tmp_path / "o.txt")], "copy cat\n")
    assert code == 1 and "--resume needs --output FILE and --input FILE" in err
    source = tmp_path / "in.jsonl"
    source.write_text('"copy cat"\n')
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"input": "x", "generated_text": "y", "row": 1}\n')
    code, _, err = run(["--model", toy, "--resume", "--input", str(source), "--output", str(foreign), *SETTINGS])
    assert code == 1 and "has no job file foreign.jsonl.minibertgen.json beside it" in err
    assert foreign.read_text() == '{"input": "x", "generated_text": "y", "row": 1}\n'


@pytest.mark.parametrize("argv, message", [
    (["--column", "body", *SETTINGS], "--column body: not a field of the first object"),
    (["--do-sample", "--top-p", "2", *SETTINGS], "top_p=2.0: expected a probability in [0, 1]"),
    ([], "max_length=257 exceeds the decoder's max_position_embeddings=64"),  # the pipeline's default 256
])
def test_a_mistake_of_the_whole_job_is_one_message_before_any_output(toy, tmp_path, argv, message):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": "copy cat", "id": i}) + "\n" for i in range(50)))
    code, out, err = run(["--model", toy, "--input", str(source), "--output", str(tmp_path / "out.jsonl"), *argv])
    assert code == 1 and message in err
    assert len(err.splitlines()) == 1  # once, not once per row
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no output, no lock, nothing to block a rerun


def test_the_output_format_follows_the_output_name(toy, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "copy cat"}\n{"text": "copy dog"}\n')
    target = tmp_path / "out.csv"
    code, _, err = run(["--model", toy, "--input", str(source), "--output", str(target), *SETTINGS])
    assert code == 0, err
    assert [(r["row"], r["input"]) for r in csv_records(target.read_text())] == [("1", "copy cat"), ("2", "copy dog")]
    code, _, err = run(["--model", toy, "--input", str(source), "--format", "jsonl", "--output",
                        str(tmp_path / "other.csv"), *SETTINGS])
    assert code == 1 and "--format jsonl but --output" in err and "names a csv file" in err
    assert not (tmp_path / "other.csv").exists()


def test_csv_output_columns_that_would_clash_and_an_output_that_is_the_input_are_refused(toy, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("text,error\ncopy cat,x\n")
    code, _, err = run(["--model", toy, "--input", str(source), "--output", str(tmp_path / "out.csv"), *SETTINGS])
    assert code == 1 and "the input has column(s) ['error'], which the CSV output adds itself" in err
    assert not (tmp_path / "out.csv").exists()
    code, _, err = run(["--model", toy, "--input", str(source), "--output", str(source), "--overwrite", *SETTINGS])
    assert code == 1 and "is the --input file" in err and source.read_text() == "text,error\ncopy cat,x\n"


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_lone_surrogate_fails_its_row_not_the_job(toy, tmp_path, fmt):
    source = tmp_path / f"in.{fmt}"
    items = ['{"text": "copy cat"}', '{"text": "copy \\ud800 dog", "note": "\\udfff"}', '{"text": "copy egg"}']
    source.write_text("[" + ",".join(items) + "]" if fmt == "json" else "\n".join(items) + "\n")
    target = tmp_path / f"out.{fmt}"
    code, _, err = run(["--model", toy, "--input", str(source), "--output", str(target), *SETTINGS])
    assert code == 3 and "row 2: field 'text' holds a lone surrogate (U+D800): not valid Unicode text" in err
    text = target.read_text(encoding="utf-8")  # valid UTF-8 throughout
    records = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3] and records[2]["generated_text"]
    assert records[1]["input"] == "copy \ud800 dog"  # kept: written as a JSON escape


def test_ray_without_ray_says_how_to_install(toy, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as when it is not installed
    code, _, err = run(["--model", toy, "--ray", *SETTINGS], "copy cat\n")
    assert code == 1 and 'pip install "minibertgen[ray]"' in err
