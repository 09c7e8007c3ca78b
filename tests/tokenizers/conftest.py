"""Fixtures shared by the tokenizer tests (helpers live in tok_helpers.py)."""
import pytest

from tok_helpers import load_corpus


@pytest.fixture(scope="session")
def corpus():
    return load_corpus()
