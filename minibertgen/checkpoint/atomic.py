"""Writing one file atomically: a failure never leaves a part of it.

The bytes go to a fresh temporary name in the same directory, opened exclusively
(``O_CREAT | O_EXCL``, so a symlink or file planted at that name is never followed or
overwritten), are flushed to disk, and only then renamed over the target.  A reader sees
the old file or the new one, never a part.  Temporary files of a writer that was killed
are recognised by their name (it holds the writer's pid) and removed by the next save
(checkpoint/saving.py builds a whole model directory on these).
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

__all__ = ["write_atomically", "text_writer", "prepare_directory", "remove_stale_temporaries"]

# .<target name>.<pid>.<32 hex digits>.tmp -- the pid says whose file it is.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp$")


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
