"""Batch-job results written out: one record per input row, each naming its row, in four formats.

Every input row gets exactly one record -- its result, or its error -- and every record
carries the row's number, so rows can be written as soon as their batch is done (in the
order they finish) and an output can be checked for rows missing or repeated:

    jsonl  {"input": ..., "generated_text": ..., "row": N}
           {"input": ..., "generated_text": null, "error": "why", "row": N}
    json   the same objects in a JSON list, one per line: "[", "{...}", ",{...}", ..., "]"
    csv    row, the input's CSV columns (else "input"), generated_text, error (empty when none)
    pipe   N<TAB>generated text,  or  N<TAB><TAB>error   (each on one line)

(``generated_text`` is ``summary_text`` / ``translation_text`` for those tasks; a row with
num_return_sequences > 1 has that many records, one after the other.)  Text that cannot be
encoded as UTF-8 (a lone surrogate) is written with a backslash escape, never dropped and
never a reason to stop.  ``Layout`` makes the text of a row's records and reads them back
(batch_job.py checks an output with it before resuming); ``StreamOutput`` writes to stdout.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass

__all__ = ["Layout", "StreamOutput", "OUTPUT_FORMATS", "format_of_name", "result_field", "ParsedOutput"]

OUTPUT_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "pipe"}
_ROW = re.compile(r"[1-9][0-9]{0,17}")  # a row number as written: no sign, no leading zero


def format_of_name(name: str) -> str | None:
    """The output format a file name's extension says (None when it says none)."""
    suffix = name[name.rfind("."):].lower() if "." in name else ""
    return OUTPUT_FORMATS.get(suffix)


def result_field(task: str) -> str:
    """The field a result is written under for ``task``: generated_text, summary_text, ..."""
    from .pipeline import SUPPORTED_TASKS, _task_name

    return f"{SUPPORTED_TASKS[_task_name(task)]}_text"


def _encodable(text: str) -> str:
    """``text`` with whatever UTF-8 cannot hold (lone surrogates) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _single_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ").replace("\t", " ")


@dataclass
class ParsedOutput:
    """What an existing output holds: ``records`` [(row, failed, start, end, line)] in file order
    (byte offsets), ``complete_end`` (bytes up to the last whole record or header), ``closed``
    (a JSON list's "]" was found at this offset, else None)."""

    records: list
    complete_end: int
    closed: int | None = None


class Layout:
    """One output format: ``fmt``; ``key``: the result field; ``columns``: the CSV input's header."""

    def __init__(self, fmt: str, key: str, columns: list | None = None):
        self.fmt, self.key = fmt, key
        self.columns = list(columns) if columns else None
        if fmt == "csv":
            names = self.columns or ["input"]
            clash = sorted({"row", key, "error"} & set(names))
            if clash:
                raise ValueError(f"the input has column(s) {clash}, which the CSV output adds itself "
                                 f"(row, {key}, error): rename them in the input")
            self.csv_header = ["row", *names, key, "error"]

    def header(self) -> str:
        if self.fmt == "csv":
            return _csv_line(self.csv_header)
        return "[\n" if self.fmt == "json" else ""

    def footer(self) -> str:
        return "]\n" if self.fmt == "json" else ""

    def text(self, result, count: int) -> str:
        """The records of one RowResult; ``count``: records already in the output (JSON commas)."""
        row = result.row
        if result.error is not None:
            pairs = [(None, result.error)]
        else:
            pairs = [(record[self.key], None) for record in result.records]
        parts = []
        for text, error in pairs:
            parts.append(self._record(row, text, error, first=count == 0))
            count += 1
        return _encodable("".join(parts))

    def _record(self, row, text, error, first: bool) -> str:
        if self.fmt == "pipe":
            return f"{row.number}\t{_single_line(text)}\n" if error is None else \
                f"{row.number}\t\t{_single_line(error)}\n"
        if self.fmt == "csv":
            return _csv_line([row.number, *self._input_fields(row), "" if text is None else text, error or ""])
        record = {"input": row.text.rstrip("\n") if isinstance(row.text, str) else None, self.key: text}
        if error is not None:
            record["error"] = error
        record["row"] = row.number
        line = json.dumps(record, ensure_ascii=False) + "\n"
        return line if self.fmt == "jsonl" or first else "," + line

    def _input_fields(self, row) -> list:
        if self.columns is None:
            return [row.text.rstrip("\n") if isinstance(row.text, str) else ""]
        if row.fields is not None and len(row.fields) == len(self.columns):
            return list(row.fields)
        return [""] * len(self.columns)  # the row's error says why its fields are not there

    # -- reading an output back ---------------------------------------------------------------
    def parse(self, data: bytes) -> ParsedOutput:
        """The records of ``data`` (an output of this layout); ValueError naming the first line
        that is not one. A torn end (no line end, or an open CSV quote) is left out."""
        header = self.header().encode("utf-8")
        if not data.startswith(header):
            if header.startswith(data):  # killed while writing the header: nothing in it yet
                return ParsedOutput([], 0)
            raise ValueError("line 1 is not the header this job writes " + repr(header.decode()[:200]))
        parsed = ParsedOutput([], len(header))
        line_number = header.count(b"\n")
        for start, end in _chunks(data, len(header), quoted=self.fmt == "csv"):
            line_number += 1
            try:
                text = data[start:end].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"line {line_number} is not valid UTF-8") from None
            if parsed.closed is not None:
                raise ValueError(f"line {line_number}: text after the list's closing ']'")
            if self.fmt == "json" and text == "]\n":
                parsed.closed, parsed.complete_end = start, end
                continue
            row, failed = self._parse_record(text, first=not parsed.records, line=line_number)
            parsed.records.append((row, failed, start, end, line_number))
            parsed.complete_end = end
            line_number += text.count("\n") - 1
        return parsed

    def _parse_record(self, text: str, first: bool, line: int):
        where = f"line {line}"
        if self.fmt == "pipe":
            fields = text[:-1].split("\t")
            if len(fields) == 2 or (len(fields) == 3 and fields[1] == "" and fields[2]):
                return _row_number(fields[0], where), len(fields) == 3
            raise ValueError(f"{where} is not 'row<TAB>text' nor 'row<TAB><TAB>error'")
        if self.fmt == "csv":
            fields = next(csv.reader(io.StringIO(text, newline=""), strict=True), [])
            if len(fields) != len(self.csv_header):
                raise ValueError(f"{where} has {len(fields)} fields; this job writes {len(self.csv_header)}")
            return _row_number(fields[0], where), fields[-1] != ""
        if self.fmt == "json":
            if first == text.startswith(","):
                raise ValueError(f"{where}: a JSON list item " + ("needs" if not first else "cannot have")
                                 + " a leading comma there")
            text = text[0 if first else 1:]
        return _json_record(text, self.key, where)


