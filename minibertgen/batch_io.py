"""Rows in and out of files for batch jobs (the CLI, Ray): streamed, numbered, checked.

Readers yield ``Row``s one at a time (a file or stdin is never read whole, except a JSON
list, which has to be). A row whose text is missing, null, not a string, empty or not
valid UTF-8 comes out with ``error`` set, naming its row number, never as a placeholder
text. An unclosed CSV quote swallows the rest of the file into one field, so it is an
error for the whole input, naming the row where the quote opened.

A --column that the first object lacks, or that the CSV header does not have, is an error
of the job, raised when the first row is read. Writing the results: batch_output.py.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .batch import Row

__all__ = ["FORMATS", "read_rows", "open_input", "text_error"]

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


def read_rows(stream, fmt: str, column: str | None = None, columns: list | None = None):
    """Yield the Rows of ``stream`` in ``fmt`` ("pipe", "csv", "json" or "jsonl"); a CSV
    header, once read, is put in ``columns`` (a list)."""
    if fmt == "pipe":
        return _pipe_rows(stream)
    if fmt == "csv":
        return _csv_rows(stream, column, [] if columns is None else columns)
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
    surrogate = next((char for char in value if "\ud800" <= char <= "\udfff"), None)
    if surrogate is not None and "\udc80" <= surrogate <= "\udcff":
        return f"{name} is not valid UTF-8"
    if surrogate is not None:  # from a JSON escape such as "\ud800": no character, cannot be encoded
        return f"{name} holds a lone surrogate (U+{ord(surrogate):04X}): not valid Unicode text"
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
    """The input field: --column, else chosen on the first object (its 'text', or its only field).
    A --column that the first object lacks is a mistake of the job, not of every row."""

    def __init__(self, column):
        self.column, self.checked = column, False

    def __call__(self, fields: list, where: str) -> str:
        if not self.checked and self.column is not None and self.column not in fields:
            raise ValueError(f"--column {self.column}: not a field of the first object ({where}; fields: "
                             f"{sorted(fields)})")
        self.checked = True
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


def _csv_rows(stream, column, columns: list):
    lines = _LineCounter(iter(stream))
    reader = csv.reader(lines, strict=True)
    header = next(reader, None)
    if header is None:
        return
    columns[:] = header
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
        yield Row(number, fields[index], start, text_error(fields[index], field), tuple(fields))
