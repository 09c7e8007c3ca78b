"""Greedy and beam search on the tiny bert2bert trained (with transformers) to copy or reverse words.

    python examples/generate_toy.py
"""
import json
from pathlib import Path

import numpy as np

import minibertgen as mb

checkpoint = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "generation" / "toy_bert2bert"
vocab = json.loads((checkpoint / "vocab.json").read_text())  # a plain word list: id -> word
model = mb.EncoderDecoderModel.from_pretrained(checkpoint)


def encode(text):
    return np.array([[vocab.index(word) for word in text.split()] + [vocab.index("</s>")]])


def decode(ids):
    return " ".join(vocab[i] for i in ids if vocab[i] not in ("<s>", "</s>", "<pad>"))


source = encode("reverse apple bird cat dog")
greedy = model.generate(source, max_new_tokens=10)
beams = model.generate(source, max_new_tokens=10, num_beams=4, num_return_sequences=2,
                       return_dict_in_generate=True, output_scores=True)
print("greedy:", greedy[0].tolist(), "->", decode(greedy[0]))
for ids, score in zip(beams.sequences, beams.sequences_scores):
    print(f"beam  : {decode(ids):30s} score {float(score):.4f}")
