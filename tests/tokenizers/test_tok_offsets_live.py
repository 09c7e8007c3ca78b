"""return_offsets_mapping=True against transformers' *fast* tokenizers, which our
BertTokenizer / RobertaTokenizer stand in for: same ids, same (start, end) spans."""
import logging

import numpy as np
import pytest

from conftest import require_module
from minibertgen.tokenizers import AutoTokenizer, RobertaTokenizer
from tok_helpers import BPE_DIR

logging.getLogger("transformers").setLevel(logging.ERROR)

SENTENCES = [
    "Hello world!",
    "Héllo wörld, ÉCOLE naïve café",
    "unaffable antidisestablishmentarianism xqzvbk",
    "Numbers: 3.14159, 1,000,000 and 42%",
    "multiple   spaces\tand\nnewlines  ",
    "  leading spaces",
    "中文字符 mixed with English 日本語",
    "Emoji 🤗 and symbols $5 ^_^ @user #tag",
    "İstanbul ß ﬁ ǅ",
    "[CLS] inside [SEP] text [MASK]x",
    "Say <s>roberta</s> style <mask> tokens <mask>",
    "don't can't won't it's",
    "a",
]
PAIRS = [("Who wrote it?", "Héllo wörld, the quick brown fox jumps over the lazy dog."),
         ("A much longer first sentence with many words", "and a second one that is longer still, naïvely")]  # fmt: skip


@pytest.fixture(scope="module")
def tf():
    return require_module("transformers")


@pytest.fixture(scope="module")
def bert_pair(tf, minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir), tf.BertTokenizerFast.from_pretrained(minilm_dir)


