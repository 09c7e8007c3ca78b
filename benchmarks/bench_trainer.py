"""Fine-tuning with the Trainer: minibertgen's Seq2SeqTrainer against transformers' (torch, CPU).

    python benchmarks/bench_trainer.py --steps 60                 # quick: speed and memory
    python benchmarks/bench_trainer.py --steps 1200 --eval 100    # the example's whole recipe

Both libraries run examples/finetune_bert2bert.py's recipe (its data, tokenization with
text_target, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments, checkpoints every
--save-steps, predict_with_generate with exact match) from the same checkpoint: the
documentation's MiniLM warm start built once by transformers (torch seed 0) under
benchmarks/_checkpoints/trainer_minilm.  Each library runs in its own fresh subprocess
(so its peak resident memory is its own), limited to the same number of threads.
Printed: the loss every --log-every steps side by side, training samples/s, peak RSS,
held-out exact match, and the ratios (minibertgen / torch for speed: > 1 is faster;
minibertgen / torch for memory: < 1 is smaller).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
CHECKPOINT = HERE / "_checkpoints" / "trainer_minilm"
sys.path.insert(0, str(ROOT / "examples"))


def build_checkpoint() -> Path:
    """The warm start, built by transformers and saved once (loaded by both libraries)."""
    if (CHECKPOINT / "model.safetensors").is_file():
        return CHECKPOINT
    import torch
    import transformers

    import finetune_bert2bert as example

    torch.manual_seed(0)
    model = example.build_model(transformers, str(example.minilm_checkpoint()), seed=0)
    model.save_pretrained(CHECKPOINT)
    return CHECKPOINT


def worker(args) -> dict:
    """One library's whole run; returns its figures (printed as the last line, JSON)."""
    import finetune_bert2bert as example

    if args.worker == "transformers":
        import torch
        import transformers as lib

        torch.set_num_threads(args.threads)
        extra = {"use_cpu": True, "disable_tqdm": True}
    else:
        import minibertgen as lib

        extra = {"disable_tqdm": True, "plot_curves": False}
    tokenizer = lib.BertTokenizer.from_pretrained(str(example.minilm_checkpoint()))
    model = lib.EncoderDecoderModel.from_pretrained(str(CHECKPOINT))
    recipe = argparse.Namespace(output_dir=args.output_dir, batch_size=args.batch_size, lr=args.lr,
                                warmup=args.warmup, steps=args.steps, log_every=args.log_every,
                                save_steps=args.save_steps, eval_examples=args.eval, seed=0)
    trainer = example.recipe(lib, model, tokenizer, recipe, **extra)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    return {"library": args.worker, "train_seconds": seconds, "samples_per_second": args.steps * args.batch_size / seconds,
            "losses": [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e],
            "exact_match": metrics["eval_exact_match"], "eval_loss": metrics["eval_loss"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_library(name, args, output_dir) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT), MINIBERTGEN_QUIET="1")
    command = [sys.executable, __file__, "--worker", name, "--output-dir", str(output_dir)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("worker", "output_dir", "save") and v is not None]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(theirs, ours, args) -> str:
    lines = [f"recipe: {args.steps} steps, batch {args.batch_size}, lr {args.lr}, warm-up {args.warmup}, "
             f"{args.threads} threads; held-out {args.eval} examples", "step   torch loss   minibertgen loss"]
    for (step, a), (_, b) in zip(theirs["losses"], ours["losses"]):
        lines.append(f"{step:5d}   {a:10.4f}   {b:10.4f}")
    for key, label in (("samples_per_second", "training samples/s"), ("peak_rss_mb", "peak RSS (MB)"),
                       ("exact_match", "held-out exact match"), ("eval_loss", "held-out loss"),
                       ("train_seconds", "train() seconds")):
        lines.append(f"{label:22s} torch {theirs[key]:10.3f}   minibertgen {ours[key]:10.3f}")
    lines.append(f"throughput minibertgen / torch: {ours['samples_per_second'] / theirs['samples_per_second']:.2f}x "
                 f"(target >= 1.2)")
    lines.append(f"peak RSS minibertgen / torch: {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f} (target <= 0.8)")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--save-steps", type=int, default=200)
    parser.add_argument("--eval", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--order", default="torch-first", choices=["torch-first", "minibertgen-first"])
    parser.add_argument("--save", default=None, help="append the report (and JSON) to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main():
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    import tempfile

    build_checkpoint()
    with tempfile.TemporaryDirectory() as scratch:
        names = ["transformers", "minibertgen"] if args.order == "torch-first" else ["minibertgen", "transformers"]
        runs = {name: run_library(name, args, Path(scratch) / name) for name in names}
    text = report(runs["transformers"], runs["minibertgen"], args)
    load = os.getloadavg()[0]
    text = f"{time.strftime('%Y-%m-%d %H:%M')} load average {load:.1f}\n{text}\n"
    print(text)
    if args.save:
        with open(args.save, "a", encoding="utf-8") as handle:
            handle.write(text + json.dumps(runs) + "\n\n")


if __name__ == "__main__":
    main()
