"""Tokenizers for BertGeneration checkpoints, matching transformers' slow tokenizers.

- ``BertGenerationTokenizer``: SentencePiece (the bbc / wmt checkpoints)
- ``BertTokenizer``: WordPiece (bert2bert, warm-started from BERT checkpoints)
- ``RobertaTokenizer``: byte-level BPE (roberta2roberta checkpoints)
- ``AutoTokenizer``: picks one of them from a directory's files
"""
from .added_tokens import AddedToken
from .auto import AutoTokenizer
from .base import PreTrainedTokenizer
from .bytelevel_bpe import RobertaTokenizer
from .encoding import BatchEncoding
from .sentencepiece import BertGenerationTokenizer
from .wordpiece import BertTokenizer

__all__ = [
    "AddedToken",
    "AutoTokenizer",
    "BatchEncoding",
    "BertGenerationTokenizer",
    "BertTokenizer",
    "PreTrainedTokenizer",
    "RobertaTokenizer",
]
