"""Deterministic layers: a tree of entries written as a gzip-compressed tar.

The same tree always gives the same bytes: entries are sorted by path, every parent
directory gets an explicit entry (0755, root), times are zero, owners numeric, and
the gzip header carries no name or time.

A layer may end with a *filler*: a file of incompressible bytes sized so that the
compressed layer comes to a target size. The filler goes out as deflate "stored"
blocks after a sync flush, so its compressed size is known exactly before a byte of
it is written and one pass is enough. It is still one ordinary gzip member that any
decompressor reads.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import struct
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from .errors import LayerError

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
STORED_MAX = 65535  # bytes in one deflate stored block
STORED_OVERHEAD = 5  # its header: BFINAL/BTYPE byte, LEN, NLEN
# ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown
GZIP_HEADER = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff"
GZIP_TRAILER_SIZE = 8


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"


@dataclass(frozen=True, slots=True)
class Entry:
    """One path in a layer. ``link`` is a symlink's target or a hard link's path."""

    kind: Kind
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    link: str = ""


def file(data: bytes, mode: int = 0o644, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(Kind.FILE, mode, uid, gid, data)


def directory(mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(Kind.DIR, mode, uid, gid)


def symlink(target: str) -> Entry:
    return Entry(Kind.SYMLINK, 0o777, link=target)


def hardlink(path: str) -> Entry:
    return Entry(Kind.HARDLINK, 0o644, link=normalize(path))


PARENT = directory()


def normalize(path: str) -> str:
    """``/usr/bin/``, ``./usr/bin`` and ``usr/bin`` all become ``usr/bin``."""
    parts = [p for p in PurePosixPath(path.lstrip("/")).parts if p != "."]
    if ".." in parts:
        raise LayerError(f"path escapes the root: {path!r}")
    return "/".join(parts)


class Tree:
    """Paths (relative, no leading slash) mapped to entries: the content of one layer.

    Adding a path that is already there replaces it, as a later package or layer would.
    """

    def __init__(self, entries: Iterable[tuple[str, Entry]] = ()) -> None:
        self._entries: dict[str, Entry] = {}
        for path, entry in entries:
            self.add(path, entry)

    def add(self, path: str, entry: Entry) -> None:
        name = normalize(path)
        if not name:
            return  # the root directory itself never gets an entry
        self._entries[name] = entry

    def get(self, path: str) -> Entry | None:
        return self._entries.get(normalize(path))

    def __contains__(self, path: str) -> bool:
        return normalize(path) in self._entries

    def items(self) -> Iterator[tuple[str, Entry]]:
        return iter(self._entries.items())

    def ordered(self) -> list[tuple[str, Entry]]:
        """Every entry in archive order: sorted by path, parents added, each hard link
        after the file it names (the first path of a hard-link group holds the data)."""
        entries = dict(self._entries)
        for name in list(entries):
            parent = PurePosixPath(name).parent
            while str(parent) != ".":
                entries.setdefault(str(parent), PARENT)
                parent = parent.parent
        _order_hardlinks(entries)
        return sorted(entries.items())


def _order_hardlinks(entries: dict[str, Entry]) -> None:
    groups: dict[str, list[str]] = {}
    for name, entry in entries.items():
        if entry.kind is Kind.HARDLINK:
            linked = entries.get(entry.link)
            if linked is None or linked.kind is not Kind.FILE:
                raise LayerError(f"hard link {name} names {entry.link}, which is not a file here")
            groups.setdefault(entry.link, []).append(name)
    for path, links in groups.items():
        content = entries[path]
        first, *rest = sorted([path, *links])
        entries[first] = content
        for name in rest:
            entries[name] = Entry(Kind.HARDLINK, content.mode, content.uid, content.gid, link=first)


@dataclass(frozen=True)
class Filler:
    """Pad the layer with ``path`` so it compresses to ``target`` bytes (to within 512).

    The bytes are SHAKE-256 of ``seed`` and a counter: incompressible and reproducible.
    """

    path: str
    target: int
    seed: str


@dataclass(frozen=True)
class LayerBlob:
    """What a written layer is known by: its digest, uncompressed digest and size."""

    digest: str
    diff_id: str
    size: int


def _tar_header(name: str, entry: Entry, size: int) -> bytes:
    info = tarfile.TarInfo(name + "/" if entry.kind is Kind.DIR else name)
    info.type = {
        Kind.FILE: tarfile.REGTYPE,
        Kind.DIR: tarfile.DIRTYPE,
        Kind.SYMLINK: tarfile.SYMTYPE,
        Kind.HARDLINK: tarfile.LNKTYPE,
    }[entry.kind]
    info.mode = entry.mode & 0o7777
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = 0
    info.size = size
    info.linkname = entry.link
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


class _GzipStream:
    """A gzip member written by hand around a raw deflate stream, hashing as it goes."""

    def __init__(self, out: BinaryIO, level: int) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.diff = hashlib.sha256()
        self.size = 0
        self.crc = 0
        self.isize = 0
        self.deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._emit(GZIP_HEADER)

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.digest.update(data)
            self.size += len(data)

    def _account(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.diff.update(data)
        self.isize += len(data)

    def write(self, data: bytes) -> None:
        self._account(data)
        self._emit(self.deflate.compress(data))

    def sync(self) -> int:
        """Flush to a byte boundary; return the compressed size so far."""
        self._emit(self.deflate.flush(zlib.Z_SYNC_FLUSH))
        return self.size

    def finish(self) -> None:
        self._emit(self.deflate.flush(zlib.Z_FINISH))
        self._trailer()

    def finish_stored(self, chunks: Iterable[bytes], total: int) -> None:
        """End the deflate stream with ``total`` bytes from ``chunks`` as stored blocks."""
        buf = bytearray()
        left = total
        for chunk in chunks:
            buf += chunk
            start = 0
            while len(buf) - start >= STORED_MAX and left > STORED_MAX:
                self._stored_block(bytes(buf[start : start + STORED_MAX]), final=False)
                start += STORED_MAX
                left -= STORED_MAX
            del buf[:start]
        if len(buf) != left or left > STORED_MAX:
            raise AssertionError(f"stored section came to {len(buf)} bytes, expected {left}")
        self._stored_block(bytes(buf), final=True)
        self._trailer()

    def _stored_block(self, data: bytes, *, final: bool) -> None:
        self._account(data)
        self._emit(bytes([1 if final else 0]) + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data)

    def _trailer(self) -> None:
        self._emit(struct.pack("<II", self.crc, self.isize & 0xFFFFFFFF))

    def blob(self) -> LayerBlob:
        return LayerBlob(
            digest="sha256:" + self.digest.hexdigest(),
            diff_id="sha256:" + self.diff.hexdigest(),
            size=self.size,
        )


def stored_size(payload: int) -> int:
    """Bytes that ``payload`` bytes take as deflate stored blocks."""
    blocks = max(1, -(-payload // STORED_MAX))
    return payload + STORED_OVERHEAD * blocks


def filler_size(room: int, fixed: int = BLOCK + len(END_OF_ARCHIVE)) -> int:
    """The largest filler (a multiple of 512) that fits in ``room`` bytes of stored
    blocks next to ``fixed`` bytes (its tar header and the end-of-archive marker);
    negative if not even an empty one fits."""
    data = (room * STORED_MAX // (STORED_MAX + STORED_OVERHEAD) - fixed) // BLOCK * BLOCK
    while data >= 0 and stored_size(fixed + data) > room:
        data -= BLOCK
    return data


def filler_bytes(seed: str, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """``size`` reproducible, incompressible bytes in chunks."""
    counter = 0
    while size > 0:
        n = min(chunk, size)
        yield hashlib.shake_256(f"{seed}:{counter}".encode()).digest(n)
        size -= n
        counter += 1


def write_layer(tree: Tree, out: BinaryIO, *, filler: Filler | None = None, level: int = 6) -> LayerBlob:
    """Write ``tree`` to ``out`` as a gzip tar layer and return its digests and size."""
    stream = _GzipStream(out, level)
    for name, entry in tree.ordered():
        size = len(entry.data) if entry.kind is Kind.FILE else 0
        stream.write(_tar_header(name, entry, size))
        if size:
            stream.write(entry.data)
            stream.write(_padding(size))
    if filler is None:
        stream.write(END_OF_ARCHIVE)
        stream.finish()
        return stream.blob()

    name = normalize(filler.path)
    if name in tree:
        raise LayerError(f"filler path {name} is already in the layer")
    room = filler.target - stream.sync() - GZIP_TRAILER_SIZE
    fixed = len(_tar_header(name, file(b""), 0)) + len(END_OF_ARCHIVE)
    data_size = filler_size(room, fixed)
    if data_size < 0:
        raise LayerError(
            f"layer content already compresses to {filler.target - room} bytes, "
            f"more than its target of {filler.target}"
        )
    header = _tar_header(name, file(b""), data_size)
    chunks = itertools.chain([header], filler_bytes(filler.seed, data_size), [END_OF_ARCHIVE])
    stream.finish_stored(chunks, fixed + data_size)
    return stream.blob()