def _json_record(text: str, key: str, where: str):
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or "input" not in record or key not in record:
        raise ValueError(f"{where} is not a record this job writes (an object with 'input', {key!r} and 'row')")
    number = record.get("row")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ValueError(f"{where}: 'row' is {number!r}, not a row number (an integer from 1)")
    failed = "error" in record
    if failed and (record[key] is not None or not isinstance(record["error"], str)):
        raise ValueError(f"{where}: a record with an 'error' has no result and a message")
    return number, failed


def _row_number(text: str, where: str) -> int:
    if not _ROW.fullmatch(text):
        raise ValueError(f"{where}: row {text[:20]!r} is not a row number (an integer from 1)")
    return int(text)


def _chunks(data: bytes, start: int, quoted: bool):
    """(start, end) of each whole record after ``start``: a line, or for CSV the lines up to the
    one that closes every quote. What is left after the last one was torn by a kill."""
    begin, position, quotes = start, start, 0
    while True:
        newline = data.find(b"\n", position)
        if newline < 0:
            return
        quotes += data.count(b'"', position, newline)
        position = newline + 1
        if not quoted or quotes % 2 == 0:
            yield begin, position
            begin, quotes = position, 0


def _csv_line(fields: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue()


class StreamOutput:
    """Records written to a text stream (stdout) as they come, flushed per row; ``count``:
    records already in the output."""

    def __init__(self, stream, layout: Layout, count: int = 0, header: bool = True):
        self.stream, self.layout, self.count = stream, layout, count
        if header:
            self._emit(layout.header())

    def write(self, result) -> None:
        """One row's records in one write."""
        text = self.layout.text(result, self.count)
        self.count += 1 if result.error is not None else len(result.records)
        self._emit(text)

    def close(self, complete: bool) -> None:
        """``complete``: every input row has its record (a JSON list gets its closing "]")."""
        if complete:
            self._emit(self.layout.footer())

    def _emit(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()
