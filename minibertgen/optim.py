"""Optimisation: AdamW, the linear warm-up schedule, gradient clipping by global norm.

The names and defaults are torch's (``torch.optim.AdamW``, ``torch.nn.utils.clip_grad_norm_``,
``torch.optim.lr_scheduler.LambdaLR``) and transformers' (``get_linear_schedule_with_warmup``).

A *parameter* is any object with ``.data`` (the array, updated in place) and ``.grad``
(an array of the same shape, or None when it received no gradient), such as the ones
``model.parameters()`` yields.  Two parameters holding the same array (tied weights) are
one parameter: it is updated once.

An optimizer step is an entry point: it runs inside the table of the arrays it updates,
which a model's parameter carries (``param.kernels``: the training part of its model's
table, so ``model.use_fast_kernels(False)`` gives the reference update); parameters of
no model update with the reference.  Either way the numbers are the same.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module
from .dispatch import replaceable, using

__all__ = ["AdamW", "adamw_update", "adamw_updates", "LambdaLR", "get_linear_schedule_with_warmup", "clip_grad_norm_",
           "vector_norm", "vector_norms", "scale_all_"]


@replaceable
def adamw_update(w, g, m, v, *, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update of weight ``w`` with gradient ``g``, in place in w, m and v
    (the moments), at step ``step`` (1 for the first update):

        w <- w (1 - lr wd)                                     decoupled decay
        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
        w <- w - (lr / (1 - beta1^step)) m / (sqrt(v) / sqrt(1 - beta2^step) + eps)

    The same arithmetic in one scratch array the size of w (a parameter set of 50M floats
    would otherwise make eight 200 MB temporaries a step).  w, m, v, g: one shape.
    """
    xp = array_module(w)
    w *= 1.0 - lr * weight_decay
    scratch = xp.subtract(g, m)
    scratch *= 1.0 - beta1
    m += scratch  # m += (g - m) (1 - beta1) = beta1 m + (1 - beta1) g, as torch's lerp
    v *= beta2
    xp.multiply(g, g, out=scratch)
    scratch *= 1.0 - beta2
    v += scratch  # v = beta2 v + (1 - beta2) g^2
    xp.sqrt(v, out=scratch)
    scratch /= math.sqrt(1.0 - beta2 ** step)
    scratch += eps  # denom = sqrt(v) / sqrt(1 - beta2^step) + eps
    xp.divide(m, scratch, out=scratch)
    scratch *= lr / (1.0 - beta1 ** step)
    w -= scratch  # w -= step_size m / denom


@replaceable
def adamw_updates(updates, *, lr, beta1, beta2, eps, weight_decay):
    """adamw_update of each (w, g, m, v, step) in ``updates``: one parameter group's step."""
    for w, g, m, v, step in updates:
        adamw_update(w, g, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)


def zero_grads(params, set_to_none=True):
    """Forget the gradients of ``params``: set to None (torch's default) or, with
    set_to_none=False, to zeros (a parameter without one keeps None)."""
    for param in params:
        if set_to_none or param.grad is None:
            param.grad = None
        else:
            param.grad = array_module(param.grad).zeros_like(param.grad)


def _distinct_parameters(params, argument="params"):
    """A list of parameters, each array once (tied weights appear once), in the order given."""
    if hasattr(params, "data") and hasattr(params, "grad"):
        params = [params]
    seen, distinct = set(), []
    for param in params:
        if not (hasattr(param, "data") and hasattr(param, "grad")):
            raise TypeError(
                f"{argument}: got {type(param).__name__}, expected parameters with .data and .grad "
                "(from model.parameters())"
            )
        if id(param.data) not in seen:
            seen.add(id(param.data))
            distinct.append(param)
    return distinct


