"""Behaviour that needs no reference library: errors, arrays, files, dispatch, pieces."""
import json
import pickle
import sys

import numpy as np
import pytest

from minibertgen.tokenizers import (
    AddedToken, AutoTokenizer, BatchEncoding, BertGenerationTokenizer, BertTokenizer, RobertaTokenizer,
)  # fmt: skip
from minibertgen.tokenizers.bytelevel_bpe import bpe, bytes_to_unicode
from minibertgen.tokenizers.wordpiece import basic_tokenize, wordpiece
from tok_helpers import BPE_DIR, FIXTURES, OUR_SETUPS, corpus, ours  # noqa: F401 (corpus is a fixture)

SP_MODEL = str(FIXTURES / "botchan_en_unigram_1000.model")


# ----- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OUR_SETUPS))
@pytest.mark.parametrize("bad", [123, None, b"bytes", 4.5, {"a": 1}])
def test_non_string_text_is_a_type_error(name, bad):
    tokenizer = ours(name)
    with pytest.raises(TypeError, match=type(bad).__name__):
        tokenizer(bad) if bad is not None else tokenizer.tokenize(bad)


def test_non_string_inside_batch_names_the_index():
    with pytest.raises(TypeError, match=r"text\[1\].*int"):
        ours("minilm")(["fine", 7])


def test_tokenize_rejects_unknown_keywords():
    with pytest.raises(TypeError, match="bogus"):
        ours("minilm").tokenize("x", bogus=True)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: BertTokenizer(p), "vocab.txt"),
        (lambda p: BertGenerationTokenizer(p), "spiece.model"),
        (lambda p: RobertaTokenizer(p, str(BPE_DIR / "merges.txt")), "vocab.json"),
        (lambda p: RobertaTokenizer(str(BPE_DIR / "vocab.json"), p), "merges.txt"),
    ],
)
def test_missing_vocabulary_file_is_named(tmp_path, make, fragment):
    missing = str(tmp_path / f"missing-{fragment}")
    with pytest.raises(FileNotFoundError, match=f"missing-{fragment}"):
        make(missing)


def test_unreadable_sentencepiece_model_is_a_value_error(tmp_path):
    bad = tmp_path / "spiece.model"
    bad.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ValueError, match="spiece.model"):
        BertGenerationTokenizer(str(bad))


def test_from_pretrained_names_the_missing_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        AutoTokenizer.from_pretrained(str(tmp_path / "nope" / "deeper"))
    with pytest.raises(FileNotFoundError, match="hf download no-org/no-tokenizer"):
        AutoTokenizer.from_pretrained("no-org/no-tokenizer", cache_dir=tmp_path, local_files_only=True)


@pytest.mark.parametrize("name, specials", [("minilm", 2), ("bytelevel", 2)])
def test_truncation_shorter_than_special_tokens(name, specials):
    tokenizer = ours(name)
    with pytest.raises(ValueError, match=f"max_length=1 is shorter than the {specials} special tokens"):
        tokenizer("some words here", truncation=True, max_length=1)
    with pytest.raises(ValueError, match="cannot truncate"):  # room for specials, none for text
        tokenizer("some words here", truncation=True, max_length=specials)
    assert len(tokenizer("some words here", truncation=True, max_length=specials + 1).input_ids) == specials + 1


def test_only_second_without_pair_is_an_error():
    with pytest.raises(ValueError, match="only_second"):
        ours("minilm")("a b c d e f", truncation="only_second", max_length=4)


@pytest.mark.parametrize("kwargs, match", [
    ({"padding": "sideways"}, "padding must be"),
    ({"truncation": "middle"}, "truncation must be"),
    ({"max_length": -3}, "max_length"),
    ({"return_tensors": "pt"}, "return_tensors"),
    ({"padding": True, "padding_side": "up"}, "padding_side"),
])  # fmt: skip
def test_bad_options_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ours("minilm")(["a", "b c"], **kwargs)


