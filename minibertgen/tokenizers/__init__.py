"""Tokenizers for BertGeneration checkpoints, matching transformers' slow tokenizers.

- ``BertGenerationTokenizer``: SentencePiece (the bbc / wmt checkpoints)
- ``BertTokenizer``: WordPiece (bert2bert, warm-started from BERT checkpoints)
- ``RobertaTokenizer``: byte-level BPE (roberta2roberta checkpoints)
- ``AutoTokenizer``: picks one of them from a directory's files
"""
from .added_tokens import AddedToken
from .encoding import BatchEncoding
from .sentencepiece import BertGenerationTokenizer

__all__ = ["AddedToken", "BatchEncoding", "BertGenerationTokenizer"]
