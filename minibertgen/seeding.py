"""One place for the random draws nobody seeded: ``set_seed`` as transformers has it.

Every draw that is given no seed (new weights at load or init, a new projection, resized
embeddings, dropout masks, sampling) takes its generator from :func:`generator`.  Without
``set_seed`` that generator is seeded by the operating system, so runs differ; after
``set_seed(n)`` they repeat, draw for draw, as ``transformers.set_seed(n)`` makes torch's
global generator repeat (the numbers differ from torch's: the generators differ).
"""
from __future__ import annotations

import random

import numpy as np

__all__ = ["set_seed", "generator"]

_SOURCE = np.random.default_rng()


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and minibertgen's own draws."""
    global _SOURCE
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an int >= 0")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _SOURCE = np.random.default_rng(int(seed))


def generator(xp=np):
    """A new generator for one unseeded draw: its seed comes from the seeded source above
    (``xp``: numpy, or cupy for a generator on the device)."""
    return xp.random.default_rng(int(_SOURCE.integers(2**63)))
