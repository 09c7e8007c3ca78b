# %% [markdown]
# # 9. Fine-tuning end to end
#
# **What you will learn**
#
# - the fine-tuning recipe of transformers, run on minibertgen with the import swapped:
#   data -> `tokenizer(source, text_target=target)` -> `DataCollatorForSeq2Seq` ->
#   `Seq2SeqTrainer` -> `train()` -> `evaluate()` -> `generate()`;
# - what a checkpoint holds (`checkpoint-N/`: the model as `save_pretrained` writes it,
#   AdamW's moments, the schedule, the random generators, `trainer_state.json`), and that
#   resuming from one reproduces the uninterrupted run exactly;
# - how the same recipe runs in transformers, with its loss curve beside ours.
#
# The task is small enough to learn in seconds on a laptop: the encoder reads
# "copy w1 w2 ..." or "reverse w1 w2 ...", the decoder writes the words copied or reversed.

# %%
import random
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
NOTEBOOK_START = time.perf_counter()
WORK = Path(tempfile.mkdtemp())

try:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
except ImportError:
    torch = transformers = None
    print("[reference skipped] transformers/torch are not installed: pip install -e '.[reference]'")

# %% [markdown]
# ## 1. Data and tokenizer
#
# A WordPiece vocabulary of a dozen words is enough. `tokenizer(source, text_target=target)`
# encodes the source as `input_ids` and the target as `labels`, as transformers does. A data
# set is any list of dicts (or a `datasets.Dataset` after `map`).

# %%
WORDS = "apple bird cat dog egg fish goat hat milk kite lamp moon".split()
(WORK / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "copy", "reverse", *WORDS]))
tokenizer = mb.BertTokenizer(str(WORK / "vocab.txt"))


