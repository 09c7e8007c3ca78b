"""Helpers for the tokenizer tests: paths, the corpus, recorded references, our tokenizers."""
import json
from pathlib import Path

import pytest

from minibertgen.tokenizers import BertGenerationTokenizer, BertTokenizer, RobertaTokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizers"
BPE_DIR = FIXTURES / "bytelevel_bpe"

# Same setups as make_reference.py, built with minibertgen's classes.
OUR_SETUPS = {
    "minilm": lambda: BertTokenizer(str(FIXTURES / "minilm_vocab.txt"), model_max_length=512),
    "minilm_cased": lambda: BertTokenizer(str(FIXTURES / "minilm_vocab.txt"), do_lower_case=False),
    "minilm_keep_accents": lambda: BertTokenizer(str(FIXTURES / "minilm_vocab.txt"), strip_accents=False),
    "sp_unigram": lambda: BertGenerationTokenizer(str(FIXTURES / "botchan_en_unigram_1000.model")),
    "sp_bpe": lambda: BertGenerationTokenizer(str(FIXTURES / "botchan_en_bpe_1000.model")),
    "bytelevel": lambda: RobertaTokenizer(str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt")),
    "bytelevel_prefix": lambda: RobertaTokenizer(
        str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"), add_prefix_space=True
    ),
}

_cache = {}


def ours(name):
    """One shared instance per setup (tokenizers are stateless apart from the BPE cache)."""
    if name not in _cache:
        _cache[name] = OUR_SETUPS[name]()
    return _cache[name]


def load_reference(name):
    return json.loads((FIXTURES / f"reference_{name}.json").read_text(encoding="utf-8"))


def load_corpus():
    return json.loads((FIXTURES / "corpus.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def corpus():
    """The ≥300-string corpus; test modules import this fixture by name."""
    return load_corpus()
