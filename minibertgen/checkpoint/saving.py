"""Writing files so that a failure never leaves a silent mix of old and new.

One file (``write_atomically``, checkpoint/atomic.py): the bytes go to a fresh temporary
name in the same directory, are flushed to disk, and only then renamed over the target.
A reader sees the old file or the new one, never a part.

A model directory (``save_model_files``) is several files -- config.json,
model.safetensors, generation_config.json -- and renaming them one by one cannot be
atomic as a set.  So:

1. every file is written completely under its temporary name; if any write fails
   (a full disk, a bad tensor), all temporary files are removed and the directory is
   exactly as it was: the old model intact;
2. a marker file, ``SAVE_MARKER``, is written: "a save is being swapped in";
3. the temporary files are renamed over their targets (weights first, config.json last);
4. the marker is removed.

A process killed during step 3 leaves the marker behind, and every minibertgen reader
(``check_save_complete``) then refuses the directory with a clear error instead of
loading a config of one model over the weights of another.  Temporary files of a save
that was killed are removed by the next save into the directory.

One writer per directory: a save holds an exclusive lock on the directory itself (flock,
file_lock.py) from before it looks for stale temporaries until its marker is gone.  A
second save into the same directory at the same time, from any process, is refused at once
with ``ConcurrentSaveError`` (nothing of it written), so two saves give one model or the
other, never a mix.
"""
from __future__ import annotations

import os
from pathlib import Path

from .atomic import _sync_directory, _write_temporary, prepare_directory, remove_stale_temporaries, text_writer, \
    write_atomically
from ..file_lock import BusyError, exclusive_lock
from .errors import CheckpointError
from .safetensors_io import safetensors_writer

__all__ = ["SAVE_MARKER", "IncompleteSaveError", "ConcurrentSaveError", "write_atomically", "save_model",
           "save_model_files", "check_save_complete", "prepare_directory", "saved_state"]

SAVE_MARKER = ".minibertgen-save-in-progress"


class IncompleteSaveError(CheckpointError):
    """A save_pretrained into this directory stopped while swapping its files in."""


class ConcurrentSaveError(BusyError):
    """Another save into the same directory is running now; this one wrote nothing."""


def save_model_files(save_directory, files: dict) -> Path:
    """Write ``files`` ({file name: write(handle)}, in rename order) into ``save_directory``
    as one set: all written first, then swapped in under a marker (see the module doc), while
    holding the directory's lock (a concurrent save raises ConcurrentSaveError)."""
    directory = prepare_directory(save_directory)
    with exclusive_lock(directory, f"save_directory={str(save_directory)!r}", error=ConcurrentSaveError,
                        hint="; wait for the other save to finish, or save elsewhere"):
        _swap_in(directory, files)
    return directory


def _swap_in(directory: Path, files: dict) -> None:
    remove_stale_temporaries(directory)
    written: dict[str, Path] = {}
    try:
        for name, write in files.items():
            written[name] = _write_temporary(directory / name, write)
        marker = directory / SAVE_MARKER
        write_atomically(marker, text_writer("".join(f"{name}\n" for name in files)))
        _sync_directory(directory)
        for name, temporary in list(written.items()):
            os.replace(temporary, directory / name)
            del written[name]
        _sync_directory(directory)
        marker.unlink()
        _sync_directory(directory)
    finally:
        for temporary in written.values():  # only when something failed
            temporary.unlink(missing_ok=True)


def check_save_complete(directory) -> None:
    """Raise IncompleteSaveError if a save into ``directory`` stopped while swapping files in."""
    marker = Path(directory) / SAVE_MARKER
    if marker.exists():
        try:
            names = ", ".join(marker.read_text(encoding="utf-8").split())
        except (OSError, UnicodeDecodeError):
            names = "its files"
        raise IncompleteSaveError(
            f"{directory}: a save_pretrained into this directory did not finish (found {SAVE_MARKER}); "
            f"{names} may come from two different models. Save the model again into this directory, "
            "or delete it"
        )


def save_model(save_directory, config, weights: dict, generation_config=None) -> Path:
    """Save a model directory as one set: model.safetensors (``weights``), then
    generation_config.json (when given), then config.json (see the module doc)."""
    files = {"model.safetensors": safetensors_writer(weights, {"format": "pt"})}
    if generation_config is not None:
        files["generation_config.json"] = text_writer(generation_config.to_json_string())
    files["config.json"] = text_writer(config.to_json_string(use_diff=True))
    return save_model_files(save_directory, files)


def saved_state(flat: dict, pairs) -> dict:
    """The tensors save_pretrained writes: a tied name whose array is its source's is left
    out (transformers writes each shared tensor once, under the name it ties to)."""
    dropped = {target for target, source in pairs if target in flat and source in flat
               and flat[target] is flat[source]}
    return {name: array for name, array in flat.items() if name not in dropped}
