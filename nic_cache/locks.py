"""Lock files that are removed once released, safely across threads and processes.

A flock lives on an inode, not on a path. Unlinking a lock file while someone waits for it
would let a newcomer create a second file under the same name and lock that one too: two
holders. So whoever locks checks, once it holds the lock, that the path still names the
inode it locked, and starts over if not; and only a holder unlinks (before it releases).
That keeps `tmp/` free of one lock file per digest or tag ever asked for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


def acquire(path: str, *, shared: bool = False, blocking: bool = False) -> int | None:
    """Lock `path` (created if missing); the open descriptor, or None if someone else holds
    it and `blocking` is False."""
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the holder before us removed it: lock the current file instead


def release(fd: int, path: str) -> None:
    """Remove `path` if we are its last holder, then unlock and close `fd`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no-op for an exclusive holder
    except BlockingIOError:
        pass  # other shared holders remain: the last one removes it
    else:
        if _same_file(fd, path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def held_lock(path: str, *, shared: bool = False) -> Iterator[None]:
    """Hold `path` (blocking) for the duration of the block, then remove it if last."""
    fd = acquire(path, shared=shared, blocking=True)
    assert fd is not None
    try:
        yield
    finally:
        release(fd, path)


def is_held(path: str) -> bool:
    """Whether someone holds a flock on `path` (a missing file is held by no one)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_if_free(path: str) -> bool:
    """Remove a lock file no one holds (start-up collection); True if removed."""
    try:
        fd = acquire(path)
    except FileNotFoundError:
        return False
    if fd is None:
        return False
    release(fd, path)
    return True


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
