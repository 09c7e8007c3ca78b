"""Seq2SeqTrainingArguments: transformers' names, defaults and meaning, checked once.

Every argument transformers' Seq2SeqTrainingArguments takes is either *supported* (it
changes what the Trainer does, as it does in transformers) or *refused unless left at its
default*: a torch-only feature (deepspeed, fsdp, fp16/bf16, torch_compile, ...) set to
anything else raises a ValueError naming it, so nothing runs differently from what was
asked.  A name transformers does not know is a TypeError, as a dataclass gives.
"""
from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["Seq2SeqTrainingArguments", "SUPPORTED", "REFUSED_UNLESS_DEFAULT"]

# name -> transformers 4.57's default
SUPPORTED = {
    "output_dir": None, "overwrite_output_dir": False, "do_train": False, "do_eval": False, "do_predict": False,
    "eval_strategy": "no", "prediction_loss_only": False,
    "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 1,
    "learning_rate": 5e-5, "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0, "num_train_epochs": 3.0, "max_steps": -1, "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0, "warmup_steps": 0, "logging_dir": None, "logging_strategy": "steps",
    "logging_first_step": False, "logging_steps": 500, "logging_nan_inf_filter": True, "save_strategy": "steps",
    "save_steps": 500, "save_total_limit": None, "save_safetensors": True, "save_only_model": False,
    "use_cpu": False, "seed": 42, "data_seed": None, "eval_steps": None, "dataloader_drop_last": False,
    "run_name": None, "disable_tqdm": None, "remove_unused_columns": True, "label_names": None,
    "load_best_model_at_end": False, "metric_for_best_model": None, "greater_is_better": None,
    "ignore_data_skip": False, "report_to": "none", "eval_delay": 0, "include_for_metrics": [],
    "predict_with_generate": False, "generation_max_length": None, "generation_num_beams": None,
    "generation_config": None, "sortish_sampler": False, "dataloader_num_workers": 0,
    "dataloader_pin_memory": True, "dataloader_persistent_workers": False, "optim": "adamw_torch",
    "log_level": "passive", "log_level_replica": "warning", "log_on_each_node": True, "save_on_each_node": False,
    "restore_callback_states_from_checkpoint": False, "push_to_hub": False, "eval_on_start": False,
    "device": None,  # minibertgen's: "cpu", "cuda", "cuda:1" (transformers picks the device itself)
    "plot_curves": True,  # minibertgen's: output_dir/training_curves.png at the end (needs matplotlib)
}
# torch-only or not implemented: accepted only at transformers' default
REFUSED_UNLESS_DEFAULT = {
    "deepspeed": None, "fsdp": "", "fsdp_config": None, "fp16": False, "bf16": False, "fp16_full_eval": False,
    "bf16_full_eval": False, "tf32": None, "torch_compile": False, "torch_compile_backend": None,
    "torch_compile_mode": None, "local_rank": -1, "ddp_backend": None, "ddp_find_unused_parameters": None,
    "ddp_bucket_cap_mb": None, "ddp_timeout": 1800, "gradient_checkpointing": False,
    "gradient_checkpointing_kwargs": None, "label_smoothing_factor": 0.0, "group_by_length": False,
    "length_column_name": "length", "adafactor": False, "lr_scheduler_kwargs": None, "optim_args": None,
    "use_liger_kernel": False, "neftune_noise_alpha": None, "torch_empty_cache_steps": None,
    "eval_accumulation_steps": None, "batch_eval_metrics": False, "jit_mode_eval": False,
    "half_precision_backend": "auto", "full_determinism": False, "hub_model_id": None, "hub_token": None,
    "auto_find_batch_size": False, "include_num_input_tokens_seen": "no", "accelerator_config": None,
    "past_index": -1, "skip_memory_metrics": True, "average_tokens_across_devices": True,
    "tpu_num_cores": None, "use_ipex": False, "parallelism_config": None,
}
STRATEGIES = ("no", "steps", "epoch")
SCHEDULES = ("linear", "constant", "constant_with_warmup", "cosine")
MODES = {"eval_strategy", "save_strategy", "logging_strategy"}


