"""Batch jobs under faults (issue 32): killed (SIGKILL, SIGINT) at seeded random bytes of their
output and resumed, two writers on one output, foreign, corrupt and symlinked outputs.

What must hold: every input row ends with exactly one record (none lost, none twice), a
resumed output equals an uninterrupted one, a file the job did not write is refused and left
byte for byte as it was, and nothing beside the output is touched.  Kills are exact, not
timed: a forked child runs the CLI with a fault at the N-th byte of its output (the write
that crosses it is cut there, then the signal is sent), so a loaded machine changes nothing.
"""
import io
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from batch_models import random_texts, with_tokenizer
from minibertgen import batch_job
from minibertgen.cli import main as cli_main
from test_cli_batch import SETTINGS, records_by_row, write_inputs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="fork and signals")
ROWS = 40


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return str(with_tokenizer("toy_bert2bert", tmp_path_factory.mktemp("faults") / "toy"))


def run(argv, stdin_text=""):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["run", *argv], stdin=io.StringIO(stdin_text), stdout=out, stderr=err)
    return code, err.getvalue()


def job(toy, source, target, *extra):
    return ["--model", toy, "--input", str(source), "--output", str(target), *SETTINGS, "--quiet", *extra]


def faulty_writes(at_byte, signum=None, hold=None):
    """batch_job._write_all that stops at byte ``at_byte`` of the output: cuts the write crossing
    it there and sends ``signum`` to this process; or, with ``hold`` (a path), waits there until
    ``hold`` exists."""
    real, written = batch_job._write_all, [0]

    def write(descriptor, data):
        if written[0] + len(data) >= at_byte:
            cut = at_byte - written[0]
            real(descriptor, data[:cut])
            written[0] = at_byte + 1  # the fault fires once
            if hold is not None:
                Path(str(hold) + ".reached").touch()
                while not Path(hold).exists():
                    time.sleep(0.01)
                real(descriptor, data[cut:])
                return
            os.kill(os.getpid(), signum)
            time.sleep(5)  # SIGKILL never returns; SIGINT raises KeyboardInterrupt in here
        written[0] += len(data)
        real(descriptor, data)

    return write