def _bytelevel_pair(tf, **kwargs):
    files = (str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"))
    return RobertaTokenizer(*files, **kwargs), tf.RobertaTokenizerFast(*files, **kwargs)


@pytest.fixture(scope="module", params=["bert", "bytelevel", "bytelevel_prefix"])
def pair(request, tf, bert_pair):
    if request.param == "bert":
        return bert_pair
    return _bytelevel_pair(tf, add_prefix_space=request.param == "bytelevel_prefix")


def _sentences(mine):
    # With add_prefix_space, fast also puts a space after every special token in the
    # text (slow, and we, only at the start): ids differ, so those texts are left out.
    return [t for t in SENTENCES if "<" not in t] if getattr(mine, "add_prefix_space", False) else SENTENCES


def _same(mine, theirs, *args, **kwargs):
    ours_out = mine(*args, return_offsets_mapping=True, **kwargs)
    reference = theirs(*args, return_offsets_mapping=True, **kwargs)
    assert sorted(ours_out) == sorted(reference), (args, kwargs)
    for key in reference:
        if kwargs.get("return_tensors") == "np":
            np.testing.assert_array_equal(ours_out[key], reference[key], err_msg=f"{key} {args} {kwargs}")
        else:
            assert ours_out[key] == reference[key], (key, args, kwargs)
    return ours_out


def test_offsets_single_texts(pair):
    mine, theirs = pair
    for text in _sentences(mine):
        _same(mine, theirs, text)
        _same(mine, theirs, text, add_special_tokens=False)


def test_offsets_batches_padding_both_sides(pair):
    mine, theirs = pair
    sentences = _sentences(mine)
    _same(mine, theirs, sentences, padding=True)
    _same(mine, theirs, sentences, padding=True, padding_side="left", return_special_tokens_mask=True)
    _same(mine, theirs, sentences, padding="max_length", max_length=12, truncation=True)
    encoded = _same(mine, theirs, sentences, padding=True, return_tensors="np")
    assert encoded["offset_mapping"].shape == (len(sentences), encoded["input_ids"].shape[1], 2)


@pytest.mark.parametrize("truncation", ["longest_first", "only_second"])
def test_offsets_pairs_truncated(pair, truncation):
    mine, theirs = pair
    lengths = []
    for first, second in PAIRS:
        full = _same(mine, theirs, first, second)
        # only_second must leave the first text whole: cut just 3 tokens off the second.
        # longest_first: an even budget for the texts (8), see test_known_slow_fast_differences.
        max_length = 8 + mine.num_special_tokens_to_add(pair=True)
        if truncation == "only_second":
            max_length = len(full["input_ids"]) - 3
        lengths.append(max_length)
        truncated = _same(mine, theirs, first, second, truncation=truncation, max_length=max_length)
        assert len(truncated["input_ids"]) == max_length
    firsts, seconds = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    _same(mine, theirs, firsts, seconds, truncation=truncation, max_length=max(lengths), padding=True)
    _same(mine, theirs, firsts, seconds, truncation=truncation, max_length=max(lengths) + 2, padding="max_length",
          padding_side="left", return_tensors="np")  # fmt: skip


def test_offsets_single_text_as_array(pair):
    mine, theirs = pair
    encoded = _same(mine, theirs, SENTENCES[1], return_tensors="np")
    assert encoded["offset_mapping"].shape == (1, encoded["input_ids"].shape[1], 2)


def test_offsets_left_truncation(pair):
    mine, theirs = pair
    mine.truncation_side = theirs.truncation_side = "left"
    try:
        _same(mine, theirs, _sentences(mine), truncation=True, max_length=7, padding=True)
    finally:
        mine.truncation_side = theirs.truncation_side = "right"


def test_offsets_with_user_added_tokens(tf, minilm_dir):
    mine, theirs = AutoTokenizer.from_pretrained(minilm_dir), tf.BertTokenizerFast.from_pretrained(minilm_dir)
    for tok in (mine, theirs):
        tok.add_tokens(["newword", "[NEW]"])
    for text in ("a newword here", "glued[NEW]token", "NewWord capital"):
        _same(mine, theirs, text)


def test_offsets_point_at_original_characters(bert_pair):
    mine, _ = bert_pair
    text = "Héllo wörld"
    encoded = mine(text, return_offsets_mapping=True)
    pieces = [text[start:end] for start, end in encoded["offset_mapping"]]
    assert pieces == ["", "Héllo", "wörld", ""]


def test_known_slow_fast_differences(tf):
    """Where transformers' slow and fast tokenizers disagree on ids, we keep the slow
    ids (with or without offsets) and give the spans of those tokens."""
    mine, fast = _bytelevel_pair(tf, add_prefix_space=True)
    slow = tf.RobertaTokenizer(str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"), add_prefix_space=True)
    # 1. Special tokens in the text: slow adds the prefix space once, before everything.
    text = "<s>hi"
    encoded = mine(text, return_offsets_mapping=True)
    assert encoded["input_ids"] == slow(text)["input_ids"] != fast(text)["input_ids"]
    assert encoded["offset_mapping"] == [(0, 0), (0, 0), (0, 3), (3, 5), (0, 0)]
    # 2. longest_first with an odd budget: slow gives the extra token to the first text.
    first, second = PAIRS[0]
    kwargs = dict(truncation="longest_first", max_length=11)
    encoded = mine(first, second, return_offsets_mapping=True, **kwargs)
    assert encoded["input_ids"] == slow(first, second, **kwargs)["input_ids"] != fast(first, second, **kwargs)["input_ids"]
    assert len(encoded["offset_mapping"]) == 11


# Characters the fast (Rust) normaliser keeps but the slow rules delete -- every unassigned
# code point (U+FFFE, U+FFFF, U+0378 ...) -- next to ones both delete (U+200C/D, U+00AD,
# NUL, U+FFFD, accents when stripped): issue 17, item 12.
_DELETED_NEIGHBOURS = list("abAB cd,!éÉ\u0301中İ\x00\ufffd\t") + [
    "\ufffe", "\uffff", "\u200c", "\u200d", "\u00ad", " ", "##", "ing", "[UNK]", "[SEP]", "\u0378", "\ue000", "\u0f00"]


@pytest.mark.parametrize("options", [{}, {"do_lower_case": False}, {"strip_accents": False},
                                     {"tokenize_chinese_chars": False}])
def test_offsets_next_to_deleted_characters_match_fast(tf, options):
    """Where ids agree, spans agree: an unknown word's span covers the characters the fast
    tokenizer keeps in it.  (Where they keep a character the slow tokenizer deletes
    inside a known word, the ids differ -- we follow the slow tokenizer's ids -- and
    then offsets have nothing to be compared with.)"""
    import random

    from minibertgen.tokenizers import BertTokenizer

    vocab = str(BPE_DIR.parent / "minilm_vocab.txt")
    fast, mine = tf.BertTokenizerFast(vocab, **options), BertTokenizer(vocab, **options)
    rng, compared = random.Random(7), 0
    for _ in range(500):
        text = "".join(rng.choice(_DELETED_NEIGHBOURS) for _ in range(rng.randint(1, 8)))
        pair = "".join(rng.choice(_DELETED_NEIGHBOURS) for _ in range(rng.randint(1, 5)))
        theirs = fast(text, pair, return_offsets_mapping=True)
        ours = mine(text, pair, return_offsets_mapping=True)
        if theirs["input_ids"] != ours["input_ids"]:
            continue
        compared += 1
        assert [tuple(o) for o in ours["offset_mapping"]] == [tuple(o) for o in theirs["offset_mapping"]], (text, pair)
    assert compared > 150


def _in_order(small, big):
    rest = iter(big)
    return all(item in rest for item in small)


def test_offsets_of_random_strings_match_fast_beside_cjk_and_kept_characters(tf):
    """Issue 32: a CJK ideograph or a punctuation mark is a word of its own in both tokenizers, so
    its [UNK] never widens over the characters only fast keeps ('价̮̑\\uffff': fast [UNK] (0, 1)
    for 价 and another (3, 4) for U+FFFF, which the slow rules delete; we gave (0, 4)).  Where
    the ids agree the spans agree; where fast has extra tokens (for those characters) ours are
    among its (id, span) pairs, in order."""
    import random

    from minibertgen.tokenizers import BertTokenizer

    vocab = str(BPE_DIR.parent / "minilm_vocab.txt")
    fast, mine = tf.BertTokenizerFast(vocab), BertTokenizer(vocab)
    ours = mine("价\u032e\u0311\uffff", return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert [tuple(o) for o in ours] == [(0, 1)]
    alphabet = list("ab xyz,.!中价") + ["\u032e", "\u0311", "\u0301", "\uffff", "\ufffe", "\u0378", "\u200c", "\x00",
                                        "\ufffd", "\t", "é", "İ", "ing", "the"]
    rng, counts = random.Random(32), {"same ids": 0, "fast has more": 0}
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        theirs = fast(text, return_offsets_mapping=True, add_special_tokens=False)
        found = mine(text, return_offsets_mapping=True, add_special_tokens=False)
        pairs = [list(zip(e["input_ids"], map(tuple, e["offset_mapping"]))) for e in (found, theirs)]
        if found["input_ids"] == theirs["input_ids"]:
            counts["same ids"] += 1
            assert pairs[0] == pairs[1], text
        elif _in_order(found["input_ids"], theirs["input_ids"]):
            counts["fast has more"] += 1
            assert _in_order(pairs[0], pairs[1]), text
    assert counts["same ids"] > 700 and counts["fast has more"] > 150, counts
