"""One writer at a time: an exclusive lock that the kernel drops when its holder dies.

    with exclusive_lock(path, what="save_directory='out'"):
        ...   # no other holder of ``path``'s lock exists here

``path`` is a directory (locked in place, nothing created) or a lock file, created beside what
it guards and never opened through a symlink.  flock(2): a second holder -- another process, or
another open in this one -- is refused at once with ``BusyError`` naming ``what``; a holder
killed with SIGKILL releases its lock with it, so there is no stale lock to clean up.  A lock
file can be removed by its holder when done (``remove=True``): whoever locks it next checks
that the name still leads to the file it locked.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; writers are not kept apart there
    fcntl = None

__all__ = ["BusyError", "exclusive_lock"]


class BusyError(RuntimeError):
    """Another writer holds the lock on what this one was about to write."""


@contextlib.contextmanager
def exclusive_lock(path, what: str, hint: str = "", remove: bool = False, error=None):
    """Hold ``path``'s exclusive lock for the ``with`` block, or raise ``error`` (a BusyError
    subclass; BusyError itself by default) at once."""
    path = Path(path)
    directory = path.is_dir() and not path.is_symlink()
    flags = os.O_RDONLY if directory else os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        _lock(descriptor, path, what, hint, directory, error or BusyError)
        try:
            yield
        finally:
            if remove and not directory:
                path.unlink(missing_ok=True)  # still ours: the next holder checks the name
    finally:
        os.close(descriptor)


def _lock(descriptor: int, path: Path, what: str, hint: str, directory: bool, error) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise error(f"{what}: another writer (a process, or another call in this one) is writing it "
                        f"now; two at once could mix their work, so this one stops without writing"
                        f"{hint}") from None
    if not directory:  # the file we locked must still be the one the name leads to
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if not same:
            raise error(f"{what}: its lock file {path.name} was replaced while this job took it; "
                            f"another writer has just finished or started: run again{hint}")
