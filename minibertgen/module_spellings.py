"""torch modules' spellings of calling, moving and casting a model (forward, cpu, cuda, half,
float), over every model class's own ``__call__`` and ``to``."""
from __future__ import annotations

__all__ = ["ModuleSpellings"]


class ModuleSpellings:
    """torch modules' names for calling, moving and casting a model, over its own ``__call__``
    and ``to`` (every model class has both)."""

    def __init_subclass__(cls, **kwargs):
        # forward is the class's own __call__, signature and docstring included, as in torch
        # (inspect.signature(Model.forward) shows input_ids first: main_input_name)
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            cls.forward = cls.__dict__["__call__"]

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
