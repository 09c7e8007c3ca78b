"""Train the shipped model bert2bert-dates from scratch: dates as people write them -> ISO dates.

    pip install babel                      # the oracle that writes the data (examples/dates_task.py)
    pip install -e ".[reference]"          # transformers, for the held-out figure measured there too
    python examples/train_shipped_model.py --out minibertgen/models/bert2bert_dates

Steps: Babel writes the rows (examples/dates_task.py; held-out days never seen in training)
-> the ``sentencepiece`` library trains the tokenizer on the training rows' text -> a small
BertGenerationEncoder + BertGenerationDecoder in an EncoderDecoderModel, new weights from
``--seed`` -> minibertgen.Seq2SeqTrainer trains it (DataCollatorForSeq2Seq pads the batches) ->
greedy generation on held-out rows gives the exact match, in float32 and with NF4 weights ->
the directory gets the model, tokenizer, held-out rows and a model card with the figures.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# One BLAS thread: this model's products are small, and on 2 shared cores a second OpenBLAS thread
# spins waiting for its partner (measured here, load average 15: 1.28 s of CPU per step with two
# BLAS threads, 0.13 s with one).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dates_task  # noqa: E402

import minibertgen as mb  # noqa: E402

SPECIAL_IDS = {"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3}  # as the bbc / wmt BertGeneration models
SEP_TOKEN = "<::::>"  # BertGenerationTokenizer's sep_token: in the vocabulary, so no added token


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="minibertgen/models/bert2bert_dates", help="directory to write")
    parser.add_argument("--train-rows", type=int, default=60000, help="training rows (random day, locale, style)")
    parser.add_argument("--heldout-rows", type=int, default=1000, help="held-out rows measured")
    parser.add_argument("--heldout-shipped", type=int, default=200, help="held-out rows written to heldout.jsonl")
    parser.add_argument("--vocab-size", type=int, default=200)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2, help="layers on each side")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def train_tokenizer(rows, vocab_size, out: Path):
    """SentencePiece (unigram) on the training rows' sources and targets; digits one piece each."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    text = [row["source"] for row in rows] + [row["target"] for row in rows]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buffer, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, split_digits=True, user_defined_symbols=[SEP_TOKEN], minloglevel=2,
        **SPECIAL_IDS)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiece.model").write_bytes(buffer.getvalue())
    tokenizer = mb.BertGenerationTokenizer(str(out / "spiece.model"), model_max_length=64)
    tokenizer.save_pretrained(out)
    return mb.AutoTokenizer.from_pretrained(out)


def build_model(vocab_size, hidden, layers, heads, seed):
    """A new bert2bert: BertGenerationEncoder + BertGenerationDecoder (cross-attention), seeded."""
    mb.set_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * hidden, max_position_embeddings=64, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, bos_token_id=SPECIAL_IDS["bos_id"],
                  eos_token_id=SPECIAL_IDS["eos_id"], pad_token_id=SPECIAL_IDS["pad_id"])
    encoder = mb.BertGenerationEncoder(mb.BertGenerationConfig(**common))
    decoder = mb.BertGenerationDecoder(mb.BertGenerationConfig(**common, is_decoder=True, add_cross_attention=True))
    model = mb.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = SPECIAL_IDS["bos_id"]
    model.config.pad_token_id = SPECIAL_IDS["pad_id"]
    model.config.eos_token_id, model.config.bos_token_id = SPECIAL_IDS["eos_id"], SPECIAL_IDS["bos_id"]
    generation = model.generation_config
    generation.decoder_start_token_id, generation.bos_token_id = SPECIAL_IDS["bos_id"], SPECIAL_IDS["bos_id"]
    generation.eos_token_id, generation.pad_token_id = SPECIAL_IDS["eos_id"], SPECIAL_IDS["pad_id"]
    # An ISO date is 11 pieces + </s>. max_length (not max_new_tokens) so that the pipeline keeps it over
    # its own max_new_tokens=256, as transformers' does, which would run past the 64 positions.
    generation.max_length, generation.num_beams = 16, 1
    return model


def encode_rows(tokenizer, rows):
    """Features as a seq2seq collator takes them: source pieces, target pieces + </s>."""
    return [{"input_ids": tokenizer(row["source"])["input_ids"],
             "labels": tokenizer(row["target"])["input_ids"] + [tokenizer.eos_token_id]} for row in rows]


def train_with_trainer(model, tokenizer, features, args, logs: str):
    from minibertgen import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    training_args = Seq2SeqTrainingArguments(
        output_dir=logs, per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        num_train_epochs=args.epochs, warmup_ratio=args.warmup_ratio, lr_scheduler_type="linear",
        weight_decay=0.01, max_grad_norm=1.0, logging_steps=100, save_strategy="no", seed=args.seed,
        report_to=[])
    trainer = Seq2SeqTrainer(model=model, args=training_args, train_dataset=features,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                             processing_class=tokenizer)
    trainer.train()
    return trainer.model


