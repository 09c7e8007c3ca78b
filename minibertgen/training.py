"""Training: the torch-like surface around model_backward.py.

    model.train()                                  # dropout on (eval() is the default)
    loss = model(input_ids=..., labels=...).loss   # the forward keeps an activation record
    loss.backward()                                # fills param.grad for every weight
    optimizer.step(); optimizer.zero_grad()        # minibertgen.optim.AdamW

How it works, in four steps a reader can follow:

1. A forward given ``labels`` (or run in train mode) is a *recorded* forward: the model
   hands each reference function in model.py / attention.py a record dict to fill
   (activation_record.py).  It, its backward and AdamW run on the training part of the
   model's kernel table (dispatch.training_part; fast/cpu_training.py, the plain reference
   with ``model.use_fast_kernels(False)``, and on CuPy), which holds only fast ops that
   never overwrite an array the record keeps.  Without labels in eval mode nothing is
   recorded.
2. The loss it returns is a 0-d array (:class:`Loss`) whose ``backward()`` walks the
   record in reverse, once (model_backward.causal_lm_backward / seq2seq_backward).
3. Every weight's gradient lands on its :class:`Parameter` (``model.named_parameters()``,
   named as the checkpoint names it).  Tied weights are one array, so one parameter:
   their gradients add up there.
4. Loaded float32 weights are read-only memory maps of the checkpoint file: the first
   ``train()``, ``parameters()`` or ``backward()`` copies each of them once, in place
   in the parameter tree, so the optimiser can update them.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from . import seeding
from .activation_record import dropout_rates
from .backend import to_numpy
from .dispatch import training_part, using
from .model_backward import bert_stack_backward, causal_lm_backward, seq2seq_backward
from .optim import zero_grads
from .parameter import SHARED, Parameter, WeightsModifiedError, leaves, matching_leaves, parameter_for

__all__ = ["Parameter", "Loss", "TrainingMixin", "WeightsModifiedError", "records_activations", "backward"]


class Loss(np.ndarray):
    """The 0-d float32 loss of a recorded forward; ``backward()`` fills the gradients.

    ``loss * k`` and ``loss / k`` (k a number, e.g. gradient accumulation) are losses too,
    whose backward scales every gradient by k.  Any other arithmetic gives a plain array.
    """

    def __array_finalize__(self, obj):
        self._backward = None  # only the loss a forward returned (or a scaled one) can backward

    def backward(self):
        """Add dL/dw to every parameter's ``.grad`` (summed with what is there, as torch)."""
        if self._backward is None:
            raise ValueError("backward(): this array is not the loss of a forward pass (only the loss "
                             "returned with labels=..., or that loss times a number, can call backward())")
        run, self._backward = self._backward, _spent
        run(1.0)

    def _scaled(self, value, factor):
        out = np.asarray(value).view(Loss)
        if self._backward is not None and self._backward is not _spent:
            run = self._backward
            out._backward = lambda dloss: run(dloss * factor)
        return out

    def __mul__(self, other):
        if _is_number(other):
            return self._scaled(np.ndarray.__mul__(self, other), float(other))
        return np.asarray(np.ndarray.__mul__(self, other))

    __rmul__ = __mul__

    def __truediv__(self, other):
        if _is_number(other):
            return self._scaled(np.ndarray.__truediv__(self, other), 1.0 / float(other))
        return np.asarray(np.ndarray.__truediv__(self, other))


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _once(run):
    """``run`` that refuses a second call (a loss and its scaled copies share it)."""
    state = {"spent": False}

    def backward_once(dloss):
        if state["spent"]:
            _spent(dloss)
        state["spent"] = True
        run(dloss)

    return backward_once


def _spent(dloss):
    raise ValueError("backward() was already called on this loss: its activation record is freed. "
                     "Run the forward again (model(..., labels=...)) for a new loss")


def backward(output, **gradients):
    """Backpropagate from an output: ``backward(out)`` for its loss, or
    ``backward(out, last_hidden_state=G)`` for a model without a loss (an encoder):
    G is dL/d(last_hidden_state) [batch, seq, hidden]."""
    if not gradients:
        loss = output.get("loss") if isinstance(output, dict) else None
        if loss is None:
            raise ValueError("backward(output): this output has no loss; pass labels=... to the forward, "
                             "or give the gradient of an output, e.g. backward(out, last_hidden_state=G)")
        return loss.backward()
    run = getattr(output, "_backward_from", None)
    if run is None:
        raise ValueError("backward(output, ...): this output was not recorded; call model.train() "
                         "(or pass labels=...) before the forward")
    unknown = set(gradients) - {"last_hidden_state"}
    if unknown:
        raise ValueError(f"backward(output, ...): gradients for {sorted(unknown)} are not supported "
                         "(expected last_hidden_state=...)")
    output._backward_from = None
    run(gradients["last_hidden_state"])


# -- the model surface --------------------------------------------------------------------