def make_pairs(count, seed):
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        task, words = rng.choice(["copy", "reverse"]), [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
        pairs.append((f"{task} {' '.join(words)}", " ".join(words if task == "copy" else words[::-1])))
    return pairs


def tokenize(tok, pairs):
    return [dict(tok(source, text_target=target)) for source, target in pairs]


train_pairs, held_out_pairs = make_pairs(1024, 0), make_pairs(100, 1)
train_data, held_out = tokenize(tokenizer, train_pairs), tokenize(tokenizer, held_out_pairs)
print(train_pairs[0], "->", {k: train_data[0][k] for k in ("input_ids", "labels")})

# %% [markdown]
# ## 2. The collator
#
# `DataCollatorForSeq2Seq` pads a list of examples into arrays: sources with `[PAD]` and an
# attention mask, labels with `-100` (the loss ignores them), and, given the model, the
# decoder's inputs: the labels shifted one to the right behind the start token.

# %%
def build_start_model(directory):
    """A fresh tiny bert2bert, saved: built by transformers when it is here, so both libraries
    start from the same weights."""
    common = dict(vocab_size=len(WORDS) + 7, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=32, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    lib = transformers if transformers is not None else mb
    if torch is not None:
        torch.manual_seed(0)
    mb.set_seed(0)
    config = lib.EncoderDecoderConfig.from_encoder_decoder_configs(
        lib.BertGenerationConfig(**common), lib.BertGenerationConfig(**common, is_decoder=True, add_cross_attention=True))
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    lib.EncoderDecoderModel(config=config).save_pretrained(directory)
    return directory


START = build_start_model(WORK / "start")
model = mb.EncoderDecoderModel.from_pretrained(START)
collator = mb.DataCollatorForSeq2Seq(tokenizer, model=model)
batch = collator(train_data[:3])
for name, value in batch.items():
    print(f"{name:18s} {value.shape}  {value[0].tolist()}")

# %% [markdown]
# ## 3. The trainer
#
# `Seq2SeqTrainingArguments` takes transformers' names and defaults. Here: batches of 32,
# AdamW at 3e-3 with a linear warm-up over 20 steps then a linear decay to 0 at step 240,
# weight decay 0.01 (not on biases and LayerNorm weights), gradients clipped at norm 1.0,
# a log line every 10 steps and a checkpoint every 120. Torch-only arguments (`fp16`,
# `deepspeed`, ...) are refused by name rather than ignored.

# %%
def arguments(lib, output_dir, **extra):
    return lib.Seq2SeqTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=32, per_device_eval_batch_size=100,
        learning_rate=3e-3, warmup_steps=20, max_steps=240, weight_decay=0.01, logging_steps=10, save_steps=120,
        predict_with_generate=True, generation_max_length=8, seed=0, report_to="none", disable_tqdm=True, **extra)


def exact_match(prediction):
    predictions = np.where(prediction.predictions == -100, 0, prediction.predictions)
    labels = np.where(prediction.label_ids == -100, 0, prediction.label_ids)
    got = tokenizer.batch_decode(predictions, skip_special_tokens=True)
    want = tokenizer.batch_decode(labels, skip_special_tokens=True)
    return {"exact_match": float(np.mean([g == w for g, w in zip(got, want)]))}


trainer = mb.Seq2SeqTrainer(model=model, args=arguments(mb, WORK / "ours", plot_curves=False), train_dataset=train_data,
                            eval_dataset=held_out, data_collator=collator, processing_class=tokenizer,
                            compute_metrics=exact_match)
started = time.perf_counter()
trainer.train()
ours_seconds = time.perf_counter() - started
ours_log = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
print(f"240 steps in {ours_seconds:.1f} s; loss {ours_log[0][1]:.3f} at step 10 -> {ours_log[-1][1]:.4f} at step 240")

# %% [markdown]
# ## 4. Checkpoints, and resuming from one
#
# Each checkpoint is a directory laid out as transformers lays it out, without pickle:
# the model files load in transformers as they are. It is written into a hidden directory
# and renamed when complete, so an interrupted save never leaves a half-written checkpoint.
#
# A new trainer given `resume_from_checkpoint` restores weights, AdamW's moments, the
# schedule's position and the random generators, skips the batches already seen, and
# continues. Its steps are the uninterrupted run's, bit for bit.

# %%
checkpoint = WORK / "ours" / "checkpoint-120"
print(sorted(p.name for p in checkpoint.iterdir()))
resumed = mb.Seq2SeqTrainer(model=mb.EncoderDecoderModel.from_pretrained(START),
                            args=arguments(mb, WORK / "resumed", plot_curves=False), train_dataset=train_data,
                            data_collator=collator, processing_class=tokenizer)
resumed.train(resume_from_checkpoint=str(checkpoint))
resumed_log = [(e["step"], e["loss"]) for e in resumed.state.log_history if "loss" in e]
if resumed_log != ours_log:
    raise AssertionError(f"resumed run differs: {resumed_log[-3:]} vs {ours_log[-3:]}")
for name, value in resumed.model.state_dict().items():
    if not np.array_equal(value, trainer.model.state_dict()[name]):
        raise AssertionError(f"{name}: the resumed run's weight differs from the uninterrupted run's")
print("resumed from step 120: the same 24 logged losses and the same final weights, bit for bit")

# %% [markdown]
# ## 5. Evaluation
#
# `evaluate()` computes the held-out loss and, with `predict_with_generate`, runs greedy
# `generate()` on every held-out source and hands the ids to `compute_metrics`.

# %%
metrics = trainer.evaluate()
print({k: round(v, 4) for k, v in metrics.items() if k in ("eval_loss", "eval_exact_match")})
if metrics["eval_exact_match"] < 0.9:
    raise AssertionError(f"the model did not learn the task: exact match {metrics['eval_exact_match']}")

# %% [markdown]
# ## 6. The same recipe in transformers
#
# The same code with `transformers` in place of `minibertgen` (and `use_cpu=True`): same
# starting weights, data, arguments. The batches come in a different order (each library
# shuffles with its own generator), so the curves are two runs of one recipe, not one run
# twice.

# %%
torch_log = []
if transformers is not None:
    their_tokenizer = transformers.BertTokenizer(str(WORK / "vocab.txt"))
    their_model = transformers.EncoderDecoderModel.from_pretrained(START)
    theirs = transformers.Seq2SeqTrainer(
        model=their_model, args=arguments(transformers, WORK / "theirs", use_cpu=True),
        train_dataset=tokenize(their_tokenizer, train_pairs), eval_dataset=tokenize(their_tokenizer, held_out_pairs),
        data_collator=transformers.DataCollatorForSeq2Seq(their_tokenizer, model=their_model),
        processing_class=their_tokenizer, compute_metrics=exact_match)
    theirs.remove_callback(transformers.PrinterCallback)  # (its log lines would fill the page)
    started = time.perf_counter()
    theirs.train()
    torch_seconds = time.perf_counter() - started
    torch_log = [(e["step"], e["loss"]) for e in theirs.state.log_history if "loss" in e]
    their_metrics = theirs.evaluate()
    print(f"transformers: 240 steps in {torch_seconds:.1f} s; loss {torch_log[-1][1]:.4f} at step 240; "
          f"held-out exact match {their_metrics['eval_exact_match']:.2f} (ours {metrics['eval_exact_match']:.2f})")
else:
    print("[reference skipped] transformers is not installed")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(*zip(*ours_log), label="minibertgen Seq2SeqTrainer")
if torch_log:
    ax.plot(*zip(*torch_log), "--", label="transformers Seq2SeqTrainer")
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.set_title("copy / reverse: one recipe, two libraries")
ax.legend()
plt.show()

# %% [markdown]
# ## 7. Generate
#
# The fine-tuned model is an ordinary `EncoderDecoderModel`: `generate()` it, or
# `trainer.save_model(path)` and load it in transformers.

# %%
for source, target in make_pairs(4, 2):
    ids = tokenizer(source, return_tensors="np").input_ids
    text = tokenizer.decode(trainer.model.generate(ids, max_length=8)[0], skip_special_tokens=True)
    print(f"{source!r:32} -> {text!r:24} (want {target!r})")

# %% [markdown]
# ## Exercises
#
# 1. Freeze the encoder (`model.encoder.requires_grad_(False)`) before training: how many
#    parameters are left to train (`model.num_parameters(only_trainable=True)`), and does
#    the task still learn?
# 2. Set `gradient_accumulation_steps=2` with batches of 16: the loss curve changes. Read
#    `minibertgen/trainer/loop.py` to see why (transformers' rule for a forward that takes
#    `**kwargs`).
# 3. Interrupt a run by raising an exception inside `_save_checkpoint` (monkeypatch it):
#    what is left in `output_dir`, and does `resume_from_checkpoint=True` pick up the
#    last complete checkpoint?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
