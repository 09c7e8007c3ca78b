"""Property tests: arbitrary Unicode never crashes; lossless tokenizers round-trip."""
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minibertgen.tokenizers.bytelevel_bpe import bpe
from tok_helpers import OUR_SETUPS, ours

# Everything Unicode can hold except surrogates (not encodable as UTF-8, so not text).
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@pytest.mark.parametrize("name", sorted(OUR_SETUPS))
@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT)
def test_arbitrary_unicode_never_crashes(name, text):
    tok = ours(name)
    enc = tok(text, return_tensors="np")
    ids = enc.input_ids[0].tolist()
    assert all(0 <= i < len(tok) for i in ids)
    assert isinstance(tok.decode(ids), str) and isinstance(tok.decode(ids, skip_special_tokens=True), str)
    assert tok.convert_tokens_to_ids(tok.tokenize(text)) == tok.encode(text, add_special_tokens=False)


def _no_added_tokens(tok, text):
    return not any(t in text for t in tok.get_added_vocab())


@pytest.mark.parametrize("name", ["bytelevel", "bytelevel_prefix"])
@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_byte_level_bpe_is_lossless(name, text):
    tok = ours(name)
    assume(_no_added_tokens(tok, text))
    decoded = tok.decode(tok.encode(text), skip_special_tokens=True)
    # add_prefix_space puts one space in front of text that does not start with one.
    prefix = " " if tok.add_prefix_space and text and not text[0].isspace() else ""
    assert decoded == prefix + text


WORDS = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(words=WORDS)
def test_wordpiece_round_trips_lowercase_words(words):
    # Every letter and "##letter" is in the vocabulary, so nothing becomes [UNK].
    tok = ours("minilm")
    text = " ".join(words)
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == text


@pytest.mark.parametrize("name", ["sp_unigram", "sp_bpe"])
@settings(max_examples=300, deadline=None)
@given(words=WORDS)
def test_sentencepiece_round_trips_plain_words(name, words):
    tok = ours(name)
    text = " ".join(words)
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(
    word=st.text(alphabet="abc", max_size=12),
    merges=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "ab", "bc"]), st.sampled_from(["a", "b", "c", "ab"]))),
)
def test_bpe_only_regroups_characters(word, merges):
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    pieces = bpe(word, ranks)
    assert "".join(pieces) == word
    # When it stops, no adjacent pair is mergeable any more.
    assert not any((a, b) in ranks for a, b in zip(pieces, pieces[1:]))
