"""Error messages that end in the fix: the closest known name for a mistyped keyword
argument (difflib), and the minibertgen spelling of transformers options it takes
differently (``device_map=`` -> ``device=``, ``load_in_4bit=True`` -> ``quantization_config=``).
"""
from __future__ import annotations

import difflib

__all__ = ["unexpected_keywords", "closest"]

# transformers' keyword -> what to pass to minibertgen instead
KNOWN_FIXES = {
    "device_map": "minibertgen places the whole model on one device: pass device='cpu', 'cuda' or 'cuda:1'",
    "load_in_4bit": "pass quantization_config=BitsAndBytesConfig(load_in_4bit=True) instead",
    "load_in_8bit": "pass quantization_config=BitsAndBytesConfig(load_in_8bit=True) instead",
}


def closest(name: str, candidates) -> str | None:
    """The known name most like ``name`` (a likely typo), or None."""
    found = difflib.get_close_matches(name, [c for c in candidates if isinstance(c, str)], n=1, cutoff=0.75)
    return found[0] if found else None


def unexpected_keywords(what: str, unknown, candidates, note: str = "") -> str:
    """The message of a TypeError for keyword arguments ``what`` does not take: each name
    with its fix or the closest known name ("did you mean ...?")."""
    parts = []
    for name in unknown:
        if name in KNOWN_FIXES:
            parts.append(f"{name} ({KNOWN_FIXES[name]})")
        else:
            guess = closest(name, candidates)
            parts.append(f"{name} (did you mean {guess!r}?)" if guess else name)
    return f"{what} got unexpected keyword argument(s): {', '.join(parts)}" + (f" {note}" if note else "")
