"""Resolve a model name the way Hugging Face tools do, without touching the network.

A name is looked up as: a local directory; else a snapshot in the Hugging Face cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``; layout
``models--{org}--{name}/refs/{revision}`` -> ``snapshots/{commit}/``).  Downloading is
left to the user's own tools: the error says exactly which command fetches the model.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["hub_cache_dir", "resolve_model_dir"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir(cache_dir=None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_model_dir(name, revision=None, cache_dir=None, local_files_only=False) -> Path:
    """Return a directory holding the files of ``name`` (a path or a hub id)."""
    path = Path(os.fspath(name))
    if path.is_dir():
        return path
    text = os.fspath(name)
    if not isinstance(text, str) or not text or text.count("/") > 1 or text.startswith(("/", ".")):
        raise FileNotFoundError(f"{text!r}: no such directory, and not a hub id of the form 'org/name'")
    cache = hub_cache_dir(cache_dir)
    repo = cache / ("models--" + text.replace("/", "--"))
    revision = revision or "main"
    commit = revision if _COMMIT.match(revision) else None
    ref = repo / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    if commit is not None and (repo / "snapshots" / commit).is_dir():
        return repo / "snapshots" / commit
    raise FileNotFoundError(
        f"{text!r} is not a local directory and is not in the Hugging Face cache "
        f"(looked for {repo}/refs/{revision} -> snapshots/<commit>). Fetch it with:\n"
        f"    huggingface-cli download {text}"
        + (f" --revision {revision}" if revision != "main" else "")
        + "\nor pass the path of a directory holding config.json and the weights."
    )
