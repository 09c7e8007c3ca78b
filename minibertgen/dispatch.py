"""The one named lookup from a reference op to a faster version of it.

The reference ops (ops.py, attention.py, ops_backward.py) are plain array code.  A few of
them are marked ``@replaceable``: called inside ``using(table)`` (a table is a dict
{op name: function}), a marked op looks itself up there by name and runs the function it
finds; outside any ``using`` block, or with ``using(None)``, every op is the reference.

Each public entry point (a model call, a generation step, a backward, an optimizer step)
puts its model's table in force once, with :func:`using`; an entry point called inside
another one with the same table in force (a seq2seq model's halves) does not enter it
again.  The table in force is a context variable, not a process-wide switch: each model
chooses its own (``model.use_fast_kernels(False)`` picks the reference), and two threads
running two models never see each other's choice.

This module imports nothing of the package: the reference depends on it, and the speed
wing (fast/) only fills tables for it.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools

__all__ = ["replaceable", "using", "active_table", "training_part", "runs_with_model_kernels"]

_ACTIVE = contextvars.ContextVar("minibertgen_kernels", default=None)


def replaceable(reference):
    """Mark a reference op as one a table may replace (looked up by the op's name)."""
    name = reference.__name__

    @functools.wraps(reference)
    def op(*args, **kwargs):
        table = _ACTIVE.get()
        fast = table.get(name) if table else None
        return (fast or reference)(*args, **kwargs)

    op.reference = reference  # the plain function itself, for tests and for the fast versions' fallbacks
    return op


@contextlib.contextmanager
def using(table):
    """Run the block with ``table`` ({op name: function}, or None for the reference) in force.

    Already in force (an entry point inside another with the same table): nothing is
    entered again.  A table may name a ``forward_context`` to enter around the block (the
    CPU table's limits BLAS to one thread while its own two-core pool splits the work).
    """
    if _ACTIVE.get() is table:  # (None in force and None asked: the reference already)
        yield
        return
    token = _ACTIVE.set(table)
    context = table.get("forward_context") if table else None
    try:
        with context() if context is not None else contextlib.nullcontext():
            yield
    finally:
        _ACTIVE.reset(token)


def active_table():
    """The table in force here (None: the plain reference)."""
    return _ACTIVE.get()


def runs_with_model_kernels(call):
    """Decorate a public entry point of a model (``generate``): the call runs with the
    model's table (``self.kernels``) in force."""

    @functools.wraps(call)
    def entered(self, *args, **kwargs):
        with using(self.kernels):
            return call(self, *args, **kwargs)

    return entered


def training_part(table):
    """The part of a table a recorded (training) forward, its backward and the optimizer may
    use: the table's "training" entry.  None (the plain reference) when the table has none:
    a fast op that overwrites an array the activation record keeps, or that records nothing,
    must not run there."""
    return table.get("training") if table else None
