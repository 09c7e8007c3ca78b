"""Tokenization speed: minibertgen vs transformers' slow and fast tokenizers, side by side.

    python benchmarks/bench_tokenizers.py [--repeat 5] [--json results.json]

Each tokenizer encodes the same texts (the 331-string test corpus, repeated to about
2,000 texts) as one padded, truncated batch (`tokenizer(texts, padding=True,
truncation=True, max_length=128)`), and decodes the result. Reported: texts per
second, best of --repeat runs, after one warm-up run (which also fills BPE caches for
every implementation alike). transformers and tokenizers are only needed for their
columns; without them only minibertgen is timed.
"""
import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures" / "tokenizers"
BPE = FIXTURES / "bytelevel_bpe"


def builders():
    """name -> {implementation -> zero-argument constructor}."""
    import minibertgen.tokenizers as mb

    vocab, unigram = str(FIXTURES / "minilm_vocab.txt"), str(FIXTURES / "botchan_en_unigram_1000.model")
    table = {
        "WordPiece (MiniLM vocab)": {"minibertgen": lambda: mb.BertTokenizer(vocab)},
        "SentencePiece (botchan unigram)": {"minibertgen": lambda: mb.BertGenerationTokenizer(unigram)},
        "byte-level BPE (fixture vocab)": {
            "minibertgen": lambda: mb.RobertaTokenizer(str(BPE / "vocab.json"), str(BPE / "merges.txt"))
        },
    }
    try:
        import transformers as tf
    except ImportError:
        return table
    logging.getLogger("transformers").setLevel(logging.ERROR)
    table["WordPiece (MiniLM vocab)"].update(
        {"transformers slow": lambda: tf.BertTokenizer(vocab), "transformers fast": lambda: tf.BertTokenizerFast(vocab)}
    )
    table["SentencePiece (botchan unigram)"]["transformers slow"] = lambda: tf.BertGenerationTokenizer(unigram)
    # BertGeneration has no fast tokenizer in transformers, so that column stays empty.
    bpe_files = (str(BPE / "vocab.json"), str(BPE / "merges.txt"))
    table["byte-level BPE (fixture vocab)"].update(
        {"transformers slow": lambda: tf.RobertaTokenizer(*bpe_files),
         "transformers fast": lambda: tf.RobertaTokenizerFast(*bpe_files)}  # fmt: skip
    )
    return table


def time_one(tokenizer, texts, repeat):
    """Best wall time over ``repeat`` runs of batch encode, and of batch decode."""
    tokenizer(texts, padding=True, truncation=True, max_length=128)  # warm-up
    encode, decode = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        ids = tokenizer(texts, padding=True, truncation=True, max_length=128)["input_ids"]
        encode.append(time.perf_counter() - start)
        start = time.perf_counter()
        tokenizer.batch_decode(ids, skip_special_tokens=True)
        decode.append(time.perf_counter() - start)
    return min(encode), min(decode)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--copies", type=int, default=6, help="corpus copies (331 texts each)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    corpus = json.loads((FIXTURES / "corpus.json").read_text(encoding="utf-8"))
    texts = corpus * args.copies
    print(f"{len(texts)} texts, best of {args.repeat}; Python {platform.python_version()}, {platform.machine()}")
    print(f"{'tokenizer':34} {'implementation':18} {'encode texts/s':>15} {'decode texts/s':>15}")
    results = []
    for family, implementations in builders().items():
        for implementation, make in implementations.items():
            enc, dec = time_one(make(), texts, args.repeat)
            row = {"tokenizer": family, "implementation": implementation,
                   "encode_texts_per_s": len(texts) / enc, "decode_texts_per_s": len(texts) / dec}  # fmt: skip
            results.append(row)
            print(f"{family:34} {implementation:18} {row['encode_texts_per_s']:15,.0f} {row['decode_texts_per_s']:15,.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
