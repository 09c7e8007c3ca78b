"""Rows in and out of files for batch jobs (the CLI, Ray): streamed, numbered, checked.

Readers yield ``Row``s one at a time (a file or stdin is never read whole, except a JSON
list, which has to be). A row whose text is missing, null, not a string, empty or not
valid UTF-8 comes out with ``error`` set, naming its row number, never as a placeholder
text. An unclosed CSV quote swallows the rest of the file into one field, so it is an
error for the whole input, naming the row where the quote opened.

Writers take ``RowResult``s in input order and write each as it comes: to a stream
(flushed per row), to a JSON-lines file that is appended to (a killed job keeps every
finished row, ``resume=True`` carries on after them), or, for the other formats, to a
uniquely named temporary file created exclusively next to the output and renamed over
it at the end (nothing half-written; a symlink planted at a temporary name is never
followed).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from pathlib import Path

from .batch import Row

__all__ = ["FORMATS", "read_rows", "open_input", "text_error", "check_output", "open_output", "OutputWriter"]

FORMATS = ("pipe", "csv", "json", "jsonl")


# -- reading ----------------------------------------------------------------------------------

def open_input(path: str | None, stdin, fmt: str):
    """A text stream over --input (or stdin); bytes that are not UTF-8 survive as surrogates,
    so the row holding them fails rather than the whole job."""
    newline = "" if fmt == "csv" else None  # csv parses its own line ends (quoted newlines)
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--input {path}: no such file")
        return open(path, encoding="utf-8", errors="surrogateescape", newline=newline)
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # already text (io.StringIO in tests, or a wrapped stream)
        return stdin
    return io.TextIOWrapper(buffer, encoding="utf-8", errors="surrogateescape", newline=newline)


def read_rows(stream, fmt: str, column: str | None = None):
    """Yield the Rows of ``stream`` in ``fmt`` ("pipe", "csv", "json" or "jsonl")."""
    if fmt == "pipe":
        return _pipe_rows(stream)
    if fmt == "csv":
        return _csv_rows(stream, column)
    if fmt == "jsonl":
        return _jsonl_rows(stream, column)
    if fmt == "json":
        return _json_rows(stream, column)
    raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def text_error(value, field: str | None = None) -> str | None:
    """Why ``value`` cannot be generated from (None when it can)."""
    name = "the text" if field is None else f"field {field!r}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{name} is missing (null): expected a string"
    if not isinstance(value, str):
        return f"{name} is a {type(value).__name__} ({str(value)[:40]}): expected a string"
    if not value.strip():
        return f"{name} is empty"
    if any("\udc80" <= char <= "\udcff" for char in value):
        return f"{name} is not valid UTF-8"
    return None


def _pipe_rows(stream):
    for number, line in enumerate(stream, start=1):
        yield Row(number, line, error=text_error(line))  # newline kept, as transformers run passes it on


def _jsonl_rows(stream, column):
    number, pick = 0, _ColumnPick(column)
    for line_number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        number += 1
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(number, None, line_number, f"the line is not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        yield _item_row(item, pick, number, line_number)


def _json_rows(stream, column):
    try:
        items = json.load(stream)  # a JSON list cannot be streamed: JSON lines can
    except json.JSONDecodeError as exc:
        raise ValueError(f"--format json: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") \
            from None
    if not isinstance(items, list):
        raise ValueError(f"--format json: expected a JSON list of objects or strings, got {type(items).__name__}")
    pick = _ColumnPick(column)
    for number, item in enumerate(items, start=1):
        yield _item_row(item, pick, number, None)


class _ColumnPick:
    """The input field: --column, else chosen on the first object (its 'text', or its only field)."""

    def __init__(self, column):
        self.column = column

    def __call__(self, fields: list, where: str) -> str:
        if self.column is None:
            self.column = _pick_column(fields, None, where)
        return self.column


def _item_row(item, pick, number, line):
    if isinstance(item, dict):
        field = pick(list(item), where=f"row {number}")
        if field not in item:
            return Row(number, None, line, f"the object has no field {field!r} (fields: {sorted(item)})")
        return Row(number, item[field], line, text_error(item[field], field))
    if isinstance(item, str) or item is None:
        return Row(number, item, line, text_error(item))
    return Row(number, None, line, f"the item is a JSON {type(item).__name__}: expected a string or an object")


def _pick_column(columns: list, column: str | None, where: str) -> str:
    if column is not None:
        return column
    if "text" in columns:
        return "text"
    if len(columns) == 1:
        return columns[0]
    raise ValueError(f"input {where} has columns {sorted(columns)}: choose one with --column")


class _LineCounter:
    """Iterates a stream's lines, counting them (csv.reader's line_num is wrong after an error)."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self.stream)
        self.count += 1
        return line


