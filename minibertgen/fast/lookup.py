"""The one named lookup from a reference op to its fast version.

The reference ops (ops.py, attention.py) are plain array code.  A few of them are marked
``@replaceable``: when a model runs its forward pass it says which kernel table is in
force for the device its weights were placed on (``with using(kernels): ...``), and a
marked op called inside looks itself up there by name.  Outside any ``using`` block, or
with ``using(None)``, every op is the plain reference.

The table in force is a context variable, not a process-wide switch: each model
chooses its own (``model.use_fast_kernels(False)`` picks the reference), and two
threads running two models never see each other's choice.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools

__all__ = ["replaceable", "using", "active_kernels", "runs_with_model_kernels"]

_ACTIVE = contextvars.ContextVar("minibertgen_kernels", default=None)


def replaceable(reference):
    """Mark a reference op as one the speed wing may replace (looked up by its name)."""
    name = reference.__name__

    @functools.wraps(reference)
    def op(*args, **kwargs):
        kernels = _ACTIVE.get()
        fast = kernels.get(name) if kernels else None
        return (fast or reference)(*args, **kwargs)

    op.reference = reference  # the plain function itself, for tests and for the fast versions' fallbacks
    return op


@contextlib.contextmanager
def using(kernels):
    """Run the block with ``kernels`` ({op name: function}, or None for the reference).

    A table may name a ``forward_context`` to enter around the block (the CPU table's
    limits BLAS to one thread while its own two-core pool splits the work: fast/threads.py).
    """
    token = _ACTIVE.set(kernels)
    context = kernels.get("forward_context") if kernels else None
    try:
        with context() if context is not None else contextlib.nullcontext():
            yield
    finally:
        _ACTIVE.reset(token)


def active_kernels():
    """The kernel table in force here (None: the plain reference)."""
    return _ACTIVE.get()


def runs_with_model_kernels(call):
    """Decorate a model's ``__call__``: its forward pass runs with the model's kernel table
    (``self.kernels``, chosen for the device its weights were placed on)."""

    @functools.wraps(call)
    def forward(self, *args, **kwargs):
        with using(self.kernels):
            return call(self, *args, **kwargs)

    return forward
