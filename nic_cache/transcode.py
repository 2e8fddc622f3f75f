"""Re-encode a layer blob (gzip) as zstd or plain tar, verified against the config's diff_id.

Pure streaming core: bytes in (a file object), bytes out (a file object), no store, no HTTP.
`recode` decompresses the source once, hashes the tar it yields, and writes the new
encoding while hashing that too. The result is only usable when the tar's sha256 equals the
diff_id the image config lists for this layer (`Recoded.verified`): the runtime checks the
same thing when it unpacks, and a layer that would fail there must never be offered.

Why zstd: containerd 1.6 reads `application/vnd.oci.image.layer.v1.tar+zstd` and decodes it
far faster than gzip, and the unpack in the VM dominates a cold start once the bytes sit on
the NIC (see `load/bench_layers.py` for the numbers that picked the default level).
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from .errors import TranscodeError

GZIP_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
ZSTD_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR_TYPE = "application/vnd.oci.image.layer.v1.tar"
ENCODINGS = ("zstd", "tar")
MEDIA_TYPES = {"zstd": ZSTD_TYPE, "tar": TAR_TYPE}
DEFAULT_LEVEL = 3
CHUNK = 1 << 20


@dataclass(frozen=True)
class Recoded:
    """What one `recode` produced."""

    digest: str  # sha256 of the new encoding
    size: int
    media_type: str
    diff_id: str  # sha256 of the uncompressed tar, as computed
    source_size: int
    cpu_s: float  # thread CPU seconds the recode took

    def verified(self, expected_diff_id: str) -> bool:
        """Whether the tar inside is the one the image config names."""
        return self.diff_id == expected_diff_id


class _HashingWriter:
    """A write-only file object that hashes, counts and forwards what it is given."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def _gunzip(src: BinaryIO, counter: list[int], chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield the decompressed bytes of a gzip stream (several members allowed)."""
    inflater = zlib.decompressobj(wbits=31)
    while data := src.read(chunk):
        counter[0] += len(data)
        while data:
            if inflater.eof:  # the next gzip member starts here
                inflater = zlib.decompressobj(wbits=31)
            try:
                out = inflater.decompress(data)
            except zlib.error as exc:
                raise TranscodeError(f"source is not valid gzip: {exc}") from exc
            if out:
                yield out
            data = inflater.unused_data if inflater.eof else b""
    if not inflater.eof:
        raise TranscodeError("source gzip stream is truncated")


def recode(src: BinaryIO, dst: BinaryIO, *, encoding: str = "zstd", level: int = DEFAULT_LEVEL) -> Recoded:
    """Decompress the gzip stream `src`, write it to `dst` as `encoding` ("zstd" at `level`,
    or "tar" uncompressed); TranscodeError if `src` is not gzip. Does not check the diff_id:
    the caller compares `Recoded.diff_id` with the config before keeping the output."""
    if encoding not in ENCODINGS:
        raise TranscodeError(f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
    started = time.thread_time()
    out = _HashingWriter(dst)
    tar_sha = hashlib.sha256()
    counter = [0]
    if encoding == "zstd":
        compressor = zstandard.ZstdCompressor(level=level).compressobj()
        for data in _gunzip(src, counter):
            tar_sha.update(data)
            piece = compressor.compress(data)
            if piece:
                out.write(piece)
        out.write(compressor.flush())
    else:
        for data in _gunzip(src, counter):
            tar_sha.update(data)
            out.write(data)
    return Recoded(
        digest="sha256:" + out.sha.hexdigest(),
        size=out.size,
        media_type=MEDIA_TYPES[encoding],
        diff_id="sha256:" + tar_sha.hexdigest(),
        source_size=counter[0],
        cpu_s=time.thread_time() - started,
    )
