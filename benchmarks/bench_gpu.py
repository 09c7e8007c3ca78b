"""minibertgen (CuPy) against transformers (torch CUDA, eager) on the same GPU, side by side.

    python benchmarks/bench_gpu.py                              # small and large, float16
    python benchmarks/bench_gpu.py --shapes large --modes plain,fused,graph

Same random-weight checkpoints as bench_cpu.py (built with transformers once, under
benchmarks/_checkpoints/), loaded by both libraries in float16 on GPU 0.  For each shape:
encoder forward 8x128, greedy and beam-4 generation of exactly 32 new tokens from a
24-token source, and NF4 greedy decoding (--no-fourbit skips it) against our own graphed
greedy in the benchmark dtype.  ``--preview off`` measures without the kernels of
fast/preview.py (4-bit products, one-launch attention), for a before/after in one sitting.
minibertgen runs in each of its GPU modes:

* plain: the readable path, one CuPy call per array operation;
* fused: fused elementwise kernels (bias+GELU, residual+LayerNorm, masked softmax);
* graph: fused, and each decode step replayed from a captured CUDA graph.

Times are medians over --reps runs, each synchronised with the device; ratios are
transformers time / minibertgen time (> 1: minibertgen faster).  Device memory: the
bytes the weights take after loading, against the float16 checkpoint size, and each
library's pool high-water mark over the run.  Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_cpu import NEW_TOKENS, build_checkpoint, speed_cells, speed_row  # noqa: E402

MODES = ("plain", "fused", "graph")


def timed(fn, sync, reps):
    fn()
    sync()  # warm-up: kernel compilation, cuBLAS handles, pool growth
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def set_mode(model, mode):
    """Switch the model's GPU fast paths (the speed wing) for a benchmark mode; returns generate() kwargs."""
    model.use_fast_kernels(mode in ("fused", "graph"))
    return {"use_cuda_graph": mode == "graph"}


