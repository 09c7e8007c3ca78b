"""generate() speed, minibertgen against transformers, side by side in one run (CPU).

    python benchmarks/bench_generation.py [--reps 3] [--shape small]

Cases: the trained toy bert2bert (tests/fixtures/generation) and the random "small"
checkpoint of bench_cpu.py (MiniLM-sized, vocab 30522), each with greedy search,
beam search (4 beams) and sampling, batch 4, a fixed number of new tokens (no early
eos: min_new_tokens = max_new_tokens).  Prints medians and the ratio transformers /
minibertgen (> 1: minibertgen is faster) and checks the greedy/beam ids agree.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
TOY = HERE.parent / "tests" / "fixtures" / "generation" / "toy_bert2bert"


def median_time(fn, reps):
    """bench_cpu's median, after one warm-up call."""
    from bench_cpu import median_time as median

    fn()
    return median(fn, reps)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--shape", default="small")
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    import torch
    import transformers

    import minibertgen
    from bench_cpu import build_checkpoint

    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    n = args.new_tokens
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}, transformers {transformers.__version__}")
    print(f"{'model':<8} {'task':<8} {'transformers s':>15} {'minibertgen s':>14} {'ratio':>6} same-ids")
    for label, directory in [("toy", TOY), (args.shape, build_checkpoint(args.shape))]:
        hf = transformers.EncoderDecoderModel.from_pretrained(directory).eval()
        mb = minibertgen.EncoderDecoderModel.from_pretrained(directory)
        vocab = mb.config.encoder.vocab_size
        ids = np.random.default_rng(0).integers(6, vocab, size=(4, 24))
        limit = min(n, mb.config.decoder.max_position_embeddings - 1)
        for task, kw in [("greedy", {}), ("beam4", {"num_beams": 4}), ("sample", {"do_sample": True, "top_k": 20})]:
            kw = dict(kw, max_new_tokens=limit, min_new_tokens=limit)
            with torch.no_grad():
                t_hf = median_time(lambda: hf.generate(torch.tensor(ids), **kw), args.reps)
                ref = hf.generate(torch.tensor(ids), **kw).numpy()
            t_mb = median_time(lambda: mb.generate(ids, seed=0, **kw), args.reps)
            same = "-" if task == "sample" else str(bool(np.array_equal(ref, mb.generate(ids, **kw))))
            print(f"{label:<8} {task:<8} {t_hf:>15.3f} {t_mb:>14.3f} {t_hf / t_mb:>6.2f} {same}")


if __name__ == "__main__":
    main()
