"""What the two-core pool (minibertgen/fast/threads.py) buys, A/B in one process.

    python benchmarks/bench_cpu_pool.py --shapes small large --reps 5

Same random checkpoints as bench_cpu.py.  Alternates, on the same inputs, minibertgen
with the pool (BLAS at one thread per call, our work split across the two cores) and
without it (OpenBLAS scheduling both cores itself, as before the pool existed), and the
plain reference ops (model.use_fast_kernels(False)) for scale.  Prints medians and the
ratio pool / no-pool speed (> 1: the pool is faster), and checks the ids are identical.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_cpu import NEW_TOKENS, build_checkpoint  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rows_for(shape, reps):
    import minibertgen as mb
    from minibertgen.fast import threads

    pool = threads.POOL or threads.make_pool()  # off by default: made here for the A/B
    if pool is None:
        raise SystemExit("no pool here: one core, or threadpoolctl is missing")
    model = mb.EncoderDecoderModel.from_pretrained(build_checkpoint(shape))
    rng = np.random.default_rng(0)
    tasks = []
    for batch, seq in [(1, 64), (8, 128)]:
        ids = rng.integers(5, 1000, size=(batch, seq))
        tasks.append((f"encoder {batch}x{seq}", lambda ids=ids: model.encoder(input_ids=ids), reps))
    src = rng.integers(5, 1000, size=(1, 24))
    results = {}
    for beams in (1, 4):
        kwargs = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams, do_sample=False,
                      early_stopping=True)
        name = "greedy" if beams == 1 else f"beam-{beams}"
        tasks.append((f"{name} {NEW_TOKENS} tokens",
                      lambda kwargs=kwargs, name=name: results.setdefault((name, threads.POOL is None), []).append(
                          np.asarray(model.generate(src, **kwargs))), max(1, reps // 2)))
    out = []
    for task, fn, n in tasks:
        on, off = [], []
        threads.POOL = pool
        fn()
        threads.POOL = None
        fn()  # warm up both
        for _ in range(n):
            threads.POOL = pool
            on.append(timed(fn))
            threads.POOL = None
            off.append(timed(fn))
        threads.POOL = pool
        row = {"shape": shape, "task": task, "pool_s": statistics.median(on), "no_pool_s": statistics.median(off)}
        row["pool_speedup"] = row["no_pool_s"] / row["pool_s"]
        out.append(row)
    for name in ("greedy", "beam-4"):
        with_pool, without = results[(name, False)], results[(name, True)]
        same = all(np.array_equal(a, b) for a in with_pool for b in without)
        for row in out:
            if row["task"].startswith(name):
                row["same_ids"] = same
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["small", "large"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = [row for shape in args.shapes for row in rows_for(shape, args.reps)]
    print(f"{'shape':6} {'task':22} {'pool s':>9} {'no pool s':>10} {'pool speed-up':>14}  ids")
    for r in rows:
        print(f"{r['shape']:6} {r['task']:22} {r['pool_s']:9.4f} {r['no_pool_s']:10.4f} {r['pool_speedup']:13.2f}x"
              f"  {'same' if r.get('same_ids', True) else 'DIFFERENT'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
