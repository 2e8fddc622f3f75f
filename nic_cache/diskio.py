"""Disk primitives the store needs for durability and space: fsync, reservation, free space.

A blob is published by rename, so the rename must not reach the disk before the bytes do:
`fsync_file` before the rename and `fsync_dir` after it (and after creating a directory)
make a power loss leave either the old state or the whole verified file, never a short one.

`reserve` claims a fill's blocks up front (fallocate with KEEP_SIZE: the file's size still
grows only as bytes land, which is how readers follow a fill), so a full disk is found
before the client got a status line instead of as a truncated 200.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

FALLOC_FL_KEEP_SIZE = 0x01
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
    _fallocate.restype = ctypes.c_int


def is_no_space(exc: BaseException) -> bool:
    """Whether an error means the disk (or quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def fsync_file(path: str) -> None:
    """Flush a file's data to the disk (any descriptor of the inode will do)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush a directory's entries (a rename or a new file in it) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str) -> None:
    """`os.makedirs` whose new entries survive a power loss."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    makedirs_durable(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    fsync_dir(parent)


def reserve(fd: int, size: int) -> None:
    """Claim `size` bytes of disk for the file open as `fd` without changing its size.

    Raises OSError(ENOSPC) when the disk cannot hold them; does nothing where the
    filesystem cannot reserve (the write itself then finds a full disk).
    """
    if size <= 0 or _fallocate is None:
        return
    if _fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size) != 0:
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return
        raise OSError(err, os.strerror(err))


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still put on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