class Seq2SeqTrainingArguments:
    """The arguments of transformers' Seq2SeqTrainingArguments that minibertgen runs (see
    ``SUPPORTED``); the torch-only ones (``REFUSED_UNLESS_DEFAULT``) are refused when set."""

    def __init__(self, output_dir=None, **kwargs):
        for name, value in kwargs.items():
            if name not in SUPPORTED and name not in REFUSED_UNLESS_DEFAULT:
                raise TypeError(f"Seq2SeqTrainingArguments got an unexpected argument {name!r} "
                                "(not one of transformers' training arguments)")
            if name in REFUSED_UNLESS_DEFAULT and value != REFUSED_UNLESS_DEFAULT[name]:
                raise ValueError(f"{name}={value!r}: not supported by minibertgen's Trainer (a torch-only or "
                                 f"unimplemented feature); leave it at {REFUSED_UNLESS_DEFAULT[name]!r}")
        values = {**SUPPORTED, **{k: v for k, v in kwargs.items() if k in SUPPORTED}, "output_dir": output_dir}
        if values["output_dir"] is None:
            values["output_dir"] = "trainer_output"  # transformers 4.57's default
        self.__dict__.update(values)
        _check(self)

    # -- what the Trainer reads ------------------------------------------------------------
    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    @property
    def should_log_to_files(self) -> bool:
        return True

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """warmup_steps when > 0, else ceil(warmup_ratio x num_training_steps), as transformers."""
        if self.warmup_steps > 0:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_ratio)

    def steps_for(self, name: str, max_steps: int) -> int:
        """logging/eval/save steps as a count: a float < 1 is a fraction of max_steps."""
        value = getattr(self, name)
        return math.ceil(max_steps * value) if value < 1 else int(value)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def __repr__(self):
        return f"Seq2SeqTrainingArguments({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def _number(name, value, *, low=None, integer=False, allow_none=False):
    if value is None and allow_none:
        return
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or (low is not None and value < low):
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name}={value!r}: expected {kind}" + (f" >= {low}" if low is not None else ""))


def _check(args) -> None:
    """Validate the values (the messages name the argument, the value and what was expected)."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _number(name, args.__dict__[name], low=1, integer=True)
    for name in ("learning_rate", "weight_decay", "adam_epsilon", "warmup_ratio"):
        _number(name, args.__dict__[name], low=0)
    for name in ("adam_beta1", "adam_beta2"):
        _number(name, args.__dict__[name], low=0)
        if not args.__dict__[name] < 1:
            raise ValueError(f"{name}={args.__dict__[name]!r}: expected a number in [0, 1)")
    _number("max_grad_norm", args.max_grad_norm, allow_none=True)
    _number("num_train_epochs", args.num_train_epochs, low=0)
    _number("max_steps", args.max_steps, integer=True)
    _number("warmup_steps", args.warmup_steps, low=0, integer=True)
    _number("seed", args.seed, low=0, integer=True)
    _number("save_total_limit", args.save_total_limit, allow_none=True, integer=True)
    if args.warmup_ratio > 1:
        raise ValueError(f"warmup_ratio={args.warmup_ratio!r}: expected a number in [0, 1]")
    for name in MODES:
        if args.__dict__[name] not in STRATEGIES:
            raise ValueError(f"{name}={args.__dict__[name]!r}: expected one of {STRATEGIES}")
    if args.lr_scheduler_type not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type={args.lr_scheduler_type!r}: expected one of {SCHEDULES}")
    if args.optim not in ("adamw_torch", "adamw_hf", "adamw_torch_fused"):
        raise ValueError(f"optim={args.optim!r}: minibertgen's Trainer runs AdamW only ('adamw_torch')")
    _check_report_to(args)
    _check_steps(args)
    _check_best_model(args)


def _check_report_to(args) -> None:
    report = args.report_to
    if report in (None, "none", [], ["none"]):
        args.report_to = []
        return
    raise ValueError(f"report_to={report!r}: minibertgen logs to output_dir (JSON lines) and a progress bar; "
                     "integrations (tensorboard, wandb, ...) are not supported: pass report_to='none'")


def _check_steps(args) -> None:
    if args.eval_strategy == "steps" and args.eval_steps is None:
        args.eval_steps = args.logging_steps  # transformers' default
    for name in ("logging_steps", "eval_steps", "save_steps"):
        value = args.__dict__[name]
        if value is None:
            continue
        _number(name, value, low=0)
        if value <= 0 or (value > 1 and value != int(value)):
            raise ValueError(f"{name}={value!r}: expected an int >= 1, or a fraction of the total steps in (0, 1)")


def _check_best_model(args) -> None:
    if args.load_best_model_at_end and args.metric_for_best_model is None:
        args.metric_for_best_model = "loss"
    if args.metric_for_best_model is not None and args.greater_is_better is None:
        args.greater_is_better = not args.metric_for_best_model.endswith("loss")
    if not args.load_best_model_at_end:
        return
    if args.eval_strategy != args.save_strategy:
        raise ValueError(f"load_best_model_at_end=True needs save_strategy ({args.save_strategy!r}) equal to "
                         f"eval_strategy ({args.eval_strategy!r})")
    if args.eval_strategy == "steps" and args.save_steps % args.eval_steps != 0:
        raise ValueError(f"load_best_model_at_end=True needs save_steps ({args.save_steps}) to be a multiple of "
                         f"eval_steps ({args.eval_steps})")
