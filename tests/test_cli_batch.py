"""`minibertgen run` as a batch job: streamed input, results written as they are done, bad rows
reported by number (issue 17 items 2, 6, 11; issue 19)."""
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


# -- bad rows (issue 17 item 6) --------------------------------------------------------------

def test_missing_csv_field_and_json_null_are_reported_never_generated(toy, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("text,id\ncopy cat,1\ncopy dog\n,3\nreverse egg fish,4\n")
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    assert code == 3  # finished, some rows failed
    assert [line.split(",")[0] for line in out.splitlines()] == ["input", "copy cat", "reverse egg fish"]
    assert "row 2 (line 3): the row has 1 fields but the header has 2" in err
    assert "row 3 (line 4): field 'text' is empty" in err
    assert "2 rows written, 0 skipped (already in the output), 2 failed" in err
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "copy cat"}\n\n{"text": null}\nnull\n{"other": "x", "more": 1}\n{"text": 5}\n')
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    assert code == 3 and [r["row"] for r in map(json.loads, out.splitlines())] == [1]
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
    assert code == 3 and len(out.splitlines()) == 2
    assert "row 2: the text is empty" in err and "row 3: the text is not valid UTF-8" in err


def test_malformed_jsonl_line_is_named_by_its_own_line(toy, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "copy cat"}\n{"text": "copy dog"\n{"text": "copy egg"}\n')
    code, out, err = run(["--model", toy, "--input", str(source), *SETTINGS])
    assert code == 3 and [r["row"] for r in map(json.loads, out.splitlines())] == [1, 3]
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
    assert code == 3 and len(out.splitlines()) == 2
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
    for name in ("out.txt.tmp", ".out.txt.tmp", "config.json.tmp", "generation_config.tmp"):
        os.symlink(victim, tmp_path / name)
    code, out, _ = run(["--model", toy, "--output", str(target), *SETTINGS], "copy cat\ncopy dog\n")
    assert code == 0 and out == ""
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and len(target.read_text().splitlines()) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]  # none left

    import uuid

    class Fixed:
        hex = "0" * 32

    monkeypatch.setattr(uuid, "uuid4", lambda: Fixed())  # the attacker guessed the unique name
    os.symlink(victim, tmp_path / f".out.txt.{os.getpid()}.{'0' * 32}.tmp")
    code, _, err = run(["--model", toy, "--output", str(target), "--overwrite", *SETTINGS], "copy egg\n")
    assert code == 1 and "FileExistsError" in err  # exclusive creation refuses it
    assert victim.read_text() == "precious\n" and len(target.read_text().splitlines()) == 2


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
    assert outputs[0] == outputs[1]
    if fmt == "json":  # streamed, yet the same text json.dump writes for the whole list
        assert outputs[0] == json.dumps(json.loads(outputs[0]), ensure_ascii=False) + "\n"
        assert len(json.loads(outputs[0])) == 30
    if fmt == "jsonl":
        assert [r["row"] for r in map(json.loads, outputs[0].splitlines())] == list(range(1, 31))
        assert [r["input"] for r in map(json.loads, outputs[0].splitlines())] == texts


def test_killed_job_keeps_finished_rows_and_resume_completes_it(toy, tmp_path):
    texts = random_texts("toy_bert2bert", 200, seed=4)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    full = tmp_path / "full.jsonl"
    code, _, _ = run(["--model", toy, "--input", str(source), "--output", str(full), *SETTINGS, "--batch-size", "4"])
    assert code == 0 and [r["row"] for r in jsonl(full)] == list(range(1, 201))

    target = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    job = subprocess.Popen([sys.executable, "-m", "minibertgen", "run", "--model", toy, "--input", str(source),
                            "--output", str(target), *SETTINGS, "--quiet"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (not target.exists() or target.read_text().count("\n") < 20) and job.poll() is None:
        assert time.monotonic() < deadline, "the job wrote nothing"
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    with open(target, "a") as handle:
        handle.write('{"input": "torn')  # a line the kill cut in half
    kept = target.read_text().splitlines()[:-1]
    assert 20 <= len(kept) < 200
    assert kept == full.read_text().splitlines()[:len(kept)]  # finished rows, in order, intact

    code, _, err = run(["--model", toy, "--input", str(source), "--output", str(target), "--resume", *SETTINGS])
    assert code == 0
    assert f"{200 - len(kept)} rows written, {len(kept)} skipped" in err
    assert target.read_text() == full.read_text()


def test_resume_refuses_what_it_cannot_resume(toy, tmp_path):
    code, _, err = run(["--model", toy, "--resume", "--output", str(tmp_path / "o.txt")], "copy cat\n")
    assert code == 1 and "--resume needs --output with --format jsonl" in err
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"input": "x", "generated_text": "y"}\n')
    code, _, err = run(["--model", toy, "--resume", "--format", "jsonl", "--output", str(foreign)], '"copy cat"\n')
    assert code == 1 and "line 1 is not a row written by minibertgen" in err


def test_ray_without_ray_says_how_to_install(toy, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as when it is not installed
    code, _, err = run(["--model", toy, "--ray", *SETTINGS], "copy cat\n")
    assert code == 1 and 'pip install "minibertgen[ray]"' in err
