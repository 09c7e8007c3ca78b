"""Callbacks: transformers' hooks, the default flow (when to log, evaluate, save), early
stopping, the progress bar and the JSON-lines log in output_dir."""
from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["TrainerCallback", "CallbackHandler", "DefaultFlowCallback", "EarlyStoppingCallback",
           "ProgressCallback", "JsonLinesCallback"]

EVENTS = ("on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
          "on_step_end", "on_evaluate", "on_predict", "on_save", "on_log", "on_prediction_step")


class TrainerCallback:
    """Override any of the ``on_*`` events; each gets (args, state, control, **kwargs)."""


for _event in EVENTS:
    setattr(TrainerCallback, _event, lambda self, args, state, control, **kwargs: None)


class CallbackHandler:
    """Calls every callback's event in order; a callback may return a new control."""

    def __init__(self, callbacks, model=None):
        self.callbacks, self.model = [], model
        for callback in callbacks:
            self.add_callback(callback)

    def add_callback(self, callback):
        callback = callback() if isinstance(callback, type) else callback
        if not isinstance(callback, TrainerCallback):
            raise TypeError(f"callbacks: got {type(callback).__name__}, expected a TrainerCallback")
        self.callbacks.append(callback)

    def call(self, event, args, state, control, **kwargs):
        for callback in self.callbacks:
            result = getattr(callback, event)(args, state, control, model=self.model, **kwargs)
            if result is not None:
                control = result
        return control


def _due(strategy, steps, step):
    return strategy == "steps" and steps > 0 and step % steps == 0


class DefaultFlowCallback(TrainerCallback):
    """transformers' default flow: log / evaluate / save every N steps or at each epoch end."""

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if _due(args.logging_strategy, state.logging_steps, step):
            control.should_log = True
        if _due(args.eval_strategy, state.eval_steps, step) and args.eval_delay <= step:
            control.should_evaluate = True
        if _due(args.save_strategy, state.save_steps, step):
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            if args.save_strategy != "no":
                control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.logging_strategy == "epoch":
            control.should_log = True
        if args.eval_strategy == "epoch" and args.eval_delay <= state.epoch:
            control.should_evaluate = True
        if args.save_strategy == "epoch":
            control.should_save = True
        return control


class EarlyStoppingCallback(TrainerCallback):
    """Stop when metric_for_best_model has not improved (by more than the threshold) for
    ``early_stopping_patience`` evaluations in a row."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        if isinstance(early_stopping_patience, bool) or not isinstance(early_stopping_patience, int) \
                or early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience={early_stopping_patience!r}: expected an int >= 1")
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = float(early_stopping_threshold)
        self.early_stopping_patience_counter = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.load_best_model_at_end or args.metric_for_best_model is None:
            raise ValueError("EarlyStoppingCallback needs load_best_model_at_end=True and metric_for_best_model")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        name = name if name.startswith("eval_") else f"eval_{name}"
        value = (metrics or {}).get(name)
        if value is None:
            raise ValueError(f"metric_for_best_model={args.metric_for_best_model!r}: the evaluation gave no "
                             f"{name!r} (it gave {sorted(metrics or {})})")
        better = (lambda a, b: a > b) if args.greater_is_better else (lambda a, b: a < b)
        if state.best_metric is None or (better(value, state.best_metric)
                                         and abs(value - state.best_metric) > self.early_stopping_threshold):
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True
        return control


class ProgressCallback(TrainerCallback):
    """A tqdm bar over the optimisation steps, showing the last loss and learning rate."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from ..progress import progress_bars_enabled

        if args.disable_tqdm or (args.disable_tqdm is None and not progress_bars_enabled()):
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', math.nan):.2e}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonLinesCallback(TrainerCallback):
    """Every log entry, one JSON object a line, appended to output_dir/log.jsonl."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        path = Path(args.output_dir) / "log.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**(logs or {}), "step": state.global_step}) + "\n")
