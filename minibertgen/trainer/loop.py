"""Seq2SeqTrainer: transformers' training loop over minibertgen's model, optimiser and schedule.

One optimisation step, as transformers takes it:

    for each of gradient_accumulation_steps batches:   loss = model(**batch).loss; loss.backward()
    clip_grad_norm_(model.parameters(), max_grad_norm)  (when max_grad_norm > 0)
    optimizer.step(); lr_scheduler.step(); model.zero_grad()
    then log / evaluate / save as the strategies say (callbacks.DefaultFlowCallback)

The logged learning rate is the one the step used (read before the schedule moves), the
logged loss the mean since the last log, rounded to 4 digits, as transformers logs them.
Gradient accumulation follows transformers' rule for a model whose forward takes
``**kwargs`` (an EncoderDecoderModel): the micro-batch losses are *not* divided by the
number of accumulated batches, so their gradients add up.
"""
from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import numpy as np

from ..optim import clip_grad_norm_
from ..seeding import set_seed
from . import checkpoints
from .arguments import Seq2SeqTrainingArguments
from .callbacks import CallbackHandler, DefaultFlowCallback, JsonLinesCallback, ProgressCallback
from .collator import DataCollatorForSeq2Seq
from .data import check_dataset, collate, default_collator, epoch_batches, model_columns, number_of_batches
from .evaluation import PredictionOutput, TrainOutput, evaluation_loop, speed_metrics
from .plot import plot_log_history
from .schedules import create_optimizer, create_scheduler
from .special_tokens import align_special_tokens
from .state import TrainerControl, TrainerState

__all__ = ["Seq2SeqTrainer"]


