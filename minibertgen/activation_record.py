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

A record may carry a dropout function (``record["dropout"]``, set by training.py from
the config and a seeded generator); sub-records inherit it.  Without one, dropout is off.
"""
from __future__ import annotations

__all__ = ["sub_record", "layer_records", "apply_dropout"]


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


def apply_dropout(record, x, kind):
    """Apply the record's dropout of ``kind`` ("hidden" or "attention") to ``x`` and keep
    its mask in record["dropout_mask"] for the backward.  No record, or no dropout: x."""
    if record is None or record.get("dropout") is None:
        return x
    y, mask = record["dropout"](x, kind)
    record["dropout_mask"] = mask
    return y
