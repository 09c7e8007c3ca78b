"""minibertgen against transformers on the CPU, side by side in one run.

    python benchmarks/bench_cpu.py                      # small and large shapes
    python benchmarks/bench_cpu.py --shapes small --reps 3

For each shape it builds a random-weight EncoderDecoderModel checkpoint once (with
transformers, saved under benchmarks/_checkpoints/), loads it in both libraries, and
alternates them on the same inputs: encoder forward (1x64, 8x128; also ONNX Runtime on the transformers
encoder exported from the same checkpoint, when ``onnxruntime`` and ``onnx`` are
installed: ``pip install onnxruntime onnx``), greedy and beam-4
generation of exactly 32 new tokens.  Load time and peak resident memory are measured in
fresh subprocesses.  Prints a table with medians and ratios (transformers time /
minibertgen time, so > 1 means minibertgen is faster) and writes a JSON file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
CHECKPOINTS = HERE / "_checkpoints"
SHAPES = {
    "small": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                  intermediate_size=1536),
    "large": dict(vocab_size=50358, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096),
}
NEW_TOKENS = 32


def build_checkpoint(shape: str) -> Path:
    directory = CHECKPOINTS / shape
    if (directory / "model.safetensors").is_file():
        return directory
    import torch
    import transformers as hf

    torch.manual_seed(0)
    enc_cfg = hf.BertGenerationConfig(**SHAPES[shape], bos_token_id=2, eos_token_id=1)
    dec_cfg = hf.BertGenerationConfig(**SHAPES[shape], bos_token_id=2, eos_token_id=1, is_decoder=True,
                                      add_cross_attention=True)
    model = hf.EncoderDecoderModel(encoder=hf.BertGenerationEncoder(enc_cfg),
                                   decoder=hf.BertGenerationDecoder(dec_cfg))
    model.config.decoder_start_token_id, model.config.pad_token_id, model.config.eos_token_id = 2, 0, 1
    model.save_pretrained(directory)
    return directory


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed_rows(shape, directory, reps):
    """Alternate the two libraries on the same inputs; return (rows, greedy's bandwidth bound)."""
    import torch
    import transformers as hf

    import minibertgen as mb

    torch.set_num_threads(2)
    theirs = hf.EncoderDecoderModel.from_pretrained(directory).eval()
    ours = mb.EncoderDecoderModel.from_pretrained(directory)
    rng = np.random.default_rng(0)
    rows = []
    onnx = onnx_session(theirs.encoder, directory)
    for batch, seq in [(1, 64), (8, 128)]:
        ids = rng.integers(5, 1000, size=(batch, seq))
        tids = torch.from_numpy(ids)

        def run_hf():
            with torch.no_grad():
                theirs.encoder(input_ids=tids)

        def run_mb():
            ours.encoder(input_ids=ids)

        run_ort = None if onnx is None else (lambda ids=ids: onnx.run(None, {"input_ids": ids}))
        rows.append(alternate(f"encoder {batch}x{seq}", run_hf, run_mb, reps, None, run_ort))
    if hasattr(ours, "generate"):
        src = rng.integers(5, 1000, size=(1, 24))
        for beams in (1, 4):
            kwargs = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams,
                          do_sample=False, early_stopping=True)
            with torch.no_grad():
                ref_ids = theirs.generate(torch.from_numpy(src), **kwargs).numpy()
            our_ids = np.asarray(ours.generate(src, **kwargs))
            same = ref_ids.shape == our_ids.shape and bool((ref_ids == our_ids).all())

            def run_hf():
                with torch.no_grad():
                    theirs.generate(torch.from_numpy(src), **kwargs)

            def run_mb():
                ours.generate(src, **kwargs)

            name = "greedy" if beams == 1 else f"beam-{beams}"
            row = alternate(f"{name} {NEW_TOKENS} tokens", run_hf, run_mb, max(1, reps // 2), NEW_TOKENS)
            row["same_ids"] = same
            rows.append(row)
        return rows, bandwidth_bound(ours, rows, matvec_bandwidth())
    return rows, None


def alternate(task, run_hf, run_mb, reps, tokens, run_ort=None):
    """Interleave the libraries (and ONNX Runtime, when given) rep by rep; medians in a row."""
    run_hf(), run_mb()  # warm up both
    if run_ort is not None:
        run_ort()
    hf_times, mb_times, ort_times = [], [], []
    for _ in range(reps):
        hf_times.append(median_time(run_hf, 1))
        mb_times.append(median_time(run_mb, 1))
        if run_ort is not None:
            ort_times.append(median_time(run_ort, 1))
    row = speed_row(task, statistics.median(hf_times), statistics.median(mb_times), tokens)
    if ort_times:
        row["onnxruntime_s"] = statistics.median(ort_times)
        row["onnxruntime_ratio"] = row["transformers_s"] / row["onnxruntime_s"]  # > 1: ORT faster than torch
        row["minibertgen_vs_onnxruntime"] = row["onnxruntime_s"] / row["minibertgen_s"]  # > 1: we are faster
    return row


def onnx_session(encoder, directory):
    """ONNX Runtime (2 threads) on the transformers encoder exported from the same checkpoint, or
    None when onnxruntime / onnx are not installed (an optional benchmark dependency)."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError:
        return None
    path = Path(directory) / "encoder.onnx"
    if not path.is_file():
        example = torch.randint(5, 1000, (2, 16))
        torch.onnx.export(encoder, (example,), str(path), input_names=["input_ids"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bytes_per_decode_step(model) -> int:
    """Weight bytes one greedy step reads: every decoder matrix it multiplies and the LM
    head (embedding tables are looked up, cross-attention keys/values come from the cache)."""
    from minibertgen.checkpoint.mapping import flatten

    read = {id(w): w for name, w in flatten(model.decoder.params).items()  # the LM head once, though tied
            if w.ndim == 2 and "embeddings" not in name
            and not ("crossattention.self.key" in name or "crossattention.self.value" in name)}
    return int(sum(w.nbytes for w in read.values()))


def matvec_bandwidth(out=4096, features=1024, total_bytes=512 << 20, reps=5) -> float:
    """GB/s of weights NumPy streams through one-row products, over more weights than any
    cache holds: the bandwidth bound of a decode step on this machine (best of ``reps``)."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((out, features), dtype=np.float32)
               for _ in range(total_bytes // (out * features * 4))]
    x = rng.standard_normal((1, features), dtype=np.float32)
    best = min(_timed(lambda: [x @ w.T for w in weights]) for _ in range(reps))
    return sum(w.nbytes for w in weights) / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bandwidth_bound(model, rows, bandwidth) -> dict:
    """Greedy decoding against the bandwidth bound: tok/s if a step only streamed its weights."""
    step_bytes = bytes_per_decode_step(model)
    bound = bandwidth * 1e9 / step_bytes
    greedy = next(r for r in rows if r["task"].startswith("greedy"))
    return {"bytes_per_step": step_bytes, "matvec_gb_s": bandwidth, "bound_tok_s": bound,
            "minibertgen_of_bound": greedy["minibertgen_tok_s"] / bound,
            "transformers_of_bound": greedy["transformers_tok_s"] / bound}


def speed_row(task, hf_s, mb_s, tokens=None) -> dict:
    """One benchmark row: both times, their ratio (> 1: minibertgen faster), tokens/s if generating."""
    row = {"task": task, "transformers_s": hf_s, "minibertgen_s": mb_s, "ratio": hf_s / mb_s}
    if tokens:
        row["transformers_tok_s"] = tokens / hf_s
        row["minibertgen_tok_s"] = tokens / mb_s
    return row


def speed_cells(row, ms_digits=1) -> str:
    """The "transformers | minibertgen" table cells of a row: tok/s for generation, else ms."""
    if "transformers_tok_s" in row:
        return f"{row['transformers_tok_s']:.1f} tok/s | {row['minibertgen_tok_s']:.1f} tok/s"
    return f"{row['transformers_s'] * 1e3:.{ms_digits}f} ms | {row['minibertgen_s'] * 1e3:.{ms_digits}f} ms"


def load_probe(library: str, directory: str) -> dict:
    """Run in a fresh process: load time and peak RSS after one encoder forward."""
    start = time.perf_counter()
    ids = np.arange(5, 69)[None, :]
    if library == "minibertgen":
        import minibertgen as mb

        model = mb.EncoderDecoderModel.from_pretrained(directory)
        load = time.perf_counter() - start
        model.encoder(input_ids=ids)
    else:
        import torch
        import transformers as hf

        model = hf.EncoderDecoderModel.from_pretrained(directory).eval()
        load = time.perf_counter() - start
        with torch.no_grad():
            model.encoder(input_ids=torch.from_numpy(ids))
    return {"load_s": load, "peak_rss_bytes": peak_rss_bytes()}


def peak_rss_bytes() -> int:
    """High-water resident memory of this process.

    /proc's VmHWM starts afresh at exec; ru_maxrss would include the parent's peak,
    inherited through fork, and so report the benchmark driver's memory instead.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_rows(directory: Path, reps: int):
    size = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    out = {"checkpoint_bytes": size}
    for library in ("transformers", "minibertgen"):
        probes = []
        for _ in range(reps):
            result = subprocess.run([sys.executable, __file__, "--probe", library, str(directory)],
                                    capture_output=True, text=True, check=True)
            probes.append(json.loads(result.stdout.strip().splitlines()[-1]))
        out[library] = {"load_s": statistics.median(p["load_s"] for p in probes),
                        "peak_rss_bytes": max(p["peak_rss_bytes"] for p in probes)}
    return out


def print_table(shape, rows, bound, memory):
    print(f"\n## {shape}")
    print("| task | transformers | minibertgen | ratio (>1: minibertgen faster) | same ids |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['task']} | {speed_cells(row)} | {row['ratio']:.2f}x | {row.get('same_ids', '')} |")
    for row in rows:
        if "onnxruntime_s" in row:
            print(f"| {row['task']}: ONNX Runtime {row['onnxruntime_s'] * 1e3:.1f} ms | {row['onnxruntime_ratio']:.2f}x "
                  f"torch's speed | minibertgen {row['minibertgen_vs_onnxruntime']:.2f}x ORT's speed | | |")
    if bound is not None:
        print(f"| greedy vs bandwidth bound ({bound['bytes_per_step'] / 1e9:.3f} GB/step at "
              f"{bound['matvec_gb_s']:.1f} GB/s = {bound['bound_tok_s']:.1f} tok/s) | "
              f"{bound['transformers_of_bound']:.0%} | {bound['minibertgen_of_bound']:.0%} | | |")
    size = memory["checkpoint_bytes"]
    for library in ("transformers", "minibertgen"):
        m = memory[library]
        print(f"| load ({library}) | {m['load_s']:.2f} s | peak RSS {m['peak_rss_bytes'] / 2**20:.0f} MiB "
              f"= {m['peak_rss_bytes'] / size:.2f}x checkpoint | | |")
    load_ratio = memory["minibertgen"]["load_s"] / memory["transformers"]["load_s"]
    print(f"\nload time minibertgen / transformers: {load_ratio:.2f}x; checkpoint {size / 2**20:.0f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="small,large")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default=str(HERE / "results" / "cpu.json"))
    parser.add_argument("--probe", nargs=2, metavar=("LIBRARY", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(load_probe(*args.probe)))
        return
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "processor": platform.processor() or platform.machine()}, "shapes": {}}
    for shape in args.shapes.split(","):
        directory = build_checkpoint(shape)
        rows, bound = speed_rows(shape, directory, args.reps)
        memory = memory_rows(directory, max(1, args.reps // 2))
        print_table(shape, rows, bound, memory)
        results["shapes"][shape] = {"rows": rows, "bandwidth_bound": bound, "memory": memory}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