def exact_match(texts_of, rows, batch_size=100) -> float:
    """Share of rows whose generated text (``texts_of(sources)``) is the target."""
    right = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        texts = texts_of([row["source"] for row in chunk])
        right += sum(text == row["target"] for text, row in zip(texts, chunk))
    return right / len(rows)


def minibertgen_texts(model, tokenizer):
    """sources -> generated texts: minibertgen, the model's generation settings."""
    def texts_of(sources):
        encoded = tokenizer(sources, padding=True, return_tensors="np")
        out = model.generate(encoded["input_ids"], attention_mask=encoded["attention_mask"])
        return tokenizer.batch_decode(out, skip_special_tokens=True)
    return texts_of


def transformers_texts(out: Path):
    """sources -> generated texts: transformers 4.57 (AutoTokenizer + EncoderDecoderModel) on the directory."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.EncoderDecoderModel.from_pretrained(out).eval()

    def texts_of(sources):
        encoded = tokenizer(sources, padding=True, return_tensors="pt")
        return tokenizer.batch_decode(model.generate(**encoded), skip_special_tokens=True)
    return texts_of


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    started = time.time()
    train_days, heldout_days = dates_task.split_days(args.seed)
    train_rows = dates_task.sample_rows(train_days, args.train_rows, seed=args.seed + 1)
    heldout_rows = dates_task.sample_rows(heldout_days, args.heldout_rows, seed=args.seed + 2)
    tokenizer = train_tokenizer(train_rows, args.vocab_size, out)
    model = build_model(tokenizer.vocab_size, args.hidden_size, args.layers, args.heads, args.seed)
    features = encode_rows(tokenizer, train_rows)
    with tempfile.TemporaryDirectory() as logs:  # the Trainer's log; nothing of it is shipped
        model = train_with_trainer(model, tokenizer, features, args, logs)
    minutes = (time.time() - started) / 60
    model.eval().save_pretrained(out)
    dates_task.write_jsonl(heldout_rows[:args.heldout_shipped], out / "heldout.jsonl")
    figures = measure(out, heldout_rows, args.heldout_shipped)
    figures.update(minutes=round(minutes, 1), load=round(os.getloadavg()[1], 1), train_rows=len(train_rows),
                   train_days=len(train_days), heldout_days=len(heldout_days), parameters=model.num_parameters())
    print(json.dumps(figures, indent=1))
    write_card(out, args, figures)


def measure(out: Path, heldout_rows, shipped):
    """Held-out exact match of the saved directory, float32 and NF4, on all and on the shipped rows."""
    tokenizer = mb.AutoTokenizer.from_pretrained(out)
    float32 = mb.EncoderDecoderModel.from_pretrained(out)
    nf4 = mb.EncoderDecoderModel.from_pretrained(
        out, quantization_config=mb.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    footprints = float32.get_memory_footprint(), nf4.get_memory_footprint()
    float32, nf4 = minibertgen_texts(float32, tokenizer), minibertgen_texts(nf4, tokenizer)
    return {"heldout_rows": len(heldout_rows), "exact_match": exact_match(float32, heldout_rows),
            "exact_match_nf4": exact_match(nf4, heldout_rows), "shipped_rows": shipped,
            "exact_match_shipped": exact_match(float32, heldout_rows[:shipped]),
            "exact_match_nf4_shipped": exact_match(nf4, heldout_rows[:shipped]),
            "exact_match_transformers": exact_match(transformers_texts(out), heldout_rows),
            "bytes_float32": footprints[0], "bytes_nf4": footprints[1]}


CARD = Path(__file__).resolve().parent / "shipped_model_card.md"


def write_card(out: Path, args, figures):
    """README.md of the model from the card template, with this run's figures filled in."""
    command = "python examples/train_shipped_model.py" + "".join(
        f" --{key.replace('_', '-')} {value}" for key, value in vars(args).items()
        if key != "out" and value != parse_args([]).__dict__[key])
    command += f" --out {args.out}"
    text = CARD.read_text(encoding="utf-8").format(
        command=command, args=args, f=figures, ff=4 * args.hidden_size,
        warmup_pct=100 * args.warmup_ratio, mb32=figures["bytes_float32"] / 1e6, mbnf4=figures["bytes_nf4"] / 1e6,
        em=100 * figures["exact_match"], em_hf=100 * figures["exact_match_transformers"],
        em_nf4=100 * figures["exact_match_nf4"], em_shipped=100 * figures["exact_match_shipped"],
        em_nf4_shipped=100 * figures["exact_match_nf4_shipped"])
    (out / "README.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
