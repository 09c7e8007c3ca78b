"""Resolve a model name the way Hugging Face tools do, without touching the network.

A name is looked up as: a local directory; else the name of a model shipped inside the
package (minibertgen/models, e.g. ``bert2bert-dates``); else a snapshot in the Hugging Face cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``; layout
``models--{org}--{name}/refs/{revision}`` -> ``snapshots/{commit}/``); else, only when
huggingface_hub is installed, ``local_files_only`` is False and ``HF_HUB_OFFLINE`` is not
set, the files needed are downloaded into that cache.  Otherwise the error says where it
looked and the exact command that fetches the model.  Nothing else touches the network.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..models import shipped_model_dir

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


# What a model directory needs; tokenizers pass their own list.
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
               "model-*.safetensors", "pytorch_model.bin", "pytorch_model.bin.index.json",
               "pytorch_model-*.bin", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "*.model")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_dir(name, revision=None, cache_dir=None, local_files_only=False,
                      allow_patterns=MODEL_FILES) -> Path:
    """Return a directory holding the files of ``name`` (a path or a hub id)."""
    path = Path(os.fspath(name))
    if path.is_dir():
        return path
    text = os.fspath(name)
    shipped = shipped_model_dir(text)
    if shipped is not None:
        return shipped
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
    downloaded, reason = _download(text, revision, cache, local_files_only, allow_patterns)
    if downloaded is not None:
        return downloaded
    raise FileNotFoundError(
        f"{text!r} is not a local directory and is not in the Hugging Face cache "
        f"(looked for {repo}/refs/{revision} -> snapshots/<commit>){reason}. Fetch it with:\n"
        f"    pip install huggingface_hub && hf download {text}"
        + (f" --revision {revision}" if revision != "main" else "")
        + "\n(with huggingface_hub installed and HF_HUB_OFFLINE unset, loading downloads it itself), "
        "or pass the path of a directory holding config.json and the weights."
    )


def _download(repo_id, revision, cache, local_files_only, allow_patterns):
    """Fetch ``allow_patterns`` of ``repo_id`` with huggingface_hub, when that is allowed.

    Returns (directory or None, a sentence saying why nothing was fetched).
    """
    if local_files_only:
        return None, "; not downloaded: local_files_only=True"
    if _offline():
        return None, "; not downloaded: HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None, ""
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache),
                                      allow_patterns=list(allow_patterns))), ""
    except Exception as exc:  # huggingface_hub raises many error types; all mean "not available"
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"; the download failed ({type(exc).__name__}: {first_line})"
