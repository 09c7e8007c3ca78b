"""DataCollatorForSeq2Seq: a list of tokenized examples -> one padded batch of arrays.

As transformers': ``labels`` are padded with ``label_pad_token_id`` (-100, which the loss
ignores) on the tokenizer's padding side; every other field goes through
``tokenizer.pad``; with a model that has ``prepare_decoder_input_ids_from_labels``,
``decoder_input_ids`` are the labels shifted right (the decoder start token first).
"""
from __future__ import annotations

import numpy as np

__all__ = ["DataCollatorForSeq2Seq"]


class DataCollatorForSeq2Seq:
    """Pad a batch of ``{"input_ids": [...], "attention_mask": [...], "labels": [...]}``."""

    def __init__(self, tokenizer, model=None, padding=True, max_length=None, pad_to_multiple_of=None,
                 label_pad_token_id=-100, return_tensors="np"):
        if return_tensors not in ("np", None):
            raise ValueError(f"return_tensors={return_tensors!r}: minibertgen collates NumPy arrays ('np')")
        if not hasattr(tokenizer, "pad"):
            raise TypeError(f"tokenizer={type(tokenizer).__name__}: expected a tokenizer with pad()")
        self.tokenizer, self.model, self.padding = tokenizer, model, padding
        self.max_length, self.pad_to_multiple_of = max_length, pad_to_multiple_of
        self.label_pad_token_id, self.return_tensors = label_pad_token_id, "np"

    def __call__(self, features, return_tensors=None):
        features = [dict(f) for f in features]
        if not features:
            raise ValueError("features: an empty batch (expected at least one example)")
        labels = [_as_list(f.pop("labels")) for f in features] if "labels" in features[0] else None
        batch = dict(self.tokenizer.pad(features, padding=self.padding, max_length=self.max_length,
                                        pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="np"))
        if labels is not None:
            batch["labels"] = self._pad_labels(labels)  # [batch, tgt]
            prepare = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
            if prepare is not None and "decoder_input_ids" not in features[0]:
                batch["decoder_input_ids"] = np.asarray(prepare(labels=batch["labels"]))  # [batch, tgt]
        return batch

    def _pad_labels(self, labels):
        if self.padding is False or self.padding == "do_not_pad":
            if len({len(label) for label in labels}) > 1:
                raise ValueError("labels of different lengths with padding=False cannot form one array")
            return np.asarray(labels, dtype=np.int64)
        longest = max(len(label) for label in labels)
        length = self.max_length if self.padding == "max_length" and self.max_length is not None else longest
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        out = np.full((len(labels), length), self.label_pad_token_id, dtype=np.int64)  # [batch, tgt]
        right = getattr(self.tokenizer, "padding_side", "right") == "right"
        for row, label in zip(out, labels):
            if right:
                row[:len(label)] = label
            else:
                row[length - len(label):] = label
        return out


def _as_list(value):
    return value.tolist() if hasattr(value, "tolist") else list(value)
