"""Batch generation over many rows: length buckets, results in input order, as they are done.

    for result in generate_rows(generator, rows, batch_size=16):
        result.row.number, result.records, result.error   # in input order

Rows are taken in windows (``window`` rows at a time, a stream never read whole). Inside a
window, rows are sorted by token count so that each batch pads little, generated batch by
batch, and handed back in input order as soon as every earlier row is done -- or, with
``ordered=False`` (the CLI, whose records name their rows), as soon as their own batch is
done, so that an interrupted job has written every row it finished. The batched
result of a row equals its unbatched result: padding is on the tokenizer's side with an
attention mask, as transformers pads a batch for generate(). Sampling keeps input order
(no sorting), so a seeded run draws what the unsorted batches would draw.

A row that cannot be generated (its reader found no text, it is too long for the encoder's
positions, or generate() refused it) is a failed ``RowResult`` with a message naming the
problem; ``errors="raise"`` raises the first such error instead. The pipeline
(``pipeline(..., batch_size=N)``), the CLI and the Ray predictor all go through here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator

from .progress import progress

__all__ = ["Row", "RowResult", "Summary", "RowFailed", "generate_rows", "rows_from_texts", "chunked",
           "DEFAULT_WINDOW_BATCHES"]

DEFAULT_WINDOW_BATCHES = 32  # a window holds this many batches: enough to sort, small enough to stream


@dataclass(frozen=True)
class Row:
    """One input: its 1-based ``number`` among the data rows, its text, where it starts in the file
    (``line``, when that is known), or the reason it has no usable text (``error``); ``fields``:
    all of its CSV columns (a CSV output keeps them)."""

    number: int
    text: str | None
    line: int | None = None
    error: str | None = None
    fields: tuple | None = None

    def where(self) -> str:
        return f"row {self.number}" + (f" (line {self.line})" if self.line not in (None, self.number) else "")


@dataclass
class RowResult:
    """``records``: one dict per returned sequence (``{"generated_text": ...}``); None when failed."""

    row: Row
    records: list | None = None
    error: str | None = None


class RowFailed(ValueError):
    """A row that could not be generated, named by its number (the CLI's --fail-fast)."""

    def __init__(self, result: RowResult):
        super().__init__(f"{result.row.where()}: {result.error}")
        self.result = result


@dataclass
class Summary:
    """Counts for the end of a job: rows generated, skipped (already in the output) and failed
    (each failed row has an error record)."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.written} rows generated, {self.skipped} skipped (already in the output), {self.failed} failed "
                "(written with their error)")


def rows_from_texts(texts) -> list[Row]:
    """A list of strings as rows numbered from 1."""
    return [Row(number, text) for number, text in enumerate(texts, start=1)]


def generate_rows(generator, rows: Iterable[Row], batch_size: int = 1, *, window: int | None = None,
                  sort_by_length: bool | None = None, ordered: bool = True, errors: str = "keep", truncation=False,
                  return_tensors=False, clean_up_tokenization_spaces=False, generate_kwargs=None,
                  total: int | None = None, desc: str | None = None) -> Iterator[RowResult]:
    """``generator``: a Text2TextGenerationPipeline. Yields one RowResult per row, in input order
    (``ordered=False``: as each batch is done, so nothing finished waits for a slower row).

    ``window``: rows read ahead and sorted together (default ``batch_size`` x 32; 1 row when
    ``batch_size`` is 1). ``sort_by_length``: default True unless the generation samples.
    ``errors``: "keep" (a failed RowResult) or "raise" (the row's exception propagates).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    if errors not in ("keep", "raise"):
        raise ValueError(f"errors={errors!r}: expected 'keep' or 'raise'")
    generate_kwargs = dict(generate_kwargs or {})
    if sort_by_length is None:
        sort_by_length = not generator.samples(generate_kwargs)
    window = window or (batch_size * DEFAULT_WINDOW_BATCHES if batch_size > 1 else 1)  # rows read ahead
    options = dict(return_tensors=return_tensors, clean_up=clean_up_tokenization_spaces,
                   generate_kwargs=generate_kwargs)
    job = _Job(generator, batch_size, sort_by_length, errors, truncation, options, ordered)
    results = (result for chunk in chunked(rows, window) for result in job.run_window(chunk))
    yield from progress(results, desc=desc or generator.task, unit="row", min_items=8, total=total)


def chunked(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """Lists of up to ``size`` rows, read from ``rows`` one list at a time."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _Job:
    """The settings of one generate_rows call; run_window does the work of one window."""

    def __init__(self, generator, batch_size, sort_by_length, errors, truncation, options, ordered=True):
        self.generator, self.batch_size, self.sort_by_length = generator, batch_size, sort_by_length
        self.errors, self.truncation, self.options, self.ordered = errors, truncation, options, ordered

    def run_window(self, rows: list[Row]) -> Iterator[RowResult]:
        done: dict[int, RowResult] = {}  # position in the window -> its result
        encoded = {}  # position -> token ids
        for position, row in enumerate(rows):
            try:
                if row.error is not None:
                    raise ValueError(row.error)
                encoded[position] = self.generator.encode(row.text, truncation=self.truncation)
            except (ValueError, TypeError) as exc:
                done[position] = self._failed(row, exc)
        order = sorted(encoded, key=lambda p: -len(encoded[p])) if self.sort_by_length else list(encoded)
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        emitted = 0  # ordered: results handed back so far (the finished prefix)
        for batch in [None, *batches]:  # None: the rows that failed before generation
            if batch is not None:
                done.update(self._generate(batch, [rows[p] for p in batch], [encoded[p] for p in batch]))
            if not self.ordered:
                yield from (done.pop(position) for position in sorted(done))
            while self.ordered and emitted < len(rows) and emitted in done:
                yield done.pop(emitted)
                emitted += 1

    def _generate(self, positions, rows, ids) -> dict[int, RowResult]:
        try:
            records = self.generator.generate_batch(ids, **self.options)
            return {p: RowResult(row, rec) for p, row, rec in zip(positions, rows, records)}
        except (ValueError, TypeError) as exc:
            if len(positions) == 1:
                return {positions[0]: self._failed(rows[0], exc)}
        # One row spoilt the batch: generate each alone, so only that row fails.
        results = {}
        for position, row, row_ids in zip(positions, rows, ids):
            results.update(self._generate([position], [row], [row_ids]))
        return results

    def _failed(self, row: Row, exc: Exception) -> RowResult:
        if self.errors == "raise":
            raise exc
        return RowResult(row, None, " ".join(str(exc).split()) or type(exc).__name__)
