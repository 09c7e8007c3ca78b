"""Model outputs: a dict with attribute access, like transformers' ModelOutput.

``out.logits``, ``out["logits"]`` and ``out[0]`` all work; fields that are None are
left out, so ``out[0]`` is the first field actually present (the loss when labels were
given, else the logits), as in transformers.
"""
from __future__ import annotations

__all__ = ["ModelOutput"]


class ModelOutput(dict):
    def __init__(self, **fields):
        super().__init__((k, v) for k, v in fields.items() if v is not None)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)  # absent optional fields read as None, as in transformers

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(self.values())
