"""evaluate() and predict(): the loss over a dataset in eval mode, and (predict_with_generate)
generate()'s ids, padded as transformers' Seq2SeqTrainer pads them.

Per batch: the loss of ``model(**batch)``; with predict_with_generate, ``generate()`` on
the batch without its labels and decoder inputs, the ids padded with the pad token to the
model's generation_config.max_length (as transformers pads them, whatever max_length
generate was given), and the labels padded likewise.  Over batches, predictions and
labels are joined with -100 filling the shorter rows; eval_loss is the plain mean of the
batch losses (transformers repeats each batch's loss eval_batch_size times, a short last
batch too, so every batch weighs the same).
Without generation the predictions are the logits [examples, tgt, vocab].
"""
from __future__ import annotations

import time
from collections import namedtuple

import numpy as np

from ..backend import to_numpy

__all__ = ["EvalPrediction", "PredictionOutput", "TrainOutput", "evaluation_loop", "speed_metrics"]

EvalPrediction = namedtuple("EvalPrediction", ["predictions", "label_ids"])
PredictionOutput = namedtuple("PredictionOutput", ["predictions", "label_ids", "metrics"])
TrainOutput = namedtuple("TrainOutput", ["global_step", "training_loss", "metrics"])


def speed_metrics(prefix, start, num_samples=None, num_steps=None) -> dict:
    runtime = time.time() - start
    out = {f"{prefix}_runtime": round(runtime, 4)}
    if num_samples is not None:
        out[f"{prefix}_samples_per_second"] = round(num_samples / runtime, 3)
    if num_steps is not None:
        out[f"{prefix}_steps_per_second"] = round(num_steps / runtime, 3)
    return out


def _pad_to(ids, length, value):
    """[batch, n] -> [batch, length] with ``value`` after each row (n < length)."""
    out = np.full((ids.shape[0], length), value, dtype=ids.dtype)  # [batch, length]
    out[:, : ids.shape[1]] = ids
    return out


def _join(parts):
    """Batches of [batch, n_i, ...] -> [examples, max n_i, ...], -100 filling the rest."""
    if not parts:
        return None
    if parts[0].ndim == 1:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    padded = []
    for p in parts:
        out = np.full((p.shape[0], width) + p.shape[2:], -100, dtype=p.dtype)  # [batch, width, ...]
        out[:, : p.shape[1]] = p
        padded.append(out)
    return np.concatenate(padded)  # [examples, width, ...]


def prediction_step(trainer, batch, prediction_loss_only, gen_kwargs):
    """(loss, predictions, labels) of one batch, as transformers' Seq2SeqTrainer."""
    model, args = trainer.model, trainer.args
    has_labels = "labels" in batch
    out = model(**batch) if has_labels or not args.predict_with_generate else None
    loss = float(out["loss"]) if has_labels and out.get("loss") is not None else None
    if prediction_loss_only:
        return loss, None, None
    labels = np.asarray(batch["labels"]) if has_labels else None
    if not args.predict_with_generate:
        return loss, to_numpy(out["logits"]), labels
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "decoder_input_ids", "decoder_attention_mask")}
    tokens = to_numpy(model.generate(**inputs, **gen_kwargs))  # [batch, generated]
    length, pad = model.generation_config.max_length, trainer.pad_token_id()
    if tokens.shape[-1] < length:
        tokens = _pad_to(tokens, length, pad)  # [batch, max_length]
    if labels is not None and labels.shape[-1] < length:
        labels = _pad_to(labels, length, pad)  # [batch, max_length]
    return loss, tokens, labels


def evaluation_loop(trainer, dataset, prefix, gen_kwargs, prediction_loss_only=None) -> PredictionOutput:
    """Every batch of ``dataset`` in order, in eval mode; metrics named ``<prefix>_...``."""
    args, model = trainer.args, trainer.model
    only_loss = args.prediction_loss_only if prediction_loss_only is None else prediction_loss_only
    was_training = model.training
    model.eval()
    losses, predictions, labels = [], [], []
    try:
        for batch in trainer.batches(dataset, args.eval_batch_size, shuffle=False, drop_last=False):
            loss, preds, label_ids = prediction_step(trainer, batch, only_loss, gen_kwargs)
            if loss is not None:
                losses.append(np.full(args.eval_batch_size, loss, dtype=np.float32))
            if preds is not None:
                predictions.append(preds)
            if label_ids is not None:
                labels.append(label_ids)
    finally:
        model.train(was_training)
    predictions, labels = _join(predictions), _join(labels)
    metrics = {}
    if trainer.compute_metrics is not None and predictions is not None and labels is not None:
        metrics = dict(trainer.compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels)))
    if losses:
        metrics["loss"] = float(np.concatenate(losses).mean())
    metrics = {(k if k.startswith(f"{prefix}_") else f"{prefix}_{k}"): v for k, v in metrics.items()}
    return PredictionOutput(predictions=predictions, label_ids=labels, metrics=metrics)
