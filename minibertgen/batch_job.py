"""A batch job's output file: proof of its origin, one writer, a resume that loses, repeats and
mixes nothing.

A job writing ``--output FILE`` (batch_output.py says what its records look like):

* holds an exclusive lock (``.FILE.minibertgen-lock`` beside it, file_lock.py) from before it
  reads FILE until it is done: a second job on the same output is refused at once, and a
  killed job's lock goes with it;
* creates FILE itself -- exclusively, after ``--overwrite`` removed what was there (a symlink
  is removed, never followed) -- and writes beside it the job file ``FILE.minibertgen.json``:
  FILE's identity (device and inode), the SHA-256 of the input, the records per row and every
  setting that shapes the results (model, tokenizer, task, dtype, generation flags, seed,
  formats, column);
* writes each row's records in one write as soon as its batch is done: a kill tears at most
  that row.

``--resume`` first reads everything -- the job file, FILE's identity, the input's fingerprint,
the settings, every record (whole, each row once, with all its records) -- and refuses,
changing nothing, a file it did not write (no job file, another file under the name, a
symlink), another input, other settings, or records it cannot account for.  Only then does it
cut off a row the kill tore and append the rows still missing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path

from .batch_output import Layout, StreamOutput
from .checkpoint.saving import text_writer, write_atomically
from .file_lock import exclusive_lock

__all__ = ["JOB_FILE_SUFFIX", "check_output", "input_fingerprint", "job_file_path", "open_job_output"]

JOB_FILE_SUFFIX = ".minibertgen.json"
_VERSION = 1
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)  # no CRLF on Windows
_UNCHANGED = "nothing was changed"


def job_file_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + JOB_FILE_SUFFIX)


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.minibertgen-lock")


def check_output(path: str | None, overwrite: bool, resume: bool, input_path: str | None) -> None:
    """Everything about --output that can be checked before the model loads."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite: choose one")
    if resume and (path is None or input_path is None):
        raise ValueError("--resume needs --output FILE and --input FILE (stdin cannot be checked against "
                         "the input the output was made from)")
    if path is None:
        return
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"--output {path}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"--output {path}: the directory {str(parent)!r} is not writable")
    if target.is_dir():
        raise ValueError(f"--output {path} is a directory: expected a file name")
    if input_path is not None and target.exists() and os.path.samefile(input_path, target):
        raise ValueError(f"--output {path} is the --input file: the results would overwrite the rows they come "
                         "from; choose another --output")
    if (target.exists() or target.is_symlink()) and not (overwrite or resume):
        raise FileExistsError(f"--output {path} exists: pass --overwrite to replace it or --resume to carry on "
                              "after its rows")


def input_fingerprint(path) -> dict:
    """{"sha256": ..., "bytes": ...} of the input file (read in 1 MiB blocks)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "bytes": size}


def _read_all(descriptor: int) -> bytes:
    """The whole file from its start (appends still go to its end: O_APPEND)."""
    os.lseek(descriptor, 0, os.SEEK_SET)
    blocks = []
    while block := os.read(descriptor, 1 << 24):
        blocks.append(block)
    return b"".join(blocks)


def _write_all(descriptor: int, data: bytes) -> None:
    """Every byte of ``data`` at the end of the file (tests put faults here)."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


class FileOutput(StreamOutput):
    """Records appended to the job's file (``descriptor``), one write per row; ``done``: rows
    that already have their records (a resumed job's)."""

    def __init__(self, descriptor: int, layout: Layout, count: int, header: bool, done: set):
        self.descriptor, self.done = descriptor, done
        super().__init__(None, layout, count, header)

    def _emit(self, text: str) -> None:
        if text:
            _write_all(self.descriptor, text.encode("utf-8"))

    def close(self, complete: bool) -> None:
        super().close(complete)
        os.fsync(self.descriptor)


@contextlib.contextmanager
def open_job_output(path, layout: Layout, identity: dict, resume: bool, overwrite: bool):
    """The job's FileOutput, under the output's lock, for the ``with`` block. ``identity``:
    {"input", "format", "records_per_row", "settings"} of this job."""
    target = Path(path)
    with exclusive_lock(lock_path(target), f"--output {path}", remove=True,
                        hint=" (wait for the other job to end; then --resume carries on after its rows)"):
        exists = target.exists() or target.is_symlink()
        output = _resumed(target, layout, identity) if resume and exists else \
            _created(target, layout, identity, replace=overwrite)
        try:
            yield output
        finally:
            os.close(output.descriptor)