def _refuse(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: not supported by minibertgen.optim.AdamW (expected {allowed[0]!r})")


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), step for step as torch's.

    For each parameter w with gradient g, at step t (lr, beta1, beta2, eps, wd of its group):
        w <- w (1 - lr wd)                                     decoupled decay
        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
        w <- w - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``params``: parameters, or a list of dicts ``{"params": [...], "lr": ..., ...}``
    (parameter groups, e.g. no weight decay for biases).  ``amsgrad=True`` is refused.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        _check_hyperparameters(lr, betas, eps, weight_decay)
        _refuse("amsgrad", amsgrad, (False,))
        _refuse("capturable", capturable, (False,))
        _refuse("differentiable", differentiable, (False,))
        _refuse("fused", fused, (None, False))
        if foreach not in (None, True, False):
            raise ValueError(f"foreach={foreach!r}: expected None, True or False")
        self.foreach = foreach  # accepted as torch's; the model's use_fast_kernels() chooses the update
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                         "maximize": bool(maximize)}
        self.param_groups = []
        self.state = {}  # id(parameter) -> {"step", "exp_avg", "exp_avg_sq"}
        if hasattr(params, "named_parameters") or not (hasattr(params, "data") or hasattr(params, "__iter__")):
            raise TypeError(f"params: got {type(params).__name__}; expected an iterable of parameters or of "
                            "parameter groups (dicts), e.g. model.parameters()")
        groups = list(params) if not hasattr(params, "data") else [params]
        if not groups:
            raise ValueError("params: an empty parameter list (a parameters() generator can be used once: "
                             "call model.parameters() again)")
        if isinstance(groups[0], dict):
            for group in groups:
                self.add_param_group(group)
        else:
            self.add_param_group({"params": groups})

    def add_param_group(self, group):
        """Add a group of parameters with its own hyperparameters (the rest from defaults)."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"param group {group!r}: expected a dict with a 'params' entry")
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"param group keys {sorted(unknown)}: expected some of {sorted(self.defaults)}")
        filled = {**self.defaults, **group, "params": _distinct_parameters(group["params"])}
        _check_hyperparameters(filled["lr"], filled["betas"], filled["eps"], filled["weight_decay"])
        taken = {id(p.data) for g in self.param_groups for p in g["params"]}
        if any(id(p.data) in taken for p in filled["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(filled)

    def zero_grad(self, set_to_none=True):
        """Forget every gradient (set to None, as torch's default; or to zeros)."""
        zero_grads((param for group in self.param_groups for param in group["params"]), set_to_none)

    def step(self, closure=None):
        """One update of every parameter that has a gradient.  Returns closure() if given."""
        loss = closure() if closure is not None else None
        with using(self._kernels()):
            for group in self.param_groups:
                params = [param for param in group["params"] if param.grad is not None]
                for param in params:  # all checked before any moment or weight changes
                    _check_writeable(param.data)
                updates = [self._prepare(param, group) for param in params]
                beta1, beta2 = group["betas"]
                adamw_updates(updates, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                              weight_decay=group["weight_decay"])
        return loss

    def _kernels(self):
        """The table of the arrays it updates: their model's training part (a parameter's
        ``kernels``), or None (the reference) for parameters of no model."""
        first = next((p for g in self.param_groups for p in g["params"]), None)
        return getattr(first, "kernels", None)

    def _prepare(self, param, group):
        """(w, g, m, v, step) for this step's update of ``param``: its moments made on the first
        step (or moved with the weight), its step counted."""
        w, g = param.data, param.grad
        if group["maximize"]:
            g = -g
        xp = array_module(w)
        state = self.state.get(id(param))
        if state is None:
            state = {"step": 0, "exp_avg": xp.zeros_like(w), "exp_avg_sq": xp.zeros_like(w)}
            self.state[id(param)] = state
        elif state["exp_avg"].dtype != w.dtype or array_module(state["exp_avg"]) is not xp:  # the weight moved
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = xp.asarray(state[key]).astype(w.dtype)
        state["step"] += 1
        param._version = getattr(param, "_version", 0) + 1  # a recorded forward before this step cannot backward
        return w, g, state["exp_avg"], state["exp_avg_sq"], state["step"]

    def state_dict(self):
        """Hyperparameters and moments, by position of each parameter (as torch's)."""
        groups, state, index = [], {}, 0
        for group in self.param_groups:
            ids = []
            for param in group["params"]:
                if id(param) in self.state:
                    state[index] = dict(self.state[id(param)])
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and moments saved by state_dict() (by parameter position,
        as torch's); the moments are copied onto each parameter's device and dtype."""
        groups = self.param_groups
        saved_groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if saved_groups is None or "state" not in state_dict:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"state_dict: got {got!r:.120}, expected a dict with 'state' and 'param_groups' "
                             "(from optimizer.state_dict())")
        sizes, own = [len(g["params"]) for g in saved_groups], [len(g["params"]) for g in groups]
        if sizes != own:
            raise ValueError(f"state_dict: its parameter groups (sizes {sizes}) do not match this optimizer's ({own})")
        by_index = {i: p for group, saved in zip(groups, saved_groups)
                    for i, p in zip(saved["params"], group["params"])}
        state = {}
        for index, moments in state_dict["state"].items():
            param = by_index[int(index)]
            xp = array_module(param.data)
            entry = {"step": int(moments["step"])}
            for key in ("exp_avg", "exp_avg_sq"):
                value = xp.asarray(moments[key], dtype=param.dtype)
                if value.shape != param.shape:
                    raise ValueError(f"state_dict: {key} of parameter {index} has shape {value.shape}, "
                                     f"the parameter {tuple(param.shape)}")
                entry[key] = value.copy()
            state[id(param)] = entry
        for group, saved in zip(groups, saved_groups):
            group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "params"})
        self.state = state


def _check_writeable(w):
    if not getattr(getattr(w, "flags", None), "writeable", True):  # (CuPy arrays have no such flag)
        raise ValueError("a parameter's array is read-only (a memory-mapped checkpoint): "
                         "call model.train() or model.parameters() first, which copy the weights once")


def _is_real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_hyperparameters(lr, betas, eps, weight_decay):
    """Numbers (NumPy scalars too, as torch takes them) in range; each error names its argument."""
    if not (_is_real(lr) and lr >= 0):
        raise ValueError(f"lr={lr!r}: expected a number >= 0")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_real(b) for b in betas)):
        raise TypeError(f"betas={betas!r}: expected a pair of numbers (beta1, beta2), e.g. (0.9, 0.999)")
    if not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas={betas!r}: expected two numbers in [0, 1)")
    for name, value in (("eps", eps), ("weight_decay", weight_decay)):
        if not _is_real(value):
            raise TypeError(f"{name}={value!r}: expected a number >= 0")
        if not value >= 0:
            raise ValueError(f"{name}={value!r}: expected a number >= 0")


class LambdaLR:
    """Learning rate = initial lr x lr_lambda(step), per group, as torch's LambdaLR.

    Created at step 0 (it sets each group's lr to initial_lr x lr_lambda(0) at once);
    call ``step()`` after each ``optimizer.step()``.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"optimizer={optimizer!r}: expected an optimizer with param_groups")
        groups = optimizer.param_groups
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * len(groups)
        if not all(callable(fn) for fn in lambdas):
            raise TypeError(f"lr_lambda={lr_lambda!r}: expected a function of the step (or a list of them, "
                            "one per parameter group)")
        if len(lambdas) != len(groups):
            raise ValueError(f"lr_lambda: {len(lambdas)} functions for {len(groups)} parameter groups")
        for group in groups:
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise ValueError(f"last_epoch={last_epoch}: resuming needs 'initial_lr' in every param group")
        self.optimizer, self.lr_lambdas = optimizer, lambdas
        self.base_lrs = [group["initial_lr"] for group in groups]
        self.last_epoch = last_epoch
        self.step()

    def step(self):
        self.last_epoch += 1
        for group, base, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * fn(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        """The schedule's position (as torch's, without the lr_lambda functions)."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict):
        """Restore the position saved by state_dict() (the lr_lambda functions are this schedule's)."""
        missing = {"last_epoch", "base_lrs"} - set(state_dict if isinstance(state_dict, dict) else ())
        if missing:
            raise ValueError(f"state_dict: missing {sorted(missing)} (expected a LambdaLR.state_dict())")
        self.last_epoch, self.base_lrs = int(state_dict["last_epoch"]), list(state_dict["base_lrs"])
        self._last_lr = list(state_dict.get("_last_lr", [g["lr"] for g in self.optimizer.param_groups]))


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    """transformers' schedule: lr rises linearly from 0 over ``num_warmup_steps``, then
    falls linearly to 0 at ``num_training_steps``:

        factor(s) = s / warmup                          for s < warmup
                    max(0, (total - s) / (total - warmup))  after
    """
    for name, value in (("num_warmup_steps", num_warmup_steps), ("num_training_steps", num_training_steps)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}={value!r}: expected an int >= 0")

    def factor(step):
        if step < num_warmup_steps:
            return float(step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))

    return LambdaLR(optimizer, factor, last_epoch)


def vector_norm(x, ord):
    """torch.linalg.vector_norm of all elements: inf -> max |x|, -inf -> min |x|, 0 -> the
    count of non-zero elements, p -> (sum |x|^p)^(1/p)."""
    xp = array_module(x)
    if ord == math.inf:
        return xp.abs(x).max()
    if ord == -math.inf:
        return xp.abs(x).min()
    if ord == 0:
        return (x != 0).sum().astype(x.dtype)
    if ord == 2.0:  # the usual case: one dot product (in memory order, no copy)
        flat = x.ravel(order="K")
        return xp.sqrt(xp.vdot(flat, flat))
    return (xp.abs(x) ** ord).sum() ** (1.0 / ord)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale every gradient by min(1, max_norm / (total_norm + 1e-6)), where total_norm is
    the norm of order ``norm_type`` of the per-parameter norms (inf, -inf, 0, 1, 2 or any
    p, as torch's vector_norm takes them).  Returns total_norm (a 0-d array).  Tied arrays
    count once."""
    params = [p for p in _distinct_parameters(parameters, "parameters") if p.grad is not None]
    if not _is_real(norm_type):
        raise TypeError(f"norm_type={norm_type!r}: expected a number (2.0, 1, 0, float('inf'), ...)")
    if not _is_real(max_norm):
        raise TypeError(f"max_norm={max_norm!r}: expected a number")
    norm_type = float(norm_type)
    if not params:
        return np.zeros((), dtype=np.float32)
    xp = array_module(params[0].grad)
    with using(getattr(params[0], "kernels", None)):  # an entry point: the table of the parameters' model
        norms = xp.stack(vector_norms([p.grad for p in params], norm_type))
        total = vector_norm(norms, norm_type)
        if error_if_nonfinite and not bool(xp.isfinite(total)):
            raise ValueError(f"the total norm of order {norm_type} of the gradients is {float(total)}: "
                             "non-finite, so clip_grad_norm_ cannot clip them")
        scale = float(max_norm) / (float(total) + 1e-6)
        if scale >= 1.0:  # nothing to clip: times 1 would change no gradient
            return total
        scale_all_([p.grad for p in params], scale)  # (a NaN norm: a NaN scale, spread to the gradients, as in torch)
    return total


@replaceable
def vector_norms(arrays, ord):
    """[vector_norm(x, ord) for x in arrays] (clip_grad_norm_'s per-gradient norms)."""
    return [vector_norm(x, ord) for x in arrays]


@replaceable
def scale_all_(arrays, factor):
    """x <- x factor for each x of ``arrays``, in place (as torch's mul_), the factor
    rounded to x's dtype."""
    for x in arrays:
        x *= x.dtype.type(factor)
