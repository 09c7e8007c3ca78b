"""Parameter: one trainable weight array with its gradient, as torch's Parameter behaves.

A model's weights live in its parameter tree (nested dicts of arrays); training.py wraps
each distinct array in one Parameter.  ``SHARED`` maps an array to its Parameter across
models, so an EncoderDecoderModel and its halves hand out the same objects (freezing
``model.encoder`` freezes the parent's parameters too).
"""
from __future__ import annotations

import weakref

import numpy as np

from .backend import array_module, to_numpy
from .dispatch import training_part

__all__ = ["Parameter", "WeightsModifiedError", "SHARED", "parameter_for", "leaves", "matching_leaves"]


class Parameter:
    """One trainable array: ``data`` (updated in place by the optimiser) and ``grad``.

    As torch's: ``requires_grad = False`` (or ``requires_grad_(False)``) freezes it (no
    gradient, no update); a gradient must have the parameter's shape; ``_version`` counts
    the optimiser's in-place updates, so a backward through weights changed since its
    forward is refused.  One Parameter per weight array, shared by a model and its halves,
    and it follows its weight when ``to()`` / ``half()`` / ``float()`` rebuild the arrays.
    """

    _owner = None  # a weak reference to the model holding it (set when the model makes it)

    def __init__(self, name, data):
        self.name, self.data, self._grad = name, data, None
        self._requires_grad, self._version = True, 0

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{self.name}: requires_grad={value!r}, expected True or False")
        self._requires_grad = bool(value)
        if not value:
            self._grad = None

    def requires_grad_(self, requires_grad: bool = True):
        self.requires_grad = requires_grad
        return self

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None and tuple(value.shape) != tuple(self.data.shape):
            raise ValueError(f"{self.name}: a gradient of shape {tuple(value.shape)} for a parameter of shape "
                             f"{tuple(self.data.shape)}; a gradient must have its parameter's shape")
        self._grad = value

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def numel(self) -> int:
        return int(self.data.size)

    @property
    def kernels(self):
        """The table an optimizer step on this parameter runs with: the training part of its
        model's table (None, the reference, with model.use_fast_kernels(False))."""
        model = self._owner() if self._owner is not None else None
        return training_part(model.kernels) if model is not None else None

    def _follow(self, array) -> None:
        """Point at the weight's new array (after to() / half() / float()); the gradient follows."""
        grad, self.data = self._grad, array
        if grad is not None:
            xp = array_module(array)
            self._grad = xp.asarray(to_numpy(grad) if xp is np else grad).astype(array.dtype)

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={tuple(self.shape)}, dtype={self.dtype})"


class WeightsModifiedError(RuntimeError, ValueError):
    """backward() through weights an optimiser step changed after the forward (torch's
    "modified by an inplace operation")."""


SHARED = weakref.WeakValueDictionary()  # id(array) -> its Parameter, so a model and its halves share them


def parameter_for(name, array, cache, by_name, current, model=None):
    """The Parameter of ``array``: the one this model or another (its halves) already has,
    the one of the same name whose array was replaced (it follows), or a new one."""
    for param in (cache.get(id(array)), SHARED.get(id(array))):
        if param is not None and param.data is array:
            break
    else:
        param = by_name.get(name)
        if param is not None and id(param.data) not in current and tuple(param.shape) == tuple(array.shape):
            param._follow(array)
        else:
            param = Parameter(name, array)
            param._owner = None if model is None else weakref.ref(model)
    SHARED[id(array)] = param
    return param


# -- walking a parameter tree (nested dicts and lists of arrays) --------------------------

def leaves(tree):
    """Every leaf (array) of a parameter tree of dicts and lists: (its dict or list, key, leaf)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(value, (dict, list)):
                stack.append(value)
            else:
                yield node, key, value


def matching_leaves(params, grads):
    """(parameter array, its gradient) for every leaf of a gradient tree, which has the
    parameter tree's keys (or some of them)."""
    stack = [(params, grads)]
    while stack:
        param_node, grad_node = stack.pop()
        for key, grad in (grad_node.items() if isinstance(grad_node, dict) else enumerate(grad_node)):
            if isinstance(grad, (dict, list)):
                stack.append((param_node[key], grad))
            else:
                yield param_node[key], grad