def test_unsupported_options_say_so():
    # SentencePiece has no fast tokenizer in transformers, so no offsets (it raises too).
    with pytest.raises(NotImplementedError, match="return_offsets_mapping=True is not available for Bert"):
        ours("sp_unigram")("a", return_offsets_mapping=True)
    with pytest.raises(ValueError, match="return_overflowing_tokens=True needs truncation"):
        ours("minilm")("a b", return_overflowing_tokens=True)  # no length to cut at
    with pytest.raises(ValueError, match="stride"):
        ours("minilm")("a b", return_overflowing_tokens=True, truncation=True, max_length=3, stride=-1)
    with pytest.raises(ValueError, match="longest_first"):
        ours("minilm")("a b", "c", return_overflowing_tokens=True, truncation=True, max_length=3)
    with pytest.raises(TypeError, match="not_an_option"):
        ours("minilm")("a", not_an_option=1)


def test_ragged_batch_to_array_is_a_clear_error():
    with pytest.raises(ValueError, match="padding=True"):
        ours("minilm")(["a", "b c d"], return_tensors="np")


def test_decode_rejects_non_ids():
    with pytest.raises(TypeError, match="token_ids"):
        ours("minilm").decode("hello")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ours("bytelevel").decode([10**6])
    with pytest.raises(ValueError, match="out of range"):
        ours("sp_unigram").decode([5000])


# ----- outputs ---------------------------------------------------------------------------

def test_batch_encoding_attribute_access_and_np_arrays():
    enc = ours("minilm")(["hello world", "hi"], padding=True, return_tensors="np")
    assert isinstance(enc, BatchEncoding) and isinstance(enc, dict)
    assert enc.input_ids is enc["input_ids"]
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert enc[key].dtype == np.int64 and enc[key].shape == (2, 4)
    assert enc.input_ids.tolist() == [[101, 7592, 2088, 102], [101, 7632, 102, 0]]
    assert enc.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with pytest.raises(AttributeError, match="labels"):
        enc.labels


def test_single_text_gets_a_batch_axis_with_arrays():
    enc = ours("sp_unigram")("Hello world", return_tensors="np")
    assert enc.input_ids.shape == (1, len(ours("sp_unigram").encode("Hello world")))
    assert set(enc) == {"input_ids", "attention_mask"}  # BertGeneration has no token types


def test_cupy_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match="CuPy"):
        ours("minilm")("hello", return_tensors="cp")


def test_cupy_arrays_when_available():
    cupy = pytest.importorskip("cupy")
    try:
        cupy.zeros(1)
    except Exception as exc:  # CuPy installed but no usable GPU
        pytest.skip(f"CuPy cannot allocate: {exc}")
    enc = ours("minilm")(["hello world", "hi"], padding=True, return_tensors="cp")
    assert isinstance(enc.input_ids, cupy.ndarray) and enc.input_ids.dtype == cupy.int64
    assert ours("minilm").batch_decode(enc.input_ids, skip_special_tokens=True) == ["hello world", "hi"]


def test_padding_side_multiple_and_labels():
    tok = ours("bytelevel")
    enc = tok(["a b c", "a"], padding=True, pad_to_multiple_of=8, padding_side="left", text_target=["x", "y z"])
    assert all(len(row) == 8 for row in enc.input_ids)
    assert enc.input_ids[1][:4] == [tok.pad_token_id] * 4 and enc.attention_mask[1][:4] == [0] * 4
    # Targets go through the same padding, as in transformers (pad id, not -100).
    assert enc.labels == tok(["x", "y z"], padding=True, pad_to_multiple_of=8, padding_side="left").input_ids
    assert enc.labels[1][-len(tok.encode("y z")):] == tok.encode("y z")


def test_decode_accepts_arrays_and_batch_decode_matches():
    tok = ours("minilm")
    enc = tok(["Hello, World!", "second one"], padding=True, return_tensors="np")
    assert tok.batch_decode(enc.input_ids, skip_special_tokens=True) == ["hello, world!", "second one"]
    assert tok.decode(enc.input_ids[0]) == "[CLS] hello, world! [SEP]"
    assert tok.decode(np.int64(7592)) == "hello"


def test_special_token_properties():
    tok = ours("bytelevel")
    assert (tok.cls_token, tok.sep_token, tok.mask_token) == ("<s>", "</s>", "<mask>")
    assert tok.all_special_tokens == ["<s>", "</s>", "<unk>", "<pad>", "<mask>"]
    sp = ours("sp_unigram")
    assert sp.sep_token == "<::::>" and sp.pad_token_id == 1001 and len(sp) == 1002
    assert sp("hi").input_ids == sp.encode("hi", add_special_tokens=False)  # adds no specials


