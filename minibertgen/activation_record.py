"""The activation record: what a training forward keeps for its backward (llm.c's "acts").

The reference forward functions (model.py, attention.py) take an optional ``record``
dict.  On the inference path it is None and they do nothing more.  When training, each
function writes into its record the arrays its backward needs (its input, the
probabilities, ...), and hands a sub-record to each function it calls, under the same
key as that function's parameters: ``record["layer"][2]["attention"]["self"]`` belongs
to ``params["encoder"]["layer"][2]["attention"]["self"]``.  The backward functions
(model_backward.py, attention_backward.py) then walk the same tree in reverse.

Nothing is copied: the reference forward never writes into an array it has returned, so
keeping a reference is enough.

A record may carry dropout as data: ``record["dropout"]``, the probabilities of one half
({"hidden": p, "attention": p}, from its config: :func:`dropout_rates`), and
``record["generator"]``, the seeded generator the masks are drawn from (set by
training.py); sub-records inherit both.  Without them, dropout is off.
"""
from __future__ import annotations

from .ops import dropout

__all__ = ["sub_record", "layer_records", "half_record", "dropout_rates", "apply_dropout"]


_INHERITED = ("dropout", "training", "generator")


def _child(record):
    return {key: record[key] for key in _INHERITED if key in record}


def sub_record(record, key):
    """The record of a function called under ``key`` (None when not recording)."""
    if record is None:
        return None
    record[key] = _child(record)
    return record[key]


def layer_records(record, count):
    """One sub-record per layer under record["layer"] ([None] * count when not recording)."""
    if record is None:
        return [None] * count
    record["layer"] = [_child(record) for _ in range(count)]
    return record["layer"]


def dropout_rates(config):
    """The dropout probabilities of one half, as a record carries them."""
    return {"hidden": config.hidden_dropout_prob, "attention": config.attention_probs_dropout_prob}


def half_record(record, key, config):
    """The record of one half (an encoder or a decoder) of a larger forward, under ``key``:
    in train mode it applies that half's own dropout probabilities."""
    child = sub_record(record, key)
    if child is not None:
        child["dropout"] = dropout_rates(config) if child.get("training") else None
    return child


def apply_dropout(record, x, kind):
    """Apply the record's dropout of ``kind`` ("hidden" or "attention") to ``x`` (ops.dropout,
    drawing from record["generator"]) and keep its mask in record["dropout_mask"] for the
    backward.  No record, or no dropout: x."""
    if record is None or record.get("dropout") is None:
        return x
    y, mask = dropout(x, record["dropout"][kind], record["generator"])
    record["dropout_mask"] = mask
    return y