class TrainingMixin:
    """train() / eval(), parameters, gradients and seeded dropout for the model classes."""

    training = False

    def train(self, mode: bool = True):
        """Train mode (dropout on, from this model's seeded generator) or, with False, eval mode."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode={mode!r}: expected True or False")
        self.training = mode
        for half in self._halves():
            half.training = mode
        if mode:
            self._make_trainable()
        return self

    def eval(self):
        """Eval mode (the default): no dropout.  backward() still works, as in torch."""
        return self.train(False)

    def manual_seed(self, seed: int):
        """Seed the generator dropout draws its masks from (numpy/cupy ``default_rng``)."""
        self._dropout_generator = self._xp().random.default_rng(seed)
        return self

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True):
        """(checkpoint name, Parameter) for every trainable array; a tied array appears once,
        under its first name (as torch), unless remove_duplicate=False."""
        self._make_trainable()
        state = self._named_arrays()
        by_array = self._parameters_by_array(state)
        seen = set()
        for name, array in state.items():
            if getattr(array, "is_quantized", False):
                continue
            if remove_duplicate and id(array) in seen:
                continue
            seen.add(id(array))
            yield prefix + name, by_array[id(array)]

    def parameters(self):
        for _, param in self.named_parameters():
            yield param

    def get_parameter(self, name: str) -> Parameter:
        """The Parameter holding checkpoint weight ``name`` (any of a tied array's names)."""
        if name not in self._named_arrays():
            raise ValueError(f"name={name!r}: no such weight (see model.state_dict().keys())")
        self._make_trainable()
        return self._parameters_by_array()[id(self._named_arrays()[name])]

    def requires_grad_(self, requires_grad: bool = True):
        """Freeze (False) or unfreeze every weight of this model (a half: only that half's)."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy {checkpoint name: array} into the weights in place (state_dict.py); returns
        (missing_keys, unexpected_keys) as torch's."""
        from .state_dict import load_state_dict

        return load_state_dict(self, state_dict, strict=strict, assign=assign)

    def zero_grad(self, set_to_none: bool = True):
        zero_grads(self._parameters_by_array().values(), set_to_none)

    # -- helpers ------------------------------------------------------------------------
    def _halves(self):
        return [h for h in (getattr(self, "encoder", None), getattr(self, "decoder", None)) if h is not None]

    def _xp(self):
        return self.device.xp

    def _generator(self):
        if getattr(self, "_dropout_generator", None) is None:
            self._dropout_generator = seeding.generator(self._xp())
        return self._dropout_generator

    def _named_arrays(self) -> dict:
        """state_dict(), remembered while the trees hold the same arrays: the names are
        built once, and each call only walks the trees to compare the arrays' ids (the
        remembered dict holds the arrays, so an id cannot be reused while it is kept)."""
        ids = tuple(id(array) for tree in self._trees() for _, _, array in leaves(tree))
        remembered = self.__dict__.get("_named_arrays_cache")
        if remembered is None or remembered[0] != ids:
            remembered = (ids, self.state_dict())
            self.__dict__["_named_arrays_cache"] = remembered
        return remembered[1]

    def _parameters_by_array(self, state=None) -> dict:
        """{id(array): Parameter}, kept between calls so gradients stay on their parameter.
        A weight whose array was rebuilt (to(), half(), float()) keeps its Parameter, which
        now points at the new array, so an optimiser built before keeps updating the model."""
        cache = self.__dict__.setdefault("_parameter_cache", {})
        by_name = self.__dict__.setdefault("_parameters_by_name", {})
        state = self._named_arrays() if state is None else state
        current = {id(array) for array in state.values()}
        live = {}
        for name, array in state.items():
            if getattr(array, "is_quantized", False):
                continue
            if id(array) not in live:
                live[id(array)] = parameter_for(name, array, cache, by_name, current, self)
            by_name[name] = live[id(array)]
        self.__dict__["_parameter_cache"] = live
        return live

    def _weights_version(self) -> int:
        """The sum of the parameters' update counters: it changes when an optimiser steps."""
        return sum(param._version for param in self._parameters_by_array().values())

    def _checked_backward(self, run):
        """``run`` refusing to start when an optimiser step changed the weights since the forward."""
        version = self._weights_version()

        def checked(gradient):
            if self._weights_version() != version:
                raise WeightsModifiedError(
                    "backward(): one of the weights needed for the gradient has been modified by an inplace "
                    "operation (optimizer.step() ran between this forward and its backward); run backward() "
                    "before optimizer.step(), or run the forward again")
            run(gradient)

        return checked

    def _make_trainable(self) -> None:
        """Copy each read-only (memory-mapped) weight once, in place in the parameter tree."""
        copies = {}
        for tree in self._trees():
            read_only = [(node, key, value) for node, key, value in leaves(tree)
                         if isinstance(value, np.ndarray) and not value.flags.writeable]
            for node, key, value in read_only:
                if id(value) not in copies:
                    copies[id(value)] = np.array(value, order="K")  # keeps the layout, owns its memory
                node[key] = copies[id(value)]
        cache = self.__dict__.get("_parameter_cache", {})
        for old in list(copies):  # a parameter (and its gradient) follows its array to the copy
            param = cache.pop(old, None) or SHARED.get(old)
            if param is not None and id(param.data) == old:
                param.data = copies[old]
                cache[id(param.data)] = SHARED[id(param.data)] = param

    def _trees(self):
        """The parameter trees this model's arrays live in (each half's, and the projection)."""
        if self._halves():
            trees = [h.params for h in self._halves()]
            if getattr(self, "enc_to_dec_proj", None) is not None:
                trees.append(self.enc_to_dec_proj)
            return trees
        return [self.params]

    def _check_trainable(self) -> None:
        if any(getattr(a, "is_quantized", False) for a in self._named_arrays().values()):
            raise ValueError("backward(): this model holds quantized (int8/4-bit) weights, which have no "
                             "gradient; load it without quantization_config to train it")

    def _accumulate(self, params, grads, by_array=None) -> None:
        """Add a gradient tree onto the parameters of the matching parameter tree
        (``by_array``: this model's _parameters_by_array(), when the caller has it)."""
        by_array = self._parameters_by_array() if by_array is None else by_array
        for array, grad in matching_leaves(params, grads):
            if grad is None:
                continue
            param = by_array[id(array)]
            if not param.requires_grad:  # frozen: no gradient, as torch
                continue
            if tuple(grad.shape) != tuple(param.shape):
                raise ValueError(f"{param.name}: a gradient of shape {tuple(grad.shape)} for a parameter of shape "
                                 f"{tuple(param.shape)}")
            grad = grad.astype(param.dtype, copy=False)
            if param.grad is None:
                param.grad = grad
            else:
                param.grad += grad  # in place, as torch accumulates .grad (a tied array's second share)




def records_activations(call):
    """Decorate a model's ``__call__``, its public entry point: the call runs inside the
    model's kernel table (dispatch.using, entered once).  A forward with labels, or in train
    mode, is recorded (the table's training part, an activation record) and its loss can
    ``backward()``; otherwise it is the plain inference call, which pays nothing more."""
    signature = inspect.signature(call)

    @functools.wraps(call)
    def forward(self, *args, record=None, **kwargs):
        if record is not None:  # a half of a larger recorded forward (a seq2seq model's encoder)
            record["dropout"] = dropout_rates(self.config) if record["training"] else None
            with using(training_part(self.kernels)):  # (already in force: the whole model's)
                return call(self, *args, record=record, **kwargs)
        labels = signature.bind_partial(self, *args, **kwargs).arguments.get("labels")
        if labels is None and not self.training:
            with using(self.kernels):
                return call(self, *args, **kwargs)
        record = {"training": self.training, "generator": self._generator()}
        record["dropout"] = dropout_rates(self.config) if self.training and not self._halves() else None
        with using(training_part(self.kernels)):  # only fast ops that keep the record intact
            out = call(self, *args, record=record, **kwargs)
        return _attach_backward(self, out, record, labels)

    return forward


def _attach_backward(model, out, record, labels):
    if isinstance(out, tuple):  # return_dict=False: (loss, logits, ...) with labels, as transformers orders it
        if labels is None:
            return out
        return (_loss_with_backward(model, record, out[0]),) + out[1:]
    if labels is not None and out.get("loss") is not None:
        out["loss"] = _loss_with_backward(model, record, out["loss"])
    elif not getattr(model, "has_lm_head", True):  # an encoder: backward(out, last_hidden_state=G)
        def run_from(dlast):
            model._check_trainable()
            model._make_trainable()
            with using(training_part(model.kernels)):
                grads, _, _ = bert_stack_backward(model.params, model.config, record, dlast)
            model._accumulate(model.params, grads)
            record.clear()

        out._backward_from = model._checked_backward(run_from)
    return out


def _loss_with_backward(model, record, loss):
    """The forward's loss as a :class:`Loss` whose backward() walks ``record``."""

    def run(dloss):
        model._check_trainable()
        model._make_trainable()
        with using(training_part(model.kernels)):
            _backpropagate(model, record, dloss)
        record.clear()

    loss = np.asarray(to_numpy(loss)).view(Loss)
    loss._backward = _once(model._checked_backward(run))
    return loss


def _backpropagate(model, record, dloss):
    """model_backward's backward of a causal LM or an encoder-decoder; its gradients onto the
    parameters (a seq2seq model's part by part, in the order they were computed)."""
    params = model.params
    if not model._halves():
        model._accumulate(params, causal_lm_backward(params, model.config, record, dloss))
        return
    grads = seq2seq_backward(params, model.config, record, dloss)
    by_array = model._parameters_by_array()  # (once for the three trees: it walks the whole model)
    for part, tree in grads.items():
        model._accumulate(params[part], tree, by_array)