def test_setting_pad_token_from_eos():
    tok = RobertaTokenizer(str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"), pad_token=None)
    with pytest.raises(ValueError, match="pad token"):
        tok(["a", "a b"], padding=True)
    tok.pad_token = tok.eos_token
    assert tok(["a", "a b"], padding=True).input_ids[0][-1] == tok.eos_token_id


def test_pickle_round_trip():
    for name in ("minilm", "sp_bpe", "bytelevel"):
        clone = pickle.loads(pickle.dumps(ours(name)))
        assert clone("Hello world <mask>").input_ids == ours(name)("Hello world <mask>").input_ids


# ----- files and dispatch ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OUR_SETUPS))
def test_save_and_load_round_trip(name, tmp_path, corpus):
    tok = OUR_SETUPS[name]()
    tok.add_tokens(["zzznewtoken", AddedToken("<tail>", rstrip=True)])
    tok.add_special_tokens({"additional_special_tokens": ["<extra_special>"]})
    tok.model_max_length = 77
    files = tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == type(tok).__name__ and config["model_max_length"] == 77
    assert (tmp_path / "added_tokens.json").is_file() and len(files) >= 4
    back = AutoTokenizer.from_pretrained(tmp_path)
    assert type(back) is type(tok) and back.model_max_length == 77
    texts = corpus[:50] + ["a zzznewtoken <tail>   b <extra_special>"]
    for text in texts:
        assert back.encode(text) == tok.encode(text)
        assert back.decode(tok.encode(text)) == tok.decode(tok.encode(text))
    assert back.added_tokens_decoder == tok.added_tokens_decoder


def test_auto_dispatch_by_files_and_model_config(tmp_path):
    bert_dir, sp_dir, bpe_dir, cfg_dir = (tmp_path / n for n in ("bert", "sp", "bpe", "cfg"))
    for d in (bert_dir, sp_dir, bpe_dir, cfg_dir):
        d.mkdir()
    (bert_dir / "vocab.txt").write_bytes((FIXTURES / "minilm_vocab.txt").read_bytes())
    (sp_dir / "spiece.model").write_bytes((FIXTURES / "botchan_en_bpe_1000.model").read_bytes())
    for n in ("vocab.json", "merges.txt"):
        (bpe_dir / n).write_bytes((BPE_DIR / n).read_bytes())
    assert isinstance(AutoTokenizer.from_pretrained(bert_dir), BertTokenizer)
    assert isinstance(AutoTokenizer.from_pretrained(sp_dir), BertGenerationTokenizer)
    assert isinstance(AutoTokenizer.from_pretrained(bpe_dir), RobertaTokenizer)
    with pytest.raises(FileNotFoundError, match="cannot tell"):
        AutoTokenizer.from_pretrained(cfg_dir)
    (cfg_dir / "config.json").write_text('{"model_type": "encoder-decoder", "encoder": {"model_type": "bert"}}')
    with pytest.raises(FileNotFoundError, match="vocab.txt"):  # picked BertTokenizer, which needs vocab.txt
        AutoTokenizer.from_pretrained(cfg_dir)


def test_auto_never_runs_code(tmp_path):
    (tmp_path / "vocab.txt").write_bytes((FIXTURES / "minilm_vocab.txt").read_bytes())
    (tmp_path / "evil.py").write_text("raise SystemExit('executed!')\n")
    config = {"tokenizer_class": "BertTokenizer", "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), BertTokenizer)
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "EvilTokenizer"}')
    with pytest.raises(ValueError, match="EvilTokenizer"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_wordpiece_tokenizer_json_written_by_hand(tmp_path, corpus):
    # The fast-tokenizer format, reduced to what the reader needs.
    vocab = {line.rstrip("\n"): i for i, line in enumerate(open(FIXTURES / "minilm_vocab.txt", encoding="utf-8"))}
    data = {
        "added_tokens": [{"id": 0, "content": "[PAD]", "special": True}, {"id": 103, "content": "[MASK]", "special": True}],
        "normalizer": {"type": "BertNormalizer", "lowercase": True, "strip_accents": None, "handle_chinese_chars": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }  # fmt: skip
    (tmp_path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tok, BertTokenizer)
    for text in corpus[:100]:
        assert tok.encode(text) == ours("minilm").encode(text)
    tok.save_pretrained(tmp_path / "saved")  # writes vocab.txt, not the in-memory vocab into the config
    assert "vocab" not in json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert BertTokenizer.from_pretrained(tmp_path / "saved").encode("Hello there") == tok.encode("Hello there")


# ----- the pieces, one by one --------------------------------------------------------------

def test_wordpiece_greedy_longest_match():
    vocab = {"un": 0, "##aff": 1, "##able": 2, "una": 3, "##ff": 4, "[UNK]": 5}
    # Longest first: "una" beats "un", then "##ff", then "##able".
    assert wordpiece("unaffable", vocab) == ["una", "##ff", "##able"]
    assert wordpiece("unaffablex", vocab) == ["[UNK]"]  # one uncoverable tail spoils the word
    assert wordpiece("u" * 101, {"u": 0, "##u": 1}) == ["[UNK]"]
    assert wordpiece("u" * 100, {"u": 0, "##u": 1}) == ["u"] + ["##u"] * 99


def test_basic_tokenizer_steps():
    assert basic_tokenize("Héllo, WORLD!") == ["hello", ",", "world", "!"]
    assert basic_tokenize("Héllo", lowercase=False) == ["Héllo"]
    assert basic_tokenize("Héllo", lowercase=True, accents=False) == ["héllo"]
    assert basic_tokenize("日本語abc") == ["日", "本", "語", "abc"]
    assert basic_tokenize("日本語abc", cjk=False) == ["日本語abc"]
    assert basic_tokenize("a\x00b\u200bc\td") == ["abc", "d"]  # controls vanish, tab splits
    assert basic_tokenize("[KEEP] x!", never_split={"[KEEP]"}) == ["[KEEP]", "x", "!"]
    assert basic_tokenize("$5^2") == ["$", "5", "^", "2"]  # ASCII symbols count as punctuation


def test_byte_table_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())
    assert table[ord(" ")] == "Ġ" and table[ord("A")] == "A"


def test_bpe_merges_by_rank():
    ranks = {("a", "a"): 0, ("b", "c"): 1, ("aa", "bc"): 2}
    assert bpe("aaa", ranks) == ["aa", "a"]
    assert bpe("aabc", ranks) == ["aabc"]
    assert bpe("cb", ranks) == ["c", "b"]
    assert bpe("x", ranks) == ["x"]


def test_roberta_mask_swallows_space_and_prefix_space():
    tok = ours("bytelevel")
    assert tok.tokenize("Hello <mask>!")[-2:] == ["<mask>", "!"]
    assert "Ġ" not in "".join(tok.tokenize("Hello <mask>")[-1:])
    assert ours("bytelevel_prefix").tokenize("Hello")[0].startswith("Ġ")
    assert tok.tokenize("Hello", add_prefix_space=True) == ours("bytelevel_prefix").tokenize("Hello")


def test_hub_id_found_in_the_local_cache(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--some-org--bert2bert"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "vocab.txt").write_bytes((FIXTURES / "minilm_vocab.txt").read_bytes())
    (snapshot / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizerFast", "model_max_length": 64}')
    tok = AutoTokenizer.from_pretrained("some-org/bert2bert", cache_dir=tmp_path, local_files_only=True)
    assert isinstance(tok, BertTokenizer) and tok.model_max_length == 64
    assert tok.name_or_path == "some-org/bert2bert"
    assert tok("hello world").input_ids == [101, 7592, 2088, 102]


def test_cp_path_hands_int64_arrays_to_cupy(monkeypatch):
    # No GPU here: a stand-in module records what would be handed to cupy.asarray.
    import types

    seen = []
    fake = types.ModuleType("cupy")
    fake.asarray = lambda array: seen.append(array) or ("on-gpu", array.dtype, array.shape)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    enc = ours("minilm")(["hello world", "hi"], padding=True, return_tensors="cp")
    assert enc.input_ids == ("on-gpu", np.dtype("int64"), (2, 4))
    assert [a.tolist() for a in seen][0] == [[101, 7592, 2088, 102], [101, 7632, 102, 0]]
