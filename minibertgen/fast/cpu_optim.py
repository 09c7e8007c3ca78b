"""The CPU table's optimizer ops: AdamW's update and clip_grad_norm_'s norms and scaling.

The same numbers as the reference (optim.py).  Why (figures: benchmarks/results/trainer.txt
and README, "Training"):

* ``adamw_updates`` / ``adamw_update``: the reference's dozen steps each stream the whole
  parameter, its gradient and moments through memory (50M float32 parameters: ~200 MB an
  array, a dozen times a step).  Here one C pass (native.py) over all the elements of a
  parameter group, cut into two equal halves, one per core, handed over once (per
  parameter, the hand-over costs more than a small update): the same bits.  Without the C
  loops, blocks of 64K elements, each running the reference update itself (an
  elementwise update of a slice is the update of that slice).
* ``vector_norms`` and ``scale_all_``: the squares summed in float64 and the scaling, in C
  over all the gradients, in two halves likewise.
"""
from __future__ import annotations

import numpy as np

from .. import optim
from . import native, threads
from .cpu import BLOCK

__all__ = ["OPTIMIZER_KERNELS", "NATIVE_SPLIT"]

NATIVE_SPLIT = 1 << 15  # elements: smaller C passes are not worth handing to the second core


def adamw_update(w, g, m, v, **hyperparameters):
    """optim.adamw_update in one C pass per core (native.py), or else one block of the
    flattened arrays at a time: the same bits either way."""
    reference = optim.adamw_update.reference
    flat = _flat_views(w, g, m, v)
    if flat is None:
        return reference(w, g, m, v, **hyperparameters)
    flat_w, flat_g, flat_m, flat_v = flat
    lib = native.library() if _all_float32(flat) else None
    if lib is not None:
        threads.in_halves(flat_w.size, lambda start, stop: native.adamw_update(lib, flat_w, flat_g, flat_m, flat_v,
                                                                       start, stop, **hyperparameters), NATIVE_SPLIT)
    elif w.size <= BLOCK:
        reference(w, g, m, v, **hyperparameters)  # one block already
    else:
        threads.in_blocks(flat_w.size, lambda part: reference(flat_w[part], flat_g[part], flat_m[part], flat_v[part],
                                                              **hyperparameters), BLOCK)


def adamw_updates(updates, **hyperparameters):
    """optim.adamw_updates: the whole group's updates in C (native.py), the elements of all
    its parameters cut into two halves of equal size, one per core, handed over once
    (per parameter, the hand-over to the second core costs more than a small update);
    parameters the C loop cannot take (no flat float32 views) as adamw_update."""
    lib = native.library()
    pieces = []  # (w, g, m, v, step): flat float32 views in one memory order
    for w, g, m, v, step in updates:
        flat = _flat_views(w, g, m, v) if lib is not None else None
        if flat is None or not _all_float32(flat):
            adamw_update(w, g, m, v, step=step, **hyperparameters)
        else:
            pieces.append((*flat, step))

    def run(share):
        for index, start, stop in share:
            w, g, m, v, step = pieces[index]
            native.adamw_update(lib, w, g, m, v, start, stop, step=step, **hyperparameters)

    if pieces:
        threads.in_two_shares([piece[0].size for piece in pieces], run, NATIVE_SPLIT)


def _flat_views(w, g, m, v):
    """[w, g, m, v] flat: w, m, v as views in their common memory order, g in that order too
    (a copy when it is laid out otherwise); None when w, m and v have no common flat view."""
    order = "C" if w.flags.c_contiguous else "F" if w.flags.f_contiguous else None
    if order is None or any(not a.flags[f"{order}_CONTIGUOUS"] for a in (m, v)):
        return None
    return [w.ravel(order=order), np.ravel(g, order=order), m.ravel(order=order), v.ravel(order=order)]  # [size] each


def _all_float32(arrays):
    return all(a.dtype == np.float32 for a in arrays)


def vector_norms(arrays, ord):
    """optim.vector_norms; the 2-norms of float32 arrays as square roots of sums of squares
    in C (native.py), accumulated in float64, the elements of all the arrays in two halves,
    one per core.  The reference's BLAS dot adds in float32: the two agree to float32
    rounding, this one nearer the exact norm."""
    lib = native.library()
    flat = [_flat(x) for x in arrays] if lib is not None and ord == 2.0 else None
    if flat is None or any(x is None for x in flat):
        return optim.vector_norms.reference(arrays, ord)
    shares = threads.in_two_shares([x.size for x in flat], lambda share: [
        (index, native.sum_of_squares(lib, flat[index], start, stop)) for index, start, stop in share], NATIVE_SPLIT)
    sums = [0.0] * len(flat)
    for share in shares:  # an array cut between the shares: its first part's sum, then its second's
        for index, part in share:
            sums[index] += part
    return [np.float32(np.sqrt(total)) for total in sums]


def scale_all_(arrays, factor):
    """optim.scale_all_ in C (native.py): the same multiply per element, the elements of
    all the arrays in two halves, one per core."""
    lib = native.library()
    flat = [_flat(x) for x in arrays] if lib is not None else None
    if flat is None or any(x is None for x in flat):
        return optim.scale_all_.reference(arrays, factor)
    threads.in_two_shares([x.size for x in flat], lambda share: [native.scale(lib, flat[index], start, stop, factor)
                                                                 for index, start, stop in share], NATIVE_SPLIT)


def _flat(x):
    """x as a flat float32 view in its memory order, or None."""
    if x.dtype != np.float32 or not (x.flags.c_contiguous or x.flags.f_contiguous):
        return None
    return x.ravel(order="K")  # [...] -> [size], a view


OPTIMIZER_KERNELS = {
    "adamw_update": adamw_update,
    "adamw_updates": adamw_updates,
    "vector_norms": vector_norms,
    "scale_all_": scale_all_,
}