def _created(target: Path, layout: Layout, identity: dict, replace: bool) -> FileOutput:
    if replace and (target.exists() or target.is_symlink()):
        target.unlink()  # a link goes, never its target
    descriptor = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    try:
        status = os.fstat(descriptor)
        record = {"minibertgen_batch_output": _VERSION, "output": target.name,
                  "file": {"device": status.st_dev, "inode": status.st_ino}, **identity}
        write_atomically(job_file_path(target), text_writer(json.dumps(record, indent=1) + "\n"))
        return FileOutput(descriptor, layout, 0, header=True, done=set())
    except BaseException:
        os.close(descriptor)
        raise


def _resumed(target: Path, layout: Layout, identity: dict) -> FileOutput:
    before = os.stat(target, follow_symlinks=False)
    if stat.S_ISLNK(before.st_mode) or not stat.S_ISREG(before.st_mode):
        raise ValueError(f"--resume: --output {target} is {'a symlink' if stat.S_ISLNK(before.st_mode) else 'not a file'}"
                         f"; minibertgen resumes only a file it created itself and never writes through a link; "
                         f"{_UNCHANGED}")
    _check_job_file(target, identity, before)
    descriptor = os.open(target, os.O_RDWR | os.O_APPEND | _NOFOLLOW)
    try:
        if not os.path.samestat(os.fstat(descriptor), before):
            raise ValueError(f"--resume: --output {target} was replaced while it was checked; {_UNCHANGED}")
        data = _read_all(descriptor)
        try:
            done, keep, count = _resume_state(layout.parse(data), identity["records_per_row"])
        except ValueError as exc:
            raise ValueError(f"--resume: --output {target}: {exc}; it is not an output this job can continue, "
                             f"and {_UNCHANGED} (--overwrite replaces it)") from None
        if keep < len(data):  # the row a kill tore (or a JSON list's "]"): this job's own bytes
            os.ftruncate(descriptor, keep)
        return FileOutput(descriptor, layout, count, header=keep == 0, done=done)
    except BaseException:
        os.close(descriptor)
        raise


def _check_job_file(target: Path, identity: dict, status) -> None:
    job = job_file_path(target)
    refuse = f"--resume: --output {target}"
    try:
        recorded = json.loads(job.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{refuse} has no job file {job.name} beside it, so nothing shows that minibertgen "
                         f"wrote it, nor from which input and settings; {_UNCHANGED} (--overwrite replaces it, "
                         "or choose another --output)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{refuse}: its job file {job.name} is not readable JSON ({exc}); {_UNCHANGED}") from None
    if not isinstance(recorded, dict) or recorded.get("minibertgen_batch_output") != _VERSION:
        raise ValueError(f"{refuse}: {job.name} is not a minibertgen job file (version {_VERSION}); {_UNCHANGED}")
    if recorded.get("file") != {"device": status.st_dev, "inode": status.st_ino}:
        raise ValueError(f"{refuse} is not the file its job file {job.name} describes (it was replaced, copied "
                         f"or restored since that job wrote it); {_UNCHANGED} (--overwrite replaces it)")
    differ = [name for name in ("input", "format", "records_per_row") if recorded.get(name) != identity[name]]
    theirs = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
    differ += [f"{name} (was {theirs.get(name)!r}, now {value!r})" for name, value in identity["settings"].items()
               if theirs.get(name) != value]
    differ += [f"{name} (was {value!r}, now not set)" for name, value in theirs.items()
               if name not in identity["settings"]]
    if differ:
        raise ValueError(f"{refuse} was made by another job: its {', '.join(differ)} differ from this one's; "
                         f"resuming would mix two jobs' results, so {_UNCHANGED}")


def _resume_state(parsed, per_row: int):
    """(rows done, bytes to keep, records kept) of a parsed output; ValueError when a row is
    repeated or short of records anywhere but at the end (where a kill tore it)."""
    groups, first_line = [], {}  # groups: [row, failed, records, start offset, line]
    for row, failed, start, _, line in parsed.records:
        if groups and groups[-1][0] == row and not failed and not groups[-1][1]:
            groups[-1][2] += 1
            continue
        if row in first_line:
            raise ValueError(f"line {line}: row {row} again (it was at line {first_line[row]})")
        first_line[row] = line
        groups.append([row, failed, 1, start, line])
    keep = parsed.complete_end if parsed.closed is None else parsed.closed
    count = len(parsed.records)
    for index, (row, failed, records, start, line) in enumerate(groups):
        if failed or records == per_row:
            continue
        if records > per_row or index < len(groups) - 1 or parsed.closed is not None:
            raise ValueError(f"line {line}: row {row} has {records} records; this job writes {per_row} per row")
        keep, count = start, count - records  # the last row, torn between its records: done again
        del first_line[row]
    return set(first_line), keep, count