class Seq2SeqTrainer:
    """transformers' Seq2SeqTrainer: train(), evaluate(), predict(), checkpoints that resume."""

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, model_init=None, compute_loss_func=None, compute_metrics=None,
                 callbacks=None, optimizers=(None, None), preprocess_logits_for_metrics=None, tokenizer=None):
        for name, value in (("model_init", model_init), ("compute_loss_func", compute_loss_func),
                            ("preprocess_logits_for_metrics", preprocess_logits_for_metrics)):
            if value is not None:
                raise ValueError(f"{name}: not supported by minibertgen's Seq2SeqTrainer (pass None)")
        if model is None or not hasattr(model, "named_parameters"):
            raise TypeError(f"model={type(model).__name__}: expected a minibertgen model")
        if args is not None and not isinstance(args, Seq2SeqTrainingArguments):
            raise TypeError(f"args: got {type(args).__name__}, expected minibertgen.Seq2SeqTrainingArguments")
        self.args = args if args is not None else Seq2SeqTrainingArguments()
        set_seed(self.args.seed)
        self.model = _place(model, self.args)
        self.processing_class = processing_class if processing_class is not None else tokenizer
        self.data_collator = data_collator or (DataCollatorForSeq2Seq(self.processing_class, model=self.model)
                                               if self.processing_class is not None else default_collator)
        self.train_dataset = check_dataset(train_dataset, "train_dataset")
        self.eval_dataset = eval_dataset if isinstance(eval_dataset, dict) else check_dataset(eval_dataset,
                                                                                              "eval_dataset")
        self.compute_metrics = compute_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.state, self.control = TrainerState(), TrainerControl()
        defaults = [DefaultFlowCallback, ProgressCallback, JsonLinesCallback]
        self.callback_handler = CallbackHandler(defaults + list(callbacks or []), model=self.model)
        self._keep = model_columns(self.model, self.args.label_names) if self.args.remove_unused_columns else None
        # transformers divides accumulated losses only for a forward without **kwargs (see the module doc)
        self._divide_accumulated = not any(p.kind == p.VAR_KEYWORD
                                           for p in inspect.signature(self.model.__call__).parameters.values())
        self._gen_kwargs = {}
        self.control = self._call("on_init_end")

    # -- small pieces ----------------------------------------------------------------------
    def _call(self, event, **kwargs):
        return self.callback_handler.call(event, self.args, self.state, self.control, **kwargs)

    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def pad_token_id(self):
        pad = getattr(self.processing_class, "pad_token_id", None)
        pad = pad if pad is not None else getattr(self.model.config, "pad_token_id", None)
        if pad is None:
            raise ValueError("predict_with_generate pads generated ids with the pad token: set "
                             "model.config.pad_token_id (or pass a tokenizer with one as processing_class)")
        return pad

    def batches(self, dataset, batch_size, *, shuffle, drop_last, epoch=0):
        for indices in epoch_batches(len(dataset), batch_size, seed=self._data_seed(), epoch=epoch,
                                     shuffle=shuffle, drop_last=drop_last):
            yield collate(dataset, indices, self.data_collator, self._keep)

    def _data_seed(self):
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def create_optimizer_and_scheduler(self, num_training_steps: int):
        if self.optimizer is None:
            self.optimizer = create_optimizer(self.model, self.args)
        if self.lr_scheduler is None:
            self.lr_scheduler = create_scheduler(self.optimizer, self.args, num_training_steps)

    def log(self, logs: dict) -> None:
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self._call("on_log", logs=logs)

    # -- training ----------------------------------------------------------------------------
    def _plan(self):
        """(batches per epoch, update steps per epoch, max_steps, epochs), as transformers counts."""
        args = self.args
        per_epoch = number_of_batches(len(self.train_dataset), args.train_batch_size, args.dataloader_drop_last)
        if per_epoch == 0:
            raise ValueError(f"train_dataset: {len(self.train_dataset)} examples make no full batch of "
                             f"{args.train_batch_size} with dataloader_drop_last=True")
        ga = args.gradient_accumulation_steps
        updates = max(per_epoch // ga + int(per_epoch % ga > 0), 1)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * updates)
        epochs = math.ceil(max_steps / updates) if args.max_steps > 0 else math.ceil(args.num_train_epochs)
        return updates, max_steps, epochs

    def _new_state(self, max_steps, epochs):
        args = self.args
        steps = {name: args.steps_for(name, max_steps) if getattr(args, name) is not None else 500
                 for name in ("logging_steps", "eval_steps", "save_steps")}
        return TrainerState(max_steps=max_steps, num_train_epochs=epochs, train_batch_size=args.train_batch_size,
                            epoch=0.0, **steps)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Train for max_steps (or num_train_epochs); resume_from_checkpoint=True resumes from
        the newest checkpoint in output_dir, a path from that checkpoint."""
        if kwargs:
            raise TypeError(f"train() got unexpected arguments {sorted(kwargs)}")
        if self.train_dataset is None:
            raise ValueError("train(): the Trainer has no train_dataset")
        checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        if hasattr(self.processing_class, "pad_token_id") and hasattr(self.model, "config"):
            align_special_tokens(self.model, self.processing_class)
        updates, max_steps, epochs = self._plan()
        self.create_optimizer_and_scheduler(max_steps)
        self.state = self._new_state(max_steps, epochs)
        skip_epochs = skip_batches = 0
        if checkpoint is not None:
            self.state = checkpoints.load_checkpoint(self, checkpoint)
            skip_epochs = self.state.global_step // updates
            skip_batches = (self.state.global_step % updates) * self.args.gradient_accumulation_steps
        return self._inner_loop(epochs, skip_epochs, skip_batches, ignore_keys_for_eval)

    def _resolve_checkpoint(self, resume):
        if resume is None or resume is False:
            return None
        if resume is True:
            found = checkpoints.last_checkpoint(self.args.output_dir)
            if found is None:
                raise ValueError(f"resume_from_checkpoint=True: no checkpoint-N in output_dir={self.args.output_dir!r}")
            return found
        return str(checkpoints.check_checkpoint(resume))

    def _inner_loop(self, epochs, skip_epochs, skip_batches, ignore_keys):
        start, self._tr_loss, self._total_loss = time.time(), np.float32(0), 0.0
        self._last_logged = self.state.global_step
        self.control = self._call("on_train_begin")
        for epoch in range(skip_epochs, epochs):
            batches = epoch_batches(len(self.train_dataset), self.args.train_batch_size, seed=self._data_seed(),
                                    epoch=epoch, shuffle=True, drop_last=self.args.dataloader_drop_last)
            self.control._new_epoch()
            self.control = self._call("on_epoch_begin")
            self._run_epoch(epoch, batches, skip_batches if epoch == skip_epochs else 0, ignore_keys)
            self.control = self._call("on_epoch_end")
            self._maybe_log_save_evaluate(None, None, ignore_keys)
            if self.control.should_training_stop:
                break
        return self._finish(start)

    def _run_epoch(self, epoch, batches, skip, ignore_keys):
        ga = self.args.gradient_accumulation_steps
        for step, indices in enumerate(batches):
            if step < skip:
                continue
            if step % ga == 0:
                self.control._new_step()
                self.control = self._call("on_step_begin")
            loss = self.training_step(collate(self.train_dataset, indices, self.data_collator, self._keep))
            if self.args.logging_nan_inf_filter and not math.isfinite(loss):
                self._tr_loss += self._tr_loss / (1 + self.state.global_step - self._last_logged)
            else:
                self._tr_loss += np.float32(loss)
            if (step + 1) % ga == 0 or step + 1 == len(batches):
                grad_norm, learning_rate = self._optimizer_step()
                self.state.global_step += 1
                self.state.epoch = epoch + (step + 1) / len(batches)
                self.control = self._call("on_step_end")
                self._maybe_log_save_evaluate(grad_norm, learning_rate, ignore_keys)
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break

    def training_step(self, batch) -> float:
        """Forward and backward of one batch in train mode; returns the (scaled) loss."""
        self.model.train()
        out = self.model(**batch)
        loss = out["loss"] if isinstance(out, dict) else out[0]
        if self._divide_accumulated and self.args.gradient_accumulation_steps > 1:
            loss = loss / self.args.gradient_accumulation_steps
        loss.backward()
        return float(loss)

    def _optimizer_step(self):
        grad_norm = None
        if self.args.max_grad_norm is not None and self.args.max_grad_norm > 0:
            grad_norm = float(clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm))
        self.optimizer.step()
        learning_rate = self.lr_scheduler.get_last_lr()[0]  # the rate this step used
        self.lr_scheduler.step()
        self.model.zero_grad()
        return grad_norm, learning_rate

    def _maybe_log_save_evaluate(self, grad_norm, learning_rate, ignore_keys):
        if self.control.should_log and self.state.global_step > self._last_logged:
            logs = {"loss": round(float(self._tr_loss) / (self.state.global_step - self._last_logged), 4)}
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm
            logs["learning_rate"] = learning_rate if learning_rate is not None else self.lr_scheduler.get_last_lr()[0]
            self._total_loss += float(self._tr_loss)
            self._tr_loss, self._last_logged = np.float32(0), self.state.global_step
            self.log(logs)
        self.control.should_log = False
        if self.control.should_evaluate:
            self.control.should_evaluate = False
            metrics = self._evaluate_all(ignore_keys)
            self._update_best(metrics)
        if self.control.should_save:
            self.control.should_save = False
            self._save_checkpoint()
            self.control = self._call("on_save")

    def _evaluate_all(self, ignore_keys):
        if isinstance(self.eval_dataset, dict):
            metrics = {}
            for name, dataset in self.eval_dataset.items():
                metrics.update(self.evaluate(dataset, ignore_keys, metric_key_prefix=f"eval_{name}"))
            return metrics
        return self.evaluate(ignore_keys=ignore_keys)

    def _update_best(self, metrics):
        name = self.args.metric_for_best_model
        if name is None:
            return
        key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            raise KeyError(f"metric_for_best_model={name!r}: the evaluation gave no {key!r} "
                           f"(it gave {sorted(metrics)})")
        value, best = metrics[key], self.state.best_metric
        if best is None or (value > best if self.args.greater_is_better else value < best):
            self.state.best_metric, self.state.best_global_step = value, self.state.global_step

    def _save_checkpoint(self):
        if self.state.best_global_step is not None:
            best = Path(self.args.output_dir) / f"{checkpoints.PREFIX}-{self.state.best_global_step}"
            if best.exists() or self.state.best_global_step == self.state.global_step:
                self.state.best_model_checkpoint = str(best)
        checkpoints.save_checkpoint(self, self.args.output_dir)
        checkpoints.rotate_checkpoints(self.args.output_dir, self.args.save_total_limit,
                                       self.state.best_model_checkpoint)

    def _finish(self, start):
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            checkpoints.load_model_weights(self.model, self.state.best_model_checkpoint)
        self._total_loss += float(self._tr_loss)
        train_loss = self._total_loss / max(self.state.global_step, 0.001)
        metrics = speed_metrics("train", start, self.state.max_steps * self.args.train_batch_size
                                * self.args.gradient_accumulation_steps, self.state.max_steps)
        metrics.update(total_flos=0.0, train_loss=train_loss)
        self.log(dict(metrics))
        self.control = self._call("on_train_end")
        if self.args.plot_curves:
            plot_log_history(self.state.log_history, Path(self.args.output_dir) / "training_curves.png")
        return TrainOutput(self.state.global_step, train_loss, metrics)

    # -- evaluation --------------------------------------------------------------------------
    def _generation_kwargs(self, gen_kwargs):
        gen_kwargs = dict(gen_kwargs)
        if gen_kwargs.get("max_length") is None and gen_kwargs.get("max_new_tokens") is None:
            gen_kwargs["max_length"] = self.args.generation_max_length
        if gen_kwargs.get("num_beams") is None:
            gen_kwargs["num_beams"] = self.args.generation_num_beams
        return {k: v for k, v in gen_kwargs.items() if v is not None}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
        """The loss (and compute_metrics) over eval_dataset; logged and returned."""
        dataset = check_dataset(eval_dataset, "eval_dataset") if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate(): pass eval_dataset (the Trainer has none)")
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        start = time.time()
        output = evaluation_loop(self, dataset, metric_key_prefix, self._gen_kwargs)
        steps = number_of_batches(len(dataset), self.args.eval_batch_size, False)
        output.metrics.update(speed_metrics(metric_key_prefix, start, len(dataset), steps))
        self.log(output.metrics)
        self.control = self._call("on_evaluate", metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test", **gen_kwargs) -> PredictionOutput:
        """Predictions (generated ids with predict_with_generate, else logits), labels, metrics."""
        dataset = check_dataset(test_dataset, "test_dataset")
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        start = time.time()
        output = evaluation_loop(self, dataset, metric_key_prefix, self._gen_kwargs)
        steps = number_of_batches(len(dataset), self.args.eval_batch_size, False)
        output.metrics.update(speed_metrics(metric_key_prefix, start, len(dataset), steps))
        self.control = self._call("on_predict", metrics=output.metrics)
        return output

    def save_model(self, output_dir=None) -> None:
        """The model (and tokenizer) into output_dir, as save_pretrained writes them."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        self.model.save_pretrained(output_dir)
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(output_dir)


def _place(model, args):
    """The model on args.device (or on the CPU with use_cpu=True)."""
    device = "cpu" if args.use_cpu else args.device
    return model.to(device) if device is not None else model
