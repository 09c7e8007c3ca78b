"""torch modules' spellings of calling, moving and casting a model (forward, cpu, cuda, half,
float), over every model class's own ``__call__`` and ``to``."""
from __future__ import annotations

__all__ = ["ModuleSpellings"]


class ModuleSpellings:
    """torch modules' names for calling, moving and casting a model, over its own ``__call__``
    and ``to`` (every model class has both)."""

    def forward(self, *args, **kwargs):
        """The forward pass, as torch modules spell it: the same as calling the model."""
        return self(*args, **kwargs)

    def half(self):
        """``to(dtype="float16")``, as torch modules spell it; returns self."""
        return self.to(dtype="float16")

    def float(self):
        """``to(dtype="float32")``, as torch modules spell it; returns self."""
        return self.to(dtype="float32")

    def cpu(self):
        """``to("cpu")``, as torch modules spell it; returns self."""
        return self.to("cpu")

    def cuda(self, device=None):
        """``to("cuda")`` (or ``to(device)``: an index or "cuda:N"), as torch modules spell it; returns self."""
        return self.to("cuda" if device is None else device)
