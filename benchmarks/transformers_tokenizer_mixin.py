"""Conformance measurement (not a speed benchmark, not a test): transformers 4.57.6's own
TokenizerTesterMixin, read from its source distribution, run against minibertgen's three
tokenizers.  Nothing of transformers' test code is copied here; it is imported from the sdist.

    pip download "transformers==4.57.6" --no-binary :all: --no-deps -d /tmp/sdist
    tar xzf /tmp/sdist/transformers-4.57.6.tar.gz -C /tmp/sdist
    TRANSFORMERS_SDIST=/tmp/sdist/transformers-4.57.6 python -m pytest -q -p no:cacheprovider \\
        benchmarks/transformers_tokenizer_mixin.py

Adaptations: the mixin's fixtures/sample_text.txt (absent from the sdist) is written from
our botchan excerpt; its assertLogs("transformers") hears our "minibertgen" logger.  What
still fails is the harness, not the tokenizers: return_tensors="pt" (torch) and exact
error-message wording.
Results: benchmarks/results/transformers_tokenizer_mixin.txt.
"""
import logging
import os
import sys
import unittest
from pathlib import Path

import pytest

SDIST = Path(os.environ.get("TRANSFORMERS_SDIST", "/tmp/sdist/transformers-4.57.6"))
if not (SDIST / "tests" / "test_tokenization_common.py").is_file():
    pytest.skip(f"no transformers 4.57.6 sdist at {SDIST} (see the module docstring)", allow_module_level=True)
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizers"
(SDIST / "tests" / "fixtures").mkdir(exist_ok=True)
(SDIST / "tests" / "fixtures" / "sample_text.txt").write_text((FIXTURES / "botchan_excerpt.txt").read_text())
sys.path.insert(0, str(SDIST / "tests"))
from test_tokenization_common import TokenizerTesterMixin  # noqa: E402

import minibertgen as mb  # noqa: E402


class _ToTransformersLogger(logging.Handler):
    def emit(self, record):
        logging.getLogger("transformers").handle(record)


logging.getLogger("minibertgen").addHandler(_ToTransformersLogger())


def _saved(cls, build):
    TokenizerTesterMixin.setUpClass.__func__(cls)
    build().save_pretrained(cls.tmpdirname)


class BertTokenizerMixin(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class, test_rust_tokenizer, from_pretrained_id = mb.BertTokenizer, False, []
    space_between_special_tokens = True

    @classmethod
    def setUpClass(cls):
        _saved(cls, lambda: mb.BertTokenizer(str(FIXTURES / "minilm_vocab.txt")))


class RobertaTokenizerMixin(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class, test_rust_tokenizer, from_pretrained_id = mb.RobertaTokenizer, False, []

    @classmethod
    def setUpClass(cls):
        bpe = FIXTURES / "bytelevel_bpe"
        _saved(cls, lambda: mb.RobertaTokenizer(str(bpe / "vocab.json"), str(bpe / "merges.txt")))


class BertGenerationTokenizerMixin(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class, test_rust_tokenizer, from_pretrained_id = mb.BertGenerationTokenizer, False, []
    test_sentencepiece = True

    @classmethod
    def setUpClass(cls):
        _saved(cls, lambda: mb.BertGenerationTokenizer(str(FIXTURES / "botchan_en_unigram_1000.model")))
