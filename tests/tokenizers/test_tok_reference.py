"""Our tokenizers against outputs recorded from transformers 4.57's slow tokenizers.

Runs with NumPy + sentencepiece only: the references were written by
tests/fixtures/tokenizers/make_reference.py and are committed.
"""
import hashlib
import json

import pytest

from tok_helpers import OUR_SETUPS, corpus, load_reference, ours  # noqa: F401 (corpus is a fixture)

FIELDS = ("tokens", "ids", "ids_plain", "decoded", "decoded_skip", "decoded_noclean")


def _compute(tokenizer, text, ref_ids, field):
    if field == "tokens":
        return tokenizer.tokenize(text)
    if field == "ids":
        return tokenizer.encode(text)
    if field == "ids_plain":
        return tokenizer.encode(text, add_special_tokens=False)
    if field == "decoded":
        return tokenizer.decode(ref_ids)
    if field == "decoded_skip":
        return tokenizer.decode(ref_ids, skip_special_tokens=True)
    return tokenizer.decode(ref_ids, clean_up_tokenization_spaces=False)


def test_corpus_is_large_and_varied(corpus):
    assert len(corpus) >= 300
    joined = "".join(corpus)
    for needle in ("é", "日", "😀", "\x00", "\u200b", "https://", "3.14", "  ", "a" * 101):
        assert needle in joined, needle


@pytest.mark.parametrize("name", sorted(OUR_SETUPS))
def test_reference_matches_corpus(name, corpus):
    reference = load_reference(name)
    digest = hashlib.sha256(json.dumps(corpus, ensure_ascii=False).encode()).hexdigest()
    assert reference["corpus_sha256"] == digest, "corpus.json changed: rerun make_reference.py"
    assert len(reference["per_text"]) == len(corpus)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("name", sorted(OUR_SETUPS))
def test_per_text_parity(name, field, corpus):
    tokenizer = ours(name)
    mismatches = []
    for text, expected in zip(corpus, load_reference(name)["per_text"]):
        got = _compute(tokenizer, text, expected["ids"], field)
        if got != expected[field]:
            mismatches.append((text, got, expected[field]))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]!r}"


def _over_length(output, max_length):
    return max_length is not None and any(len(row) > max_length for row in output["input_ids"])


@pytest.mark.parametrize("name", sorted(OUR_SETUPS))
def test_batch_parity(name):
    tokenizer = ours(name)
    checked = raised = 0
    for batch_name, batch in load_reference(name)["batches"].items():
        kwargs = batch["kwargs"]
        for row in batch["rows"]:
            args = (row["text"], row["text_pair"]) if "text_pair" in row else (row["text"],)
            if _over_length(row["output"], kwargs.get("max_length")):
                # transformers logged "cannot truncate" and returned too-long rows; we refuse.
                with pytest.raises(ValueError, match="cannot truncate"):
                    tokenizer(*args, **kwargs)
                raised += 1
                continue
            assert dict(tokenizer(*args, **kwargs)) == row["output"], (batch_name, row["text"])
            checked += 1
    assert checked >= 40 and raised < checked