def run_shape(shape, directory, reps, modes, dtype_name, fourbit=True):
    import cupy
    import torch
    import transformers as hf

    import minibertgen as mb
    from minibertgen.backend import to_numpy

    torch_dtype = getattr(torch, dtype_name)
    for path in Path(directory).glob("*.safetensors"):  # same page cache for both loads
        with open(path, "rb") as handle:
            while handle.read(1 << 26):
                pass
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.used_bytes()
    start = time.perf_counter()
    ours = mb.EncoderDecoderModel.from_pretrained(directory, device=0, dtype=dtype_name)
    cupy.cuda.Device(0).synchronize()
    our_load = time.perf_counter() - start
    our_weights = pool.used_bytes() - before

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    theirs = hf.EncoderDecoderModel.from_pretrained(directory, dtype=torch_dtype).to("cuda").eval()
    torch.cuda.synchronize()
    their_load = time.perf_counter() - start
    their_weights = torch.cuda.memory_allocated()
    parameter_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in theirs.parameters()}.values())

    def sync():
        torch.cuda.synchronize()
        cupy.cuda.Device(0).synchronize()

    rng = np.random.default_rng(0)
    rows = []
    ids = rng.integers(5, 1000, size=(8, 128))
    tids = torch.from_numpy(ids).cuda()
    cids = cupy.asarray(ids)

    def hf_encoder():
        with torch.no_grad():
            theirs.encoder(input_ids=tids)

    hf_times = {"encoder 8x128": timed(hf_encoder, sync, reps)}
    src = rng.integers(5, 1000, size=(1, 24))
    gen = {}
    for beams in (1, 4):
        kwargs = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams, do_sample=False,
                      early_stopping=True)
        name = "greedy" if beams == 1 else f"beam-{beams}"
        gen[name] = kwargs
        tsrc = torch.from_numpy(src).cuda()
        with torch.no_grad():
            gen[name + ".ref"] = theirs.generate(tsrc, **kwargs).cpu().numpy()

        def hf_generate(kwargs=kwargs, tsrc=tsrc):
            with torch.no_grad():
                theirs.generate(tsrc, **kwargs)

        hf_times[name] = timed(hf_generate, sync, max(1, reps // 2))
    their_peak = torch.cuda.max_memory_allocated()

    for mode in modes:
        extra = set_mode(ours, mode)
        pool.free_all_blocks()
        mb_time = timed(lambda: ours.encoder(input_ids=cids), sync, reps)
        rows.append(dict(speed_row("encoder 8x128", hf_times["encoder 8x128"], mb_time), mode=mode))
        for name in ("greedy", "beam-4"):
            kwargs = gen[name]
            call_kwargs = dict(kwargs, **extra)
            got = to_numpy(ours.generate(src, **call_kwargs))
            ref = gen[name + ".ref"]
            mb_time = timed(lambda k=call_kwargs: ours.generate(src, **k), sync, max(1, reps // 2))
            r = dict(speed_row(f"{name} {NEW_TOKENS} tokens", hf_times[name], mb_time, NEW_TOKENS), mode=mode)
            r["same_ids_as_transformers"] = bool(got.shape == ref.shape and (got == ref).all())
            rows.append(r)
    our_peak = pool.total_bytes()
    if fourbit:
        graphed = [r for r in rows if r["mode"] == "graph" and r["task"].startswith("greedy")]
        baseline = graphed[0]["minibertgen_s"] if graphed else None
        rows.extend(fourbit_rows(directory, dtype_name, src, gen["greedy"], reps, sync, baseline))
    memory = {"parameter_bytes": parameter_bytes, "minibertgen_weight_bytes": our_weights,
              "transformers_weight_bytes": their_weights, "minibertgen_pool_high_water": our_peak,
              "transformers_peak_allocated": their_peak, "minibertgen_load_s": our_load,
              "transformers_load_s": their_load}
    del theirs, ours
    torch.cuda.empty_cache()
    pool.free_all_blocks()
    return rows, memory


def fourbit_rows(directory, dtype_name, src, kwargs, reps, sync, float16_graph_s):
    """NF4 greedy decoding (compute dtype = the benchmark dtype) in three ways: the 4-bit
    route of quantization/ (dequantize, then cuBLAS: the code before cuda_fourbit.py), the
    fused 4-bit kernel eagerly, and the kernel in the CUDA graph.  Ratios against our own
    float16 graphed greedy (> 1: 4-bit decodes faster); ids against the route's."""
    import minibertgen as mb
    from minibertgen.backend import to_numpy
    from minibertgen.fast import cuda as cuda_wing

    config = mb.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype_name)
    model = mb.EncoderDecoderModel.from_pretrained(directory, device=0, dtype=dtype_name, quantization_config=config)
    kernel_fits = cuda_wing.cuda_fourbit.fits
    rows = []
    for mode, label in (("fused", "4-bit route (before)"), ("fused", "fused 4-bit kernel"), ("graph", "graph")):
        extra = set_mode(model, mode)
        if label.startswith("4-bit route"):
            cuda_wing.cuda_fourbit.fits = lambda *args: False  # this run only: the dequantize + cuBLAS route
        try:
            got = to_numpy(model.generate(src, **kwargs, **extra))
            seconds = timed(lambda: model.generate(src, **kwargs, **extra), sync, max(1, reps // 2))
        finally:
            cuda_wing.cuda_fourbit.fits = kernel_fits
        if label.startswith("4-bit route"):
            route_ids = got
        rows.append({"task": f"nf4 greedy {NEW_TOKENS} tokens", "mode": label, "minibertgen_s": seconds,
                     "tokens_per_s": NEW_TOKENS / seconds,
                     "vs_our_float16_graph": None if float16_graph_s is None else float16_graph_s / seconds,
                     "same_ids_as_route": bool(got.shape == route_ids.shape and (got == route_ids).all())})
    del model
    return rows


def print_table(shape, rows, memory, device_name, dtype):
    print(f"\n## {shape} ({device_name}, {dtype})")
    print("| task | mode | transformers | minibertgen | ratio (>1: minibertgen faster) | same ids |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "ratio" in r:
            print(f"| {r['task']} | {r['mode']} | {speed_cells(r, ms_digits=2)} | {r['ratio']:.2f}x "
                  f"| {r.get('same_ids_as_transformers', '')} |")
    for r in rows:
        if "tokens_per_s" in r and "ratio" not in r:
            against = "" if r["vs_our_float16_graph"] is None else f", {r['vs_our_float16_graph']:.2f}x our {dtype} graph"
            print(f"| {r['task']} | {r['mode']} | | {r['tokens_per_s']:.1f} tok/s{against} | | "
                  f"same ids as the route: {r['same_ids_as_route']} |")
    m = memory
    gib = 2 ** 30
    print(f"\nweights on device: minibertgen {m['minibertgen_weight_bytes'] / gib:.3f} GiB "
          f"({m['minibertgen_weight_bytes'] / m['parameter_bytes']:.3f}x the {dtype} parameters), "
          f"transformers {m['transformers_weight_bytes'] / gib:.3f} GiB; high-water: minibertgen pool "
          f"{m['minibertgen_pool_high_water'] / gib:.3f} GiB, transformers {m['transformers_peak_allocated'] / gib:.3f}"
          f" GiB; load {m['minibertgen_load_s']:.2f} s vs {m['transformers_load_s']:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="small,large")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-fourbit", action="store_true", help="skip the NF4 greedy rows")
    parser.add_argument("--json", default=str(HERE / "results" / "gpu.json"))
    parser.add_argument("--preview", choices=("on", "off"), default="on",
                        help="the kernels not yet run on a GPU (fast/preview.py): 4-bit products, one-launch attention")
    args = parser.parse_args()
    from minibertgen.fast import preview

    preview.ENABLED = args.preview == "on"
    import cupy
    import torch
    import transformers

    device_name = torch.cuda.get_device_name(0)
    results = {"device": device_name, "torch": torch.__version__, "transformers": transformers.__version__,
               "cupy": cupy.__version__, "dtype": args.dtype, "preview_kernels": preview.ENABLED, "shapes": {}}
    for shape in args.shapes.split(","):
        directory = build_checkpoint(shape)
        rows, memory = run_shape(shape, directory, args.reps, args.modes.split(","), args.dtype,
                                 not args.no_fourbit)
        print_table(shape, rows, memory, device_name, args.dtype)
        results["shapes"][shape] = {"rows": rows, "memory": memory}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
