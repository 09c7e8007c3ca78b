"""Writing files so that a failure never leaves a silent mix of old and new.

One file (``write_atomically``): the bytes go to a fresh temporary name in the same
directory, opened exclusively (``O_CREAT | O_EXCL``, so a symlink or file planted at
that name is never followed or overwritten), are flushed to disk, and only then renamed
over the target.  A reader sees the old file or the new one, never a part.

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
import re
import uuid
from pathlib import Path

from ..file_lock import BusyError, exclusive_lock
from .errors import CheckpointError

__all__ = ["SAVE_MARKER", "IncompleteSaveError", "ConcurrentSaveError", "write_atomically", "save_model", "save_model_files",
           "check_save_complete", "prepare_directory"]

SAVE_MARKER = ".minibertgen-save-in-progress"
# .<target name>.<pid>.<32 hex digits>.tmp -- the pid says whose file it is.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp$")


class IncompleteSaveError(CheckpointError):
    """A save_pretrained into this directory stopped while swapping its files in."""


class ConcurrentSaveError(BusyError):
    """Another save into the same directory is running now; this one wrote nothing."""


def prepare_directory(save_directory, what="save_directory") -> Path:
    """Create ``save_directory`` (and parents) unless it exists; refuse a file."""
    directory = Path(os.fspath(save_directory))
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{what}={str(save_directory)!r} is a file, expected a directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _temporary_for(target: Path) -> tuple[Path, int]:
    """A new temporary file beside ``target``, created exclusively: (path, descriptor)."""
    path = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    # O_EXCL: fails if anything (a symlink included) already has the name; 0o666 lets the umask decide.
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def _write_temporary(target: Path, write) -> Path:
    """``write(binary handle)`` into a temporary file beside ``target``, flushed to disk."""
    temporary, descriptor = _temporary_for(target)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:  # a failed write (or Ctrl-C) leaves nothing behind
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def write_atomically(path, write) -> Path:
    """Write one file: ``write(handle)`` goes to a temporary name, renamed over ``path`` when done."""
    path = Path(path)
    temporary = _write_temporary(path, write)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def text_writer(text: str):
    """A ``write(handle)`` for a text file (UTF-8)."""
    data = text.encode("utf-8")
    return lambda handle: handle.write(data)


def _sync_directory(directory: Path) -> None:
    """Flush the directory entry itself, so renames survive a power cut (POSIX only)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files left by saves whose process is gone (killed mid-write)."""
    removed = []
    for entry in directory.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and entry.is_file() and not entry.is_symlink() and not _pid_alive(int(match["pid"])):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


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
    from .safetensors_io import safetensors_writer

    files = {"model.safetensors": safetensors_writer(weights, {"format": "pt"})}
    if generation_config is not None:
        files["generation_config.json"] = text_writer(generation_config.to_json_string())
    files["config.json"] = text_writer(config.to_json_string(use_diff=True))
    return save_model_files(save_directory, files)
