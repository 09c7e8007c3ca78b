"""The optimiser and learning-rate schedule a Trainer builds, as transformers builds them.

AdamW over two groups: weight decay for every trainable weight except biases and
LayerNorm weights (transformers' rule: the lower-cased name contains "bias", "layernorm",
"rmsnorm" or a "norm" component), none for those.  The schedule is one of transformers'
``lr_scheduler_type`` factors on top of a LambdaLR:

    linear                 s/w during warm-up, then (T - s)/(T - w) down to 0
    constant               1
    constant_with_warmup   s/w during warm-up, then 1
    cosine                 s/w during warm-up, then (1 + cos(pi (s - w)/(T - w))) / 2
"""
from __future__ import annotations

import math
import re

from ..optim import AdamW, LambdaLR

__all__ = ["decay_parameter_names", "create_optimizer", "schedule_factor", "create_scheduler"]

_NO_DECAY = [re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")]


def decay_parameter_names(model) -> list:
    """Names of the parameters weight decay applies to (biases and LayerNorm weights excluded)."""
    return [name for name, _ in model.named_parameters() if not any(p.search(name.lower()) for p in _NO_DECAY)]


def create_optimizer(model, args) -> AdamW:
    """AdamW with args' hyperparameters over the trainable parameters, in two decay groups."""
    decay = set(decay_parameter_names(model))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameter (every one has requires_grad=False)")
    groups = [{"params": [p for n, p in trainable if n in decay], "weight_decay": args.weight_decay},
              {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0}]
    return AdamW([g for g in groups if g["params"]], lr=args.learning_rate,
                 betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def schedule_factor(kind: str, warmup: int, total: int):
    """The learning-rate factor of step s for transformers' ``lr_scheduler_type`` ``kind``."""
    def factor(step):
        if kind == "constant":
            return 1.0
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "constant_with_warmup":
            return 1.0
        progress = float(step - warmup) / float(max(1, total - warmup))
        if kind == "linear":
            return max(0.0, float(total - step) / float(max(1, total - warmup)))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * 0.5 * progress)))  # cosine, half a cycle

    return factor


def create_scheduler(optimizer, args, num_training_steps: int) -> LambdaLR:
    warmup = args.get_warmup_steps(num_training_steps)
    return LambdaLR(optimizer, schedule_factor(args.lr_scheduler_type, warmup, num_training_steps))