def in_child(argv, **fault):
    """Run the CLI in a forked child with a fault (faulty_writes' arguments); its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            batch_job._write_all = faulty_writes(**fault)
            code = cli_main(["run", *argv], stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
        finally:
            os._exit(code)
    return pid


def wait(pid) -> int:
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def inputs(tmp_path, fmt, count=ROWS):
    source = tmp_path / f"in.{fmt}"
    write_inputs(source, fmt, random_texts("toy_bert2bert", count, seed=11))
    return source


def snapshot(directory, skip=()):
    """{name: bytes} of every file in ``directory`` but those in ``skip``."""
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def references(toy, tmp_path_factory):
    """The uninterrupted output of each format (batch size 1): {fmt: text}."""
    out = {}
    for fmt in ("pipe", "csv", "json", "jsonl"):
        directory = tmp_path_factory.mktemp(f"reference_{fmt}")
        target = directory / f"out.{'tsv' if fmt == 'pipe' else fmt}"
        assert run(job(toy, inputs(directory, fmt), target))[0] == 0
        out[fmt] = target.read_text()
    return out


# -- killed, then resumed ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pipe", "csv", "json", "jsonl"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_killed_at_random_bytes_then_resumed_equals_an_uninterrupted_run(toy, tmp_path, references, fmt, signum):
    reference = references[fmt].encode()
    rng = random.Random(f"{fmt}-{signum}")
    for kill_at in sorted(rng.sample(range(1, len(reference)), 2)):
        directory = tmp_path / str(kill_at)
        directory.mkdir()
        source = inputs(directory, fmt)
        target = directory / f"out.{'tsv' if fmt == 'pipe' else fmt}"
        before = snapshot(directory)
        status = wait(in_child(job(toy, source, target), at_byte=kill_at, signum=signum))
        assert status == (-signal.SIGKILL if signum == signal.SIGKILL else 130)
        assert target.read_bytes() == reference[:kill_at]  # finished rows kept, then the torn one
        code, err = run(job(toy, source, target, "--resume"))
        assert code == 0, err
        assert target.read_text() == references[fmt], kill_at  # no row lost, none twice, in order
        assert snapshot(directory, skip={target.name, target.name + ".minibertgen.json"}) == before
        assert not list(directory.glob(".*"))  # no lock, no temporary left


def test_killed_batched_job_resumes_to_every_row_once(toy, tmp_path, references):
    source = inputs(tmp_path, "jsonl")
    target = tmp_path / "out.jsonl"
    status = wait(in_child(job(toy, source, target, "--batch-size", "4"), at_byte=1500, signum=signal.SIGKILL))
    assert status == -signal.SIGKILL
    code, err = run(job(toy, source, target, "--batch-size", "4", "--resume"))
    assert code == 0, err
    assert records_by_row(target.read_text(), "jsonl") == records_by_row(references["jsonl"], "jsonl")


def test_killed_job_keeps_finished_rows_and_resume_completes_it(toy, tmp_path, references):
    """Issue 19's test, now exact: killed in the middle of row 21's record, not after a sleep."""
    source = inputs(tmp_path, "jsonl")
    target = tmp_path / "out.jsonl"
    full = references["jsonl"].splitlines(keepends=True)
    at_byte = len("".join(full[:20])) + len(full[20]) // 2
    assert wait(in_child(job(toy, source, target), at_byte=at_byte, signum=signal.SIGKILL)) == -signal.SIGKILL
    kept = target.read_text().splitlines(keepends=True)
    assert kept[:20] == full[:20] and kept[20] == full[20][:len(full[20]) // 2]  # 20 rows, then a torn line
    code, err = run(job(toy, source, target, "--resume"))
    assert code == 0 and target.read_text() == references["jsonl"]
    code, err = run(job(toy, source, target, "--resume"))
    assert code == 0 and target.read_text() == references["jsonl"]  # a finished output: nothing to do


def test_summary_counts_the_rows_a_resume_skipped(toy, tmp_path, references):
    source = inputs(tmp_path, "jsonl")
    target = tmp_path / "out.jsonl"
    at_byte = len("".join(references["jsonl"].splitlines(keepends=True)[:15]))
    assert wait(in_child(job(toy, source, target), at_byte=at_byte, signum=signal.SIGKILL)) == -signal.SIGKILL
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", *job(toy, source, target, "--resume")]
    argv.remove("--quiet")
    assert cli_main(argv, stdin=io.StringIO(), stdout=out, stderr=err) == 0
    assert f"{ROWS - 15} rows generated, 15 skipped (already in the output), 0 failed" in err.getvalue()


# -- two writers ------------------------------------------------------------------------------

@pytest.mark.parametrize("first, second", [("fresh", "--resume"), ("fresh", "--overwrite"), ("--resume", "--resume")])
def test_a_second_job_on_the_same_output_is_refused_while_the_first_runs(toy, tmp_path, references, first, second):
    source = inputs(tmp_path, "jsonl")
    target = tmp_path / "out.jsonl"
    go = tmp_path / "go"
    extra = []
    if first == "--resume":  # the case: two --resume runs of one killed job
        assert wait(in_child(job(toy, source, target), at_byte=400, signum=signal.SIGKILL)) == -signal.SIGKILL
        extra = ["--resume"]
    pid = in_child(job(toy, source, target, *extra), at_byte=300, hold=go)
    try:
        deadline = time.monotonic() + 60
        while not Path(str(go) + ".reached").exists():
            assert time.monotonic() < deadline, "the first job never wrote"
            time.sleep(0.01)
        before = target.read_bytes()
        code, err = run(job(toy, source, target, second))
        assert code == 1 and "BusyError" in err and "another writer" in err
        assert target.read_bytes() == before  # the loser touched nothing
    finally:
        go.touch()
    assert wait(pid) == 0
    assert target.read_text() == references["jsonl"]


# -- outputs the job did not write --------------------------------------------------------------

def refused_unchanged(toy, source, target, message):
    directory = target.parent
    lock = {f".{target.name}.minibertgen-lock"}  # the output's own lock, which a killed job leaves behind
    before = snapshot(directory, skip=lock)
    code, err = run(job(toy, source, target, "--resume"))
    assert code == 1 and message in err, err
    assert snapshot(directory, skip=lock) == before  # not a byte changed, nothing created
    return err


def test_a_foreign_file_is_refused_and_never_truncated(toy, tmp_path):
    source = inputs(tmp_path, "jsonl")
    target = tmp_path / "out.jsonl"
    target.write_bytes(b'{"input": "x", "generated_text": "y", "row": 1}\n{"row": true, "no final newline": 1}')
    refused_unchanged(toy, source, target, "has no job file out.jsonl.minibertgen.json")


def test_a_symlink_at_the_output_is_refused_and_its_target_untouched(toy, tmp_path, references):
    source = inputs(tmp_path, "jsonl")
    real = tmp_path / "real.jsonl"
    assert run(job(toy, source, real))[0] == 0
    real.write_text(references["jsonl"][:500])  # a finished job's file, shortened: resumable itself
    os.symlink(real, tmp_path / "out.jsonl")
    refused_unchanged(toy, source, tmp_path / "out.jsonl", "is a symlink")


def test_a_replaced_copied_or_corrupted_output_is_refused(toy, tmp_path, references):
    source = inputs(tmp_path, "jsonl")
    target = tmp_path / "out.jsonl"
    assert run(job(toy, source, target))[0] == 0
    lines = references["jsonl"].splitlines(keepends=True)
    for content, message in [
        ("".join(lines[:5]) + '{"input": "x", "generated_text": "y", "row": true}\n', "'row' is True"),
        ("".join(lines[:5]) + lines[3], "line 6: row 4 again (it was at line 4)"),
        ("".join(lines[:3]) + "not json\n" + "".join(lines[3:6]), "line 4 is not valid JSON"),
        ("".join(lines[:5]) + '{"input": "x", "generated_text": "y", "row": 0}\n', "'row' is 0"),
    ]:
        with open(target, "r+") as handle:  # edited in place: the same file, so only its records tell
            handle.truncate(0)
            handle.write(content)
        refused_unchanged(toy, source, target, message)
    copy = tmp_path / "copy.jsonl"
    copy.write_text("".join(lines[:5]))
    os.replace(copy, target)  # another file under the name
    refused_unchanged(toy, source, target, "is not the file its job file out.jsonl.minibertgen.json describes")


def test_another_input_or_other_settings_are_refused(toy, tmp_path, references):
    source = inputs(tmp_path, "jsonl")
    target = tmp_path / "out.jsonl"
    assert wait(in_child(job(toy, source, target), at_byte=900, signum=signal.SIGKILL)) == -signal.SIGKILL
    other = tmp_path / "other.jsonl"
    other.write_text(source.read_text() + '{"text": "copy cat"}\n')
    refused_unchanged(toy, other, target, "its input differ")
    argv = job(toy, source, target, "--resume")
    argv[argv.index("6")] = "5"  # --max-new-tokens 5
    before = target.read_bytes()
    code, err = run(argv)
    assert code == 1 and "max_new_tokens (was 6, now 5)" in err and target.read_bytes() == before
    assert run(job(toy, source, target, "--resume"))[0] == 0
    assert target.read_text() == references["jsonl"]
