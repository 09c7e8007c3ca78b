"""Models shipped inside the package: text in, text out, offline, with no download.

    import minibertgen as mb
    generator = mb.pipeline("text2text-generation", model="bert2bert-dates")
    generator("Freitag, 5. März 2021")             # [{'generated_text': '2021-03-05'}]
    mb.models.bert2bert_dates()                     # the directory itself (a pathlib.Path)

``bert2bert-dates`` is a small BertGenerationEncoder + BertGenerationDecoder in an
EncoderDecoderModel, with its own SentencePiece BertGenerationTokenizer, trained by
minibertgen (examples/train_shipped_model.py) to turn dates written in 8 locales and 3
styles into ISO dates; its model card is README.md in its directory.  A shipped name is
accepted wherever a model name is (``from_pretrained``, ``pipeline``, ``minibertgen run
--model``); a local directory of the same name comes first.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED", "shipped_model_dir", "bert2bert_dates"]

_HERE = Path(__file__).resolve().parent
SHIPPED = {"bert2bert-dates": _HERE / "bert2bert_dates"}  # name -> directory inside the package


def shipped_model_dir(name):
    """The directory of the shipped model called ``name``, or None when no shipped model has it."""
    return SHIPPED.get(name) if isinstance(name, str) else None


def bert2bert_dates() -> Path:
    """The directory of bert2bert-dates (dates in 8 locales -> ISO dates), for from_pretrained/pipeline."""
    return SHIPPED["bert2bert-dates"]
