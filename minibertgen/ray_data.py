"""Generation across a cluster on Ray Data (the ``ray`` extra: ``pip install -e ".[ray]"``).

    import ray
    from minibertgen.ray_data import generate_dataset

    ds = ray.data.read_json("articles.jsonl")                  # or read_parquet, read_csv
    out = generate_dataset(ds, model="path/to/checkpoint", column="text", actors=4,
                           max_new_tokens=64)
    out.write_json("summaries/")

``Text2TextPredictor`` is the class ``Dataset.map_batches`` runs in an actor pool: each
actor loads the model once, then generates every batch it is given through
minibertgen.batch (length-sorted, in order). Ray schedules the actors: one GPU each
(``num_gpus=1``) on a cluster that has GPUs, one CPU each otherwise; an actor that dies is
restarted and its batch retried (Ray Data's defaults for actor pools). A bad row does not
stop the job: its output column is None and the ``error`` column says why.
"""
from __future__ import annotations

import math

from .batch import Row, RowResult, chunked, generate_rows
from .batch_io import text_error
from .batch_output import result_field

__all__ = ["Text2TextPredictor", "generate_dataset", "ray_results", "require_ray", "RAY_CHUNK_ROWS"]

INSTALL_HINT = 'pip install "minibertgen[ray]" (in a checkout: pip install -e ".[ray]")'
RAY_CHUNK_ROWS = 50_000  # the CLI hands Ray this many rows per job, so a stream is never held whole


def require_ray():
    """The ``ray`` module with Ray Data, or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"Ray Data is not installed ({exc}): {INSTALL_HINT}") from None
    return ray


class Text2TextPredictor:
    """A callable class for ``Dataset.map_batches``: a batch (dict of columns) in, the same batch
    with ``<task>_text`` and ``error`` columns out.

    ``model``: a checkpoint directory or hub id as ``pipeline`` takes it; ``column``: the
    input text column; ``batch_size``: rows generated together inside the actor; the
    remaining keyword arguments go to ``pipeline`` (``max_new_tokens=64``, ``dtype=...``).
    ``device`` None: the GPU Ray gave this actor, if any, else the CPU.
    """

    def __init__(self, model, task="text2text-generation", column="text", batch_size=16, device=None,
                 seed=None, **pipeline_kwargs):
        from .pipeline import pipeline

        if device is None and _assigned_gpus():
            device = 0  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU, which CuPy sees as device 0
        self.generator = pipeline(task, model=model, device=device, **pipeline_kwargs)
        self.column, self.batch_size = column, batch_size
        self.generate_kwargs = {"seed": seed} if seed is not None else {}
        self.output_column = f"{self.generator.return_name}_text"

    def __call__(self, batch: dict) -> dict:
        if self.column not in batch:
            raise ValueError(f"column={self.column!r}: not in the dataset (columns: {sorted(batch)})")
        rows = [_row(number, value, batch, position)
                for position, (number, value) in enumerate(zip(_numbers(batch), batch[self.column]))]
        results = list(generate_rows(self.generator, rows, batch_size=self.batch_size, window=len(rows) or 1,
                                     generate_kwargs=self.generate_kwargs))
        out = dict(batch)
        out[self.output_column] = [_texts(result) for result in results]
        out["error"] = [result.error for result in results]
        return out


def _assigned_gpus() -> list:
    import ray

    return ray.get_gpu_ids() if ray.is_initialized() else []


def _numbers(batch: dict):
    count = len(next(iter(batch.values()))) if batch else 0
    return batch["row"] if "row" in batch else range(1, count + 1)


def _row(number, value, batch, position) -> Row:
    reader_error = batch.get("reader_error")
    error = reader_error[position] if reader_error is not None else None
    if isinstance(error, float) and math.isnan(error):
        error = None
    value = value.item() if hasattr(value, "item") else value  # a NumPy scalar from the batch
    return Row(int(number), value if isinstance(value, str) else None, None, error or text_error(value))


def _texts(result: RowResult):
    if result.records is None:
        return None
    texts = [next(iter(record.values())) for record in result.records]
    return texts[0] if len(texts) == 1 else texts


def generate_dataset(ds, model, *, actors=None, batch_size=16, rows_per_task=None, num_gpus=None,
                     predictor=None, **predictor_kwargs):
    """``ds.map_batches(Text2TextPredictor, ...)`` in a pool of ``actors`` model replicas.

    ``actors`` None: one per GPU in the cluster, else one per CPU but one (an actor holds its
    CPU for the whole job, and Ray Data's read and write tasks need a CPU to run: a pool
    holding every CPU waits for them forever). ``num_gpus`` None: 1 per actor when the
    cluster has GPUs, else 0. ``rows_per_task``: rows Ray hands an actor at
    a time (default 4 batches, sorted together by length). ``predictor``: the class to run
    (default Text2TextPredictor; a subclass of it). Rows come back in input order when
    ``DataContext.get_current().execution_options.preserve_order`` is True.
    """
    ray = require_ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    num_gpus = (1 if gpus else 0) if num_gpus is None else num_gpus
    actors = actors or max(1, gpus if num_gpus else int(resources.get("CPU", 1)) - 1)
    return ds.map_batches(predictor or Text2TextPredictor, fn_constructor_kwargs={"model": model, "batch_size": batch_size,
                                                                     **predictor_kwargs},
                          batch_size=rows_per_task or 4 * batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                          num_gpus=num_gpus,
                          num_cpus=0 if num_gpus else 1, batch_format="numpy")


def ray_results(rows, task, load: dict, *, address=None, actors=None, batch_size=16, seed=None, quiet=False):
    """The CLI's --ray: (RowResults in input order, output field name) for an iterable of Rows,
    sent to the cluster RAY_CHUNK_ROWS at a time."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=not quiet, include_dashboard=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order
    if quiet:
        context.enable_progress_bars = False
    model = load.pop("model")
    key = result_field(task)
    return _chunked_results(ray, rows, model, task, load, actors, batch_size, seed, key), key


def _chunked_results(ray, rows, model, task, load, actors, batch_size, seed, key):
    for chunk in chunked(rows, RAY_CHUNK_ROWS):
        items = [{"row": row.number, "text": row.text if isinstance(row.text, str) else "",
                  "reader_error": row.error or ""} for row in chunk]
        ds = generate_dataset(ray.data.from_items(items), model, actors=actors, batch_size=batch_size,
                              task=task, seed=seed, **load)
        yield from _in_input_order(chunk, ds.iter_rows(), key)


def _in_input_order(chunk, records, key):
    """RowResults for ``chunk`` from the dataset's records, in input order, each exactly once."""
    position = {row.number: index for index, row in enumerate(chunk)}
    waiting, emitted = {}, 0
    for record in records:
        index = position.get(int(record["row"]))
        if index is None or index < emitted or index in waiting:
            raise RuntimeError(f"Ray Data returned row {record['row']} twice or out of nowhere")
        waiting[index] = _result(chunk[index], record, key)
        while emitted in waiting:
            yield waiting.pop(emitted)
            emitted += 1
    if emitted < len(chunk):
        raise RuntimeError(f"Ray Data returned {emitted} of {len(chunk)} rows: row {chunk[emitted].number} is missing")


def _result(row, record, key) -> RowResult:
    if record["error"]:
        return RowResult(row, None, record["error"])
    texts = record[key]
    texts = [texts] if isinstance(texts, str) else list(texts)
    return RowResult(row, [{key: text} for text in texts])
