"""The generation cases compared with transformers: models, inputs, settings.

Shared by tests/fixtures/generation/make_reference.py (which records transformers' ids
in reference.json) and the tests (which replay them from the file, and live).
"""
import json
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent.parent / "fixtures" / "generation"

MODELS = {
    "toy_bert2bert": {"kind": "seq2seq", "trained": True},
    "random_seq2seq": {"kind": "seq2seq", "seed": 0, "vocab": 99},
    "random_seq2seq_relative": {"kind": "seq2seq", "seed": 1, "vocab": 77, "position": "relative_key_query"},
    "random_decoder": {"kind": "decoder", "seed": 2, "vocab": 88},  # absolute: see test_cache.py
}

TOY_SOURCES = ["copy cat dog egg", "reverse apple bird cat dog egg fish goat", "reverse sun moon",
               "copy zoo yak wolf van tree", "reverse kite lamp moon nest owl"]


def toy_ids(sentence):
    vocab = json.loads((FIXTURES / "toy_bert2bert" / "vocab.json").read_text())
    return [vocab.index(word) for word in sentence.split()] + [1]  # + </s>


def _pad(rows, left=False):
    width = max(len(r) for r in rows)
    padded = [([0] * (width - len(r)) + r) if left else (r + [0] * (width - len(r))) for r in rows]
    ids = np.array(padded, dtype=np.int64)
    mask = np.array([([0] * (width - len(r)) + [1] * len(r)) if left else ([1] * len(r) + [0] * (width - len(r)))
                     for r in rows], dtype=np.int64)
    return ids, mask


def _random_rows(seed, vocab, lengths):
    rng = np.random.default_rng(seed)
    return [rng.integers(4, vocab, size=n).tolist() for n in lengths]


def model_inputs(case):
    """(input_ids, attention_mask or None) as NumPy arrays for a case."""
    model, inputs = case["model"], case["inputs"]
    if model == "toy_bert2bert":
        rows = [toy_ids(s) for s in (TOY_SOURCES if inputs == "batch" else TOY_SOURCES[:1])]
    else:
        spec = MODELS[model]
        lengths = [7, 4, 9] if inputs == "batch" else [6]
        rows = _random_rows(spec["seed"], spec["vocab"], lengths)
    ids, mask = _pad(rows, left=MODELS[model]["kind"] == "decoder")
    return ids, (mask if case.get("mask", True) else None)


SEQ2SEQ_SETTINGS = [
    {}, {"num_beams": 2}, {"num_beams": 3}, {"num_beams": 4, "num_return_sequences": 2},
    {"num_beams": 5, "num_return_sequences": 5}, {"num_beams": 3, "length_penalty": 2.0},
    {"num_beams": 3, "length_penalty": 0.0}, {"num_beams": 4, "length_penalty": -0.5},
    {"num_beams": 3, "early_stopping": True}, {"num_beams": 3, "early_stopping": "never"},
    {"num_beams": 3, "early_stopping": "never", "length_penalty": 1.5},
    {"num_beams": 2, "early_stopping": True, "length_penalty": 0.5},
    {"no_repeat_ngram_size": 2}, {"num_beams": 3, "no_repeat_ngram_size": 3},
    {"repetition_penalty": 1.3}, {"num_beams": 2, "repetition_penalty": 0.8},
    {"min_length": 8}, {"num_beams": 3, "min_new_tokens": 6},
    {"max_new_tokens": 5}, {"num_beams": 3, "max_length": 7},
    {"num_beams": 2, "forced_bos_token_id": 5}, {"num_beams": 3, "forced_eos_token_id": 1, "max_new_tokens": 6},
    {"bad_words_ids": [[8], [9, 10]]}, {"num_beams": 3, "bad_words_ids": [[7, 8], [11]]},
    {"encoder_no_repeat_ngram_size": 2}, {"num_beams": 3, "encoder_no_repeat_ngram_size": 3},
    {"num_beams": 3, "eos_token_id": [1, 7]}, {"eos_token_id": [1, 7, 12]},
    {"num_beams": 2, "use_cache": False}, {"num_beams": 3, "pad_token_id": 3},
    {"num_beams": 4, "decoder_input_ids": [[9, 10]] * 5},
]
DECODER_SETTINGS = [
    {"max_new_tokens": 8}, {"max_new_tokens": 8, "num_beams": 3}, {"max_new_tokens": 8, "num_beams": 2,
                                                                    "num_return_sequences": 2},
    {"max_new_tokens": 8, "repetition_penalty": 1.5}, {"max_new_tokens": 8, "no_repeat_ngram_size": 2},
    {"max_new_tokens": 10, "num_beams": 4, "eos_token_id": [5, 9, 13], "length_penalty": 0.7},
    {"max_new_tokens": 8, "eos_token_id": [5, 9, 13]}, {"max_new_tokens": 6, "use_cache": False},
    {}, {"max_new_tokens": 8, "num_beams": 3, "early_stopping": True, "eos_token_id": [5, 9, 13]},
]


def _cases():
    out = []
    for model, spec in MODELS.items():
        settings = DECODER_SETTINGS if spec["kind"] == "decoder" else SEQ2SEQ_SETTINGS
        if model == "random_seq2seq_relative":
            settings = settings[:12]
        for i, s in enumerate(settings):
            s = dict(s)
            if "decoder_input_ids" in s:
                s["decoder_input_ids"] = s["decoder_input_ids"][:5 if model == "toy_bert2bert" else 3]
            out.append({"id": f"{model}-{i}", "model": model, "inputs": "batch", "settings": s})
        extra = [{"num_beams": 3}, {}] if spec["kind"] == "seq2seq" else [{"max_new_tokens": 5, "num_beams": 2}]
        for j, s in enumerate(extra):
            out.append({"id": f"{model}-single-{j}", "model": model, "inputs": "single", "settings": s,
                        "mask": False})
        if spec["kind"] == "seq2seq":  # padded batch without a mask: inferred from the pad token
            out.append({"id": f"{model}-nomask", "model": model, "inputs": "batch", "settings": {"num_beams": 2},
                        "mask": False})
    return out


CASES = _cases()
