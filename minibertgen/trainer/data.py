"""Datasets to batches: any sequence of dicts (a list, a ``datasets.Dataset``), examples
read by index, columns the model does not take dropped, a seeded order per epoch.

The order of epoch e is a permutation drawn from ``default_rng([seed, e])``: it depends on
nothing but the seed and the epoch, so a run resumed from a checkpoint sees the batches
the uninterrupted run saw.  (transformers draws its order from torch's generator, so the
two libraries shuffle differently; with one batch per epoch they take the same steps.)
"""
from __future__ import annotations

import inspect

import numpy as np

__all__ = ["check_dataset", "model_columns", "epoch_batches", "collate", "default_collator"]

LABEL_COLUMNS = ("labels", "label", "label_ids")


def check_dataset(dataset, name):
    """Refuse what is not a sized, indexable dataset of dicts (the message names it)."""
    if dataset is None:
        return None
    if isinstance(dataset, dict) and "input_ids" in dataset:
        raise TypeError(f"{name}: got one dict of columns; pass a list of examples (dicts) or a datasets.Dataset "
                        "(e.g. datasets.Dataset.from_dict(columns))")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or isinstance(dataset, (str, bytes)):
        raise TypeError(f"{name}={type(dataset).__name__}: expected a sequence of dicts (a list, a datasets.Dataset)")
    if len(dataset) == 0:
        raise ValueError(f"{name}: the dataset is empty")
    first = dataset[0]
    if not isinstance(first, dict):
        raise TypeError(f"{name}[0] is a {type(first).__name__}: expected a dict such as "
                        "{'input_ids': [...], 'attention_mask': [...], 'labels': [...]}")
    return dataset


def model_columns(model, label_names=None):
    """The names the model's forward takes, plus the label names: the columns kept."""
    signature = inspect.signature(model.__call__)
    names = {n for n, p in signature.parameters.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in ("self", "record")}
    return names | set(LABEL_COLUMNS) | set(label_names or ())


def epoch_batches(length, batch_size, *, seed, epoch, shuffle, drop_last):
    """Index lists of one epoch: a permutation seeded by (seed, epoch) when shuffling."""
    order = np.random.default_rng([seed, epoch]).permutation(length) if shuffle else np.arange(length)
    batches = [order[i:i + batch_size].tolist() for i in range(0, length, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def number_of_batches(length, batch_size, drop_last):
    return length // batch_size if drop_last else -(-length // batch_size)


def collate(dataset, indices, collator, keep):
    """The examples at ``indices``, each with only the ``keep`` columns, through the collator."""
    features = []
    for i in indices:
        example = dataset[int(i)]
        features.append({k: v for k, v in example.items() if keep is None or k in keep})
    batch = collator(features)
    if "label" in batch and "labels" not in batch:  # transformers' default collator renames it
        batch["labels"] = batch.pop("label")
    return batch


def default_collator(features):
    """transformers' default_data_collator for equal-length examples: each field stacked."""
    batch = {}
    for key in features[0]:
        values = [f[key] for f in features]
        try:
            batch[key] = np.asarray(values)
        except ValueError as exc:
            raise ValueError(f"column {key!r} has examples of different lengths; pass "
                             "data_collator=DataCollatorForSeq2Seq(tokenizer, model) to pad them") from exc
    return batch
