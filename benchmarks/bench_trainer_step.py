"""Where a Trainer step's time goes: its phases in minibertgen and in torch, side by side.

    python benchmarks/bench_trainer_step.py              # batch 16, source 12, target 10 (the recipe's shape)
    python benchmarks/bench_trainer_step.py --rounds 3   # interleaved rounds, medians

The MiniLM warm start of bench_trainer.py (benchmarks/_checkpoints/trainer_minilm), one
step as transformers' Seq2SeqTrainer takes it, timed phase by phase: forward with the
loss, backward, clip_grad_norm_(1.0), AdamW (torch: fused=True, the Trainer's default
optim "adamw_torch_fused"; lr 2e-4, weight decay 0.01), zero_grad.  Dropout off in both
(so the same work), each library in its own subprocess with the same number of threads,
medians of --reps steps after two warm-up steps.  Also printed: the time of all the
matrix products of a minibertgen step (the forward's products and the backward's
linear_backward, which includes the bias gradients' sums), so that what is left over
can be compared.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_training import make_batch  # noqa: E402  (the same batch: half the rows padded by a quarter)

CHECKPOINT = HERE / "_checkpoints" / "trainer_minilm"
PHASES = ("forward", "backward", "clip", "adamw", "zero_grad")


def torch_step(args):
    import torch
    import transformers as hf

    torch.set_num_threads(args.threads)
    model = hf.EncoderDecoderModel.from_pretrained(CHECKPOINT).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01, fused=True)
    ids, mask, labels = (torch.from_numpy(a) for a in make_batch(args.batch, args.source, args.target))
    held = {}
    return model, [lambda: held.update(loss=model(input_ids=ids, attention_mask=mask, labels=labels).loss),
                   lambda: held["loss"].backward(),
                   lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0),
                   optimizer.step, optimizer.zero_grad]


def minibertgen_step(args):
    import minibertgen as mb
    from minibertgen.optim import AdamW, clip_grad_norm_

    model = mb.EncoderDecoderModel.from_pretrained(CHECKPOINT).train()
    for config in (model.config.encoder, model.config.decoder):
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    optimizer = AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    ids, mask, labels = make_batch(args.batch, args.source, args.target)
    held = {}
    return model, [lambda: held.update(loss=model(input_ids=ids, attention_mask=mask, labels=labels).loss),
                   lambda: held["loss"].backward(),
                   lambda: clip_grad_norm_(model.parameters(), 1.0),
                   optimizer.step, optimizer.zero_grad]


def products_timer():
    """Wrap minibertgen's CPU products (forward and backward) to add up their time."""
    from minibertgen.fast import cpu, cpu_training

    spent = [0.0]

    def timed(fn):
        def run(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - start
        return run

    cpu.product = timed(cpu.product)
    cpu_training.TRAINING_KERNELS["linear_backward"] = timed(cpu_training.TRAINING_KERNELS["linear_backward"])
    return spent


def child(args):
    spent = products_timer() if args.child == "minibertgen" else None
    model, phases = (torch_step if args.child == "torch" else minibertgen_step)(args)
    for _ in range(2):
        for phase in phases:
            phase()
    rows = []
    for _ in range(args.reps):
        if spent is not None:
            spent[0] = 0.0
        row = []
        for phase in phases:
            start = time.perf_counter()
            phase()
            row.append(time.perf_counter() - start)
        rows.append(row + ([spent[0]] if spent is not None else []))
    result = {name: statistics.median(r[i] for r in rows) for i, name in enumerate(PHASES)}
    result["step"] = statistics.median(sum(r[:len(PHASES)]) for r in rows)
    if spent is not None:
        result["products"] = statistics.median(r[-1] for r in rows)
    return result


def run(library, args):
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "PYTHONPATH": str(HERE.parent)}
    command = [sys.executable, __file__, "--child", library] + [
        f"--{k}={v}" for k, v in vars(args).items() if k in ("reps", "batch", "source", "target", "threads")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{library} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--source", type=int, default=12)
    parser.add_argument("--target", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", choices=["torch", "minibertgen"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if not (CHECKPOINT / "model.safetensors").is_file():
        sys.exit(f"{CHECKPOINT} is missing: run benchmarks/bench_trainer.py once (it builds it)")
    rounds = []
    for number in range(args.rounds):  # interleaved, alternating which library goes first
        order = ("torch", "minibertgen") if number % 2 == 0 else ("minibertgen", "torch")
        rounds.append({library: run(library, args) for library in order})
    medians = {lib: {k: statistics.median(r[lib][k] for r in rounds) for k in rounds[0][lib]}
               for lib in ("torch", "minibertgen")}
    print(f"{time.strftime('%Y-%m-%d %H:%M')} load average {os.getloadavg()[0]:.1f}; batch {args.batch}, source "
          f"{args.source}, target {args.target}, {args.threads} threads, median of {args.reps} steps x {args.rounds} "
          "round(s); ms")
    print(f"{'phase':12s} {'torch':>8s} {'minibertgen':>12s} {'torch / ours':>13s}")
    for name in (*PHASES, "step"):
        theirs, ours = medians["torch"][name] * 1e3, medians["minibertgen"][name] * 1e3
        print(f"{name:12s} {theirs:8.1f} {ours:12.1f} {theirs / ours:13.2f}")
    products = medians["minibertgen"]["products"] * 1e3
    print(f"{'(products)':12s} {'':8s} {products:12.1f}   minibertgen's matrix products in forward + backward")


if __name__ == "__main__":
    main()
