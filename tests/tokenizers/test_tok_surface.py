"""Tokenizer surface from issue 20, against transformers' slow tokenizers: encode_plus /
batch_encode_plus, prepare_seq2seq_batch, stride with return_overflowing_tokens, is_fast,
init_inputs, additional_special_tokens=None and its ids setter, init keywords named like
methods; encode() with is_split_into_words; the too-long warning."""
import logging
import warnings

import pytest

from conftest import require_module
from tok_helpers import FIXTURES, ours

VOCAB = str(FIXTURES / "minilm_vocab.txt")
SPIECE = str(FIXTURES / "botchan_en_unigram_1000.model")


@pytest.fixture(scope="module")
def theirs():
    tf = require_module("transformers")
    tf.logging.set_verbosity_error()
    return {"minilm": tf.BertTokenizer(VOCAB, model_max_length=512), "sp_unigram": tf.BertGenerationTokenizer(SPIECE)}


@pytest.mark.parametrize("name", ["minilm", "sp_unigram"])
@pytest.mark.parametrize("words", [["the", "I"], ["Hello", "world", "again"], ["don't"]])
def test_encode_with_is_split_into_words(theirs, name, words):
    """Issue 20, bug 1: each word is tokenized (with its "▁" for SentencePiece), not taken as a token."""
    for special in (True, False):
        expected = theirs[name].encode(words, is_split_into_words=True, add_special_tokens=special)
        assert ours(name).encode(words, is_split_into_words=True, add_special_tokens=special) == expected


def test_too_long_encoding_is_logged_once(caplog):
    """Issue 20, bug 7: transformers logs when an untruncated encoding exceeds model_max_length."""
    from minibertgen import BertTokenizer

    tok = BertTokenizer(VOCAB, model_max_length=4)
    with caplog.at_level(logging.WARNING, logger="minibertgen.tokenizers"):
        tok("one two three four five")
        tok("one two three four five six")
        tok("one two three four five", truncation=True)  # cut to fit: nothing to say
    messages = [r.getMessage() for r in caplog.records if "longer than the specified maximum" in r.getMessage()]
    assert messages == ["Token indices sequence length is longer than the specified maximum sequence length for this "
                        "model (7 > 4). Running this sequence through the model will result in indexing errors"]


ENCODE_PLUS_CASES = [
    (("hello world",), {}), (("hello", "world"), {"return_special_tokens_mask": True}),
    ((["hello", "world"],), {}), (([7592, 2088, 999],), {"max_length": 3, "truncation": True}),
    ((["hello", "world"],), {"is_split_into_words": True, "padding": "max_length", "max_length": 8}),
    (("hello world foo",), {"return_length": True, "return_tensors": "np"}),
]


@pytest.mark.parametrize("args, kwargs", ENCODE_PLUS_CASES)
def test_encode_plus(theirs, args, kwargs):
    expected = dict(theirs["minilm"].encode_plus(*args, **{k: v for k, v in kwargs.items() if k != "return_tensors"}))
    got = dict(ours("minilm").encode_plus(*args, **kwargs))
    if "return_tensors" in kwargs:
        got = {k: v.tolist()[0] if k != "length" else v.tolist()[0] for k, v in got.items()}
    assert got == expected


@pytest.mark.parametrize("kwargs", [{}, {"padding": True}, {"is_split_into_words": True},
                                    {"padding": "max_length", "max_length": 9, "truncation": True}])
def test_batch_encode_plus(theirs, kwargs):
    batch = ([["hello", "world"], ["x"]] if kwargs.get("is_split_into_words")
             else [("hello", "world"), "x y", ["a", "b"], [[7592], [2088, 2088]], "a much longer sentence here"])
    expected = dict(theirs["minilm"].batch_encode_plus(batch, **kwargs))
    assert dict(ours("minilm").batch_encode_plus(batch, **kwargs)) == expected


@pytest.mark.parametrize("name", ["minilm", "sp_unigram"])
def test_prepare_seq2seq_batch(theirs, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for kwargs in ({}, {"max_target_length": 3}, {"max_length": 4, "padding": "max_length"}):
            src, tgt = ["hello world again", "a"], ["x y z w", "b"]
            expected = dict(theirs[name].prepare_seq2seq_batch(src, tgt, **kwargs))
            assert dict(ours(name).prepare_seq2seq_batch(src, tgt, **kwargs)) == expected
            sources_only = dict(theirs[name].prepare_seq2seq_batch(src, **kwargs))
            assert dict(ours(name).prepare_seq2seq_batch(src, **kwargs)) == sources_only


@pytest.mark.parametrize("name", ["minilm", "sp_unigram"])
@pytest.mark.parametrize("args, kwargs", [
    (("hello world foo bar baz",), {"max_length": 4, "stride": 1}),
    (("hello world foo bar baz",), {"max_length": 5, "stride": 10, "padding": "max_length"}),
    (("hello world foo bar", "x y z w v u t"), {"max_length": 11, "truncation": "only_second", "stride": 2}),
    (("hello world foo bar", "x y z"), {"max_length": 8, "truncation": "only_first"}),
    ((["hello world foo bar baz", "a b"],), {"max_length": 4, "stride": 2}),
    (("hello world foo bar baz",), {"max_length": 12, "stride": 1}),
])
def test_stride_and_overflowing_tokens(theirs, name, args, kwargs):
    kwargs = {"truncation": True, "return_overflowing_tokens": True, **kwargs}
    for side in ("right", "left"):
        theirs[name].truncation_side = side
        ours(name).truncation_side = side
        try:
            assert dict(ours(name)(*args, **kwargs)) == dict(theirs[name](*args, **kwargs))
        finally:
            theirs[name].truncation_side = ours(name).truncation_side = "right"


def test_small_attributes(theirs):
    from minibertgen import BertTokenizer

    tok = BertTokenizer(VOCAB)
    assert tok.is_fast is theirs["minilm"].is_fast is False
    assert tok.init_inputs == theirs["minilm"].init_inputs == ()
    tok.additional_special_tokens = None
    assert tok.additional_special_tokens is None and tok.additional_special_tokens_ids is None
    tok.additional_special_tokens_ids = [5, 6]
    reference = require_module("transformers").BertTokenizer(VOCAB)
    reference.additional_special_tokens_ids = [5, 6]
    assert tok.additional_special_tokens == reference.additional_special_tokens == ["[unused4]", "[unused5]"]
    assert tok.all_special_tokens == reference.all_special_tokens
    with pytest.raises(ValueError, match="additional_special_tokens_ids"):
        tok.additional_special_tokens_ids = [10**9]
    assert BertTokenizer(VOCAB, additional_special_tokens=None).additional_special_tokens == []


@pytest.mark.parametrize("key", ["encode", "tokenize", "decode", "pad"])
def test_init_keywords_named_like_methods_are_refused(key):
    from minibertgen import BertTokenizer

    with pytest.raises(AttributeError, match=f"{key} conflicts with the method {key}"):
        BertTokenizer(VOCAB, **{key: 1})
