"""Progress bars that stay out of the way.

A bar is shown only when tqdm is installed, stderr is a terminal, the work has at least
``min_items`` steps, and progress bars are enabled (``MINIBERTGEN_QUIET=1`` or
``set_progress_bars(False)`` turn them off; the CLI's ``--quiet`` does the latter).
"""
from __future__ import annotations

import os
import sys

__all__ = ["progress", "set_progress_bars", "progress_bars_enabled"]

_enabled = True


def set_progress_bars(enabled: bool) -> None:
    global _enabled
    _enabled = bool(enabled)


def progress_bars_enabled() -> bool:
    quiet = os.environ.get("MINIBERTGEN_QUIET", "").strip().lower() in ("1", "true", "yes")
    return _enabled and not quiet and sys.stderr is not None and sys.stderr.isatty()


def progress(iterable, *, desc: str, unit: str = "it", min_items: int = 2, total: int | None = None):
    """``iterable`` wrapped in a tqdm bar when one is wanted, else unchanged."""
    count = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    if not progress_bars_enabled() or (count is not None and count < min_items):
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, unit=unit, total=count, leave=False)