def _csv_rows(stream, column):
    lines = _LineCounter(iter(stream))
    reader = csv.reader(lines, strict=True)
    header = next(reader, None)
    if header is None:
        return
    field = _pick_column(header, column, where="header")
    if field not in header:
        raise ValueError(f"--column {field}: not in the CSV header (columns: {header})")
    index, number = header.index(field), 0
    while True:
        start = lines.count + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            if "unexpected end of data" in str(exc):
                raise ValueError(f"--input: CSV row {number} (line {start}): a quote opened there is never closed, "
                                 f"so lines {start}-{lines.count} would be one field; no row after it was read") \
                    from None
            yield Row(number, None, start, f"the row is not valid CSV ({exc})")
            continue
        if not fields:
            continue  # a blank line
        number += 1
        if len(fields) != len(header):
            yield Row(number, None, start, f"the row has {len(fields)} fields but the header has {len(header)} {header}")
            continue
        yield Row(number, fields[index], start, text_error(fields[index], field))


# -- writing ----------------------------------------------------------------------------------

def check_output(path: str | None, overwrite: bool, resume: bool, fmt: str) -> None:
    """Everything about --output that can be checked before any generation."""
    if resume and (path is None or fmt != "jsonl"):
        raise ValueError("--resume needs --output with --format jsonl (JSON lines are appended row by row)")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite: choose one")
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
    if target.exists() and not (overwrite or resume):
        raise FileExistsError(f"--output {path} exists: pass --overwrite to replace it"
                              + (" or --resume to carry on after its rows" if fmt == "jsonl" else ""))


def rows_already_written(path: str) -> set:
    """The row numbers in a JSON-lines output from an earlier run; a torn last line is cut off."""
    target = Path(path)
    if not target.exists():
        return set()
    data = target.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):  # the job was killed while writing this line
        with open(target, "r+b") as handle:
            handle.truncate(keep)
    done = set()
    for line_number, line in enumerate(data[:keep].decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("row"), int):
            raise ValueError(f"--resume: {path} line {line_number} is not a row written by minibertgen "
                             "(a JSON object with a 'row' number); cannot tell which rows are done")
        done.add(record["row"])
    return done


def open_output(path: str, fmt: str, resume: bool):
    """(stream, finish): JSON lines go straight into ``path`` (appended); other formats into a
    new temporary file that ``finish(ok)`` renames over ``path`` (ok) or removes."""
    target = Path(path)
    if fmt == "jsonl":
        if resume and target.exists():
            descriptor = os.open(target, os.O_WRONLY | os.O_APPEND)
        else:
            if target.is_symlink() or target.exists():
                target.unlink()  # --overwrite: replace the name, never write through a link
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        return os.fdopen(descriptor, "w", encoding="utf-8", newline="\n"), lambda ok: None
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # fails on any planted name

    def finish(ok: bool) -> None:
        if ok:
            os.replace(temporary, target)  # replaces a link at ``path`` itself, not its target
        else:
            temporary.unlink(missing_ok=True)

    return os.fdopen(descriptor, "w", encoding="utf-8", newline=""), finish


class OutputWriter:
    """Writes RowResults in ``fmt`` to ``stream`` as they come; ``key``: the output field name."""

    def __init__(self, stream, fmt: str, key: str = "generated_text"):
        self.stream, self.fmt, self.key = stream, fmt, key
        self.count = 0  # records written
        self.csv = csv.writer(stream) if fmt == "csv" else None
        if fmt == "csv":
            self.csv.writerow(["input", key])
        elif fmt == "json":
            stream.write("[")

    def write(self, result) -> None:
        for record in result.records:
            self._write_record(result.row, record)
            self.count += 1
        self.stream.flush()

    def _write_record(self, row, record) -> None:
        text = row.text.rstrip("\n")
        if self.fmt == "pipe":
            self.stream.write(_single_line(str(next(iter(record.values())))) + "\n")
        elif self.fmt == "csv":
            self.csv.writerow([text, record[self.key]])
        elif self.fmt == "json":  # the same text json.dump gives the whole list
            self.stream.write((", " if self.count else "") + json.dumps(record, ensure_ascii=False))
        else:
            self.stream.write(json.dumps({"input": text, **record, "row": row.number}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("]\n")
        self.stream.flush()


def _single_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")
