"""Assisted greedy decoding against plain greedy search: tokens per second, ids identical.

    python benchmarks/bench_assisted.py [--reps 3] [--new 48] [--device cpu]

The model is a 24-layer BertGenerationDecoder (random weights; hidden 512, 8 heads,
intermediate 2048, vocab 8000: ~90 M parameters, memory-bound at batch 1).  Cases:

* a 6-layer assistant with its own random weights (it rarely agrees with the model:
  random weights make the acceptance rate low, so this is the cost of bad guesses;
  every random model here settles into repeating one token of its own);
* the same with num_assistant_tokens_schedule="heuristic" (fewer guesses after misses);
* an assistant made of the model's own first 6 layers, embeddings and LM head;
* prompt lookup (prompt_lookup_num_tokens=10) on a copy-like input: the prompt repeats
  a random 24-token sequence three times.

Each case prints tokens/s, the ratio against plain greedy (> 1: faster), how many of
the guessed tokens the model accepted, and checks the ids equal plain greedy's.
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np

from minibertgen import BertGenerationConfig, BertGenerationDecoder
from minibertgen.generation import assisted

SHAPE = dict(vocab_size=8000, hidden_size=512, num_attention_heads=8, intermediate_size=2048,
             max_position_embeddings=512, is_decoder=True,
             initializer_range=0.5)  # wide random weights: varied tokens (0.02 makes every model repeat one)


def build(device):
    big = BertGenerationDecoder(BertGenerationConfig(num_hidden_layers=24, **SHAPE), seed=0, device=device)
    small = BertGenerationDecoder(BertGenerationConfig(num_hidden_layers=6, **SHAPE), seed=1, device=device)
    early = BertGenerationDecoder(BertGenerationConfig(num_hidden_layers=6, **SHAPE), seed=2, device=device)
    tree = copy.copy(big.params)  # shares the arrays: the first 6 layers, embeddings and head of `big`
    tree["bert"] = dict(big.params["bert"], encoder=dict(big.params["bert"]["encoder"],
                                                          layer=big.params["bert"]["encoder"]["layer"][:6]))
    early.params = tree
    return big, small, early


class Counter:
    """Counts the guesses offered and accepted, by wrapping assisted._verify."""

    def __init__(self):
        self.offered = self.accepted = self.passes = 0
        self._verify = assisted._verify

    def __enter__(self):
        def counting(target, ids, candidates, processors):
            out, n = self._verify(target, ids, candidates, processors)
            self.offered, self.accepted, self.passes = self.offered + len(candidates), self.accepted + n, \
                self.passes + 1
            return out, n

        assisted._verify = counting
        return self

    def __exit__(self, *exc):
        assisted._verify = self._verify


def timed(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--new", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    big, small, early = build(args.device)
    rng = np.random.default_rng(0)
    plain_prompt = rng.integers(4, 8000, size=(1, 16))
    copy_prompt = np.tile(rng.integers(4, 8000, size=(1, 24)), (1, 3))
    settings = dict(max_new_tokens=args.new, min_new_tokens=args.new)  # no early stop: equal work
    cases = [("6-layer random assistant", plain_prompt, dict(assistant_model=small)),
             ("same, heuristic schedule", plain_prompt,
              dict(assistant_model=small, num_assistant_tokens_schedule="heuristic")),
             ("assistant = model's first 6 layers", plain_prompt, dict(assistant_model=early)),
             ("prompt lookup (10), copy-like input", copy_prompt, dict(prompt_lookup_num_tokens=10))]
    print(f"24-layer decoder, hidden 512, vocab 8000, batch 1, {args.new} new tokens, device {args.device}, "
          f"median of {args.reps}")
    baselines = {}
    for label, prompt, extra in cases:
        key = id(prompt)
        if key not in baselines:
            baselines[key] = timed(lambda: big.generate(prompt, **settings), args.reps)
        base_time, base_ids = baselines[key]
        with Counter() as count:
            run_time, ids = timed(lambda: big.generate(prompt, **settings, **extra), args.reps)
        same = bool(np.array_equal(np.asarray(ids), np.asarray(base_ids)))
        runs = args.reps + 1
        print(f"{label:38s} greedy {args.new / base_time:7.1f} tok/s  assisted {args.new / run_time:7.1f} tok/s  "
              f"ratio {base_time / run_time:5.2f}  accepted {count.accepted // runs}/{count.offered // runs} guesses "
              f"in {count.passes // runs} model passes  ids identical: {same}")
        if not same:
            raise SystemExit(f"{label}: assisted ids differ from plain greedy")


if __name__ == "__main__":
    main()
