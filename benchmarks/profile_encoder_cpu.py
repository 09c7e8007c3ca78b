"""Where the 8x128 encoder's time goes: minibertgen's ops against ONNX Runtime's, one sitting.

    python benchmarks/profile_encoder_cpu.py [--shape small] [--reps 5]

Runs both on the same random-weight checkpoint as bench_cpu.py (ONNX Runtime on the
transformers encoder exported from it, 2 threads, its default graph optimisations) and
prints each one's time per kind of work for one forward pass (medians over --reps):

* minibertgen: timers around the speed wing's ops (fast/cpu.py: the products in
  ``product``, the bias adds, LayerNorm, softmax, GELU) and attention's two batched
  products; "other" is the pass's total minus those (with MINIBERTGEN_CPU_POOL=1 the
  dense products are in "other": the pool's split calls NumPy's matmul directly);
* ONNX Runtime: its own profiler's per-node times summed by operator type, after its
  fusions (the node types show which it made).

The GEMM rate is the encoder's dense-layer FLOPs over the time in dense products.
Needs onnxruntime and onnx (``pip install -e ".[bench]"``) and torch + transformers.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_cpu import SHAPES, build_checkpoint, onnx_session  # noqa: E402


def ours(directory, ids, reps):
    """minibertgen's forward pass, with timers around its ops: {kind: median ms}, total ms."""
    import minibertgen as mb
    from minibertgen.fast import cpu

    model = mb.EncoderDecoderModel.from_pretrained(directory).encoder
    spent = collections.Counter()

    def timed(kind, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[kind] += time.perf_counter() - start
        return wrapper

    original = dict(model.kernels), cpu.product, cpu._add_bias
    cpu.product = timed("dense products", cpu.product)  # cpu.linear looks these up in the module
    cpu._add_bias = timed("bias adds", cpu._add_bias)
    for name, kind in (("layer_norm", "LayerNorm"), ("masked_softmax", "softmax"), ("apply_activation", "GELU")):
        model.kernels[name] = timed(kind, model.kernels[name])

    def attend(query, key, value, mask, **kwargs):  # the two batched products, timed apart from its softmax
        start = time.perf_counter()
        scores = query @ key.transpose(0, 1, 3, 2)  # [batch, heads, q, k]
        spent["attention products"] += time.perf_counter() - start
        probs = model.kernels["masked_softmax"](scores, mask, np.sqrt(query.shape[-1]), dtype=value.dtype)
        start = time.perf_counter()
        context = probs @ value
        spent["attention products"] += time.perf_counter() - start
        return context, probs

    model.kernels["attend"] = attend
    try:
        model(input_ids=ids)  # warm up
        totals, per_kind = [], collections.defaultdict(list)
        for _ in range(reps):
            spent.clear()
            start = time.perf_counter()
            model(input_ids=ids)
            totals.append(time.perf_counter() - start)
            for kind, seconds in spent.items():
                per_kind[kind].append(seconds)
        # checked against the untimed pass: the timed attend computes the same thing
        model.kernels.clear()
        model.kernels.update(original[0])
        plain = model(input_ids=ids).last_hidden_state
        model.kernels["attend"] = attend
        timed_out = model(input_ids=ids).last_hidden_state
        assert np.abs(plain - timed_out).max() <= 1e-4 * max(1.0, float(np.abs(plain).max()))
    finally:
        model.kernels.clear()
        model.kernels.update(original[0])
        cpu.product, cpu._add_bias = original[1], original[2]
    kinds = {kind: statistics.median(values) * 1e3 for kind, values in per_kind.items()}
    total = statistics.median(totals) * 1e3
    kinds["other"] = total - sum(kinds.values())
    return kinds, total


def theirs(directory, ids, reps):
    """ONNX Runtime's per-operator-type times (its profiler), median over reps: {op type: ms}, total ms."""
    import onnxruntime as ort
    import transformers as hf

    encoder = hf.EncoderDecoderModel.from_pretrained(directory).encoder.eval()
    onnx_session(encoder, directory)  # exports encoder.onnx once
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort_profile")  # not into the working folder
    session = ort.InferenceSession(str(Path(directory) / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
    session.run(None, {"input_ids": ids})  # warm up
    totals = []
    for _ in range(reps):
        start = time.perf_counter()
        session.run(None, {"input_ids": ids})
        totals.append(time.perf_counter() - start)
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    per_run = collections.defaultdict(lambda: collections.Counter())
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        run = sum(1 for r in runs if r["ts"] <= event["ts"]) - 1  # the model_run it falls in
        per_run[run][event["args"]["op_name"]] += event["dur"] / 1e3  # us -> ms
    timed_runs = [per_run[i] for i in sorted(per_run)][-reps:]  # drop the warm-up run
    ops = {op: statistics.median(run.get(op, 0.0) for run in timed_runs) for op in timed_runs[0]}
    return ops, statistics.median(totals) * 1e3


def dense_flops(shape, batch, seq):
    s = SHAPES[shape]
    hidden, inner, layers = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    return 2 * batch * seq * layers * (4 * hidden * hidden + 2 * hidden * inner)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    directory = build_checkpoint(args.shape)
    ids = np.random.default_rng(0).integers(5, 1000, size=(8, 128))
    our_kinds, our_total = ours(directory, ids, args.reps)
    ort_ops, ort_total = theirs(directory, ids, args.reps)
    flops = dense_flops(args.shape, 8, 128)
    print(f"## encoder 8x128, {args.shape} shape: minibertgen {our_total:.1f} ms, ONNX Runtime {ort_total:.1f} ms "
          f"({ort_total / our_total:.2f}x our time)\n")
    print("| minibertgen | ms | share |")
    print("|---|---|---|")
    for kind, ms in sorted(our_kinds.items(), key=lambda item: -item[1]):
        print(f"| {kind} | {ms:.1f} | {ms / our_total:.0%} |")
    if "dense products" in our_kinds:  # with the two-core pool (fast/threads.py) the products bypass cpu.product
        print(f"\ndense products: {flops / 1e9:.1f} GFLOP at {flops / our_kinds['dense products'] / 1e6:.0f} GFLOP/s")
    print("\n| ONNX Runtime operator | ms | share |")
    print("|---|---|---|")
    ort_sum = sum(ort_ops.values())
    for op, ms in sorted(ort_ops.items(), key=lambda item: -item[1]):
        print(f"| {op} | {ms:.1f} | {ms / ort_total:.0%} |")
    print(f"\nsum of its node times {ort_sum:.1f} ms of {ort_total:.1f} ms")
    dense = sum(ms for op, ms in ort_ops.items() if op in ("MatMul", "FusedMatMul", "Gemm", "MatMulInteger"))
    if dense:
        print(f"its MatMul-type nodes: {dense:.1f} ms (attention's batched products included), "
              f"dense FLOPs alone over them: {flops / dense / 1e6:.0f} GFLOP/s (a lower bound on its rate)")


if __name__ == "__main__":
    main()
