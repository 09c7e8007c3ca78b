"""The random generators a run draws from, saved as JSON and restored on resume.

Python's ``random``, NumPy's global generator, minibertgen's source of unseeded draws
(seeding.py) and the model's dropout generator: restoring all four makes the resumed run
draw what the uninterrupted run drew.  (A dropout generator on a GPU is CuPy's, whose
state is not saved: a resumed GPU run draws new dropout masks.)
"""
from __future__ import annotations

import random

import numpy as np

from .. import seeding

__all__ = ["save_rng_state", "load_rng_state"]


def save_rng_state(model) -> dict:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    dropout = getattr(model, "_dropout_generator", None)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "minibertgen": seeding._SOURCE.bit_generator.state,
        "dropout": dropout.bit_generator.state if isinstance(dropout, np.random.Generator) else None,
    }


def load_rng_state(saved: dict, model) -> None:
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    seeding._SOURCE.bit_generator.state = saved["minibertgen"]
    if saved.get("dropout") is not None and model._xp() is np:
        generator = np.random.default_rng()
        generator.bit_generator.state = saved["dropout"]
        model._dropout_generator = generator
