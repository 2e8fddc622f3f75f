"""Single-flight fills shared by every thread of every gunicorn worker.

One leader per digest, elected with `flock` on `tmp/<hex>.lock` (the kernel releases it if
the leader dies, so a crash never wedges a digest; the lock file is removed when released,
see nic_cache/locks.py). The leader opens the upstream, asks the store for room (fills in
flight count; a blob that cannot fit is refused with NoRoom and streamed through uncached by
the mirror), creates a unique `tmp/<hex>.<pid>.<rand>.part` with its blocks reserved (a full
disk is found before any byte is sent), publishes it in `tmp/<hex>.fill` (JSON, written by
rename) and copies upstream bytes into it from a background thread while hashing. Only when
sha256 and size match is the part file fsynced and renamed into the store; then the lock is
released.

Every reader — the leader's own client included — streams from the part file as it grows.
The last byte of every response is held back until the blob is verified and in the store,
so a fill that fails (upstream died, bytes corrupt, leader crashed) ends every reader's
response short: no client ever sees a complete-looking 200 for bytes that were not checked.

Background fills (prewarm) pass a `Pacer` that the copy loop calls after every chunk. Live
readers hold a shared flock on `tmp/<hex>.live.lock` and on `tmp/live.lock` while they
stream, so a pacer in any worker can see that a client waits on this fill (and stop
slowing it) or on some fill (and yield the link to it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from . import diskio, locks
from .blobs import new_temp
from .errors import FillAborted, NicCacheError, NoRoom, UpstreamUnavailable
from .reference import digest_hex
from .store import Store
from .upstream import BlobStream

log = logging.getLogger(__name__)
CHUNK = 1 << 20
POLL_MIN, POLL_MAX = 0.002, 0.05
LIVE_MISSES = "live.lock"
ADMIT_LOCK = "admit.lock"


@dataclass(frozen=True)
class Fill:
    """A fill in progress, as published by its leader."""

    path: str
    size: int | None
    media_type: str | None


class Pacer(Protocol):
    """Slows the copy loop of a background fill (see nic_cache/prewarm/budget.py)."""

    def pace(self, digest: str, nbytes: int) -> None:
        """Return once the fill of `digest`, which just read `nbytes`, may read on."""


class Fills:
    """Start or join fills; see the module docstring for the protocol."""

    def __init__(
        self,
        store: Store,
        *,
        wait_timeout: float = 120.0,
        on_fetched: Callable[[int], None] = lambda n: None,
        on_inflight: Callable[[int], None] = lambda d: None,
        on_done: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.tmp = store.tmp_dir
        self.wait_timeout = wait_timeout
        self._on_fetched = on_fetched
        self._on_inflight = on_inflight
        self._on_done = on_done
        self._threads: set[threading.Thread] = set()

    def _lock_path(self, digest: str) -> str:
        return os.path.join(self.tmp, f"{digest_hex(digest)}.lock")

    def _pointer_path(self, digest: str) -> str:
        return os.path.join(self.tmp, f"{digest_hex(digest)}.fill")

    def join(
        self,
        digest: str,
        open_upstream: Callable[[], BlobStream],
        media_type: str | None = None,
        *,
        pacer: Pacer | None = None,
    ) -> Fill | None:
        """Lead or follow the fill of `digest`.

        Returns the Fill to stream from, or None when the blob is already in the store.
        Errors from `open_upstream` (BlobUnknown, UpstreamUnavailable, ...) propagate to the
        caller that led; followers of a leader that failed to start try to lead themselves.
        A `pacer` paces the fill only if this call leads it.
        """
        deadline = time.monotonic() + self.wait_timeout
        delay = POLL_MIN
        while True:
            if self.store.stat(digest) is not None:
                return None
            lock_fd = locks.acquire(self._lock_path(digest))
            if lock_fd is None:
                fill = self._published(digest)
                if fill is not None:
                    return fill
            else:
                return self._lead(digest, lock_fd, open_upstream, media_type, pacer)
            if time.monotonic() > deadline:
                raise UpstreamUnavailable(f"timed out waiting for the fill of {digest} to start")
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)

    def _published(self, digest: str) -> Fill | None:
        try:
            with open(self._pointer_path(digest), encoding="utf-8") as fh:
                data = json.load(fh)
        except (FileNotFoundError, ValueError):
            return None
        if not os.path.exists(data["path"]):
            return None
        return Fill(data["path"], data["size"], data.get("media_type"))

    def _lead(
        self,
        digest: str,
        lock_fd: int,
        open_upstream: Callable[[], BlobStream],
        media_type: str | None,
        pacer: Pacer | None = None,
    ) -> Fill | None:
        lock = self._lock_path(digest)
        try:
            if self.store.stat(digest) is not None:  # finished between our check and the lock
                locks.release(lock_fd, lock)
                return None
            self._clear_stale(digest)
            upstream = open_upstream()
        except BaseException:
            locks.release(lock_fd, lock)
            raise
        fd, path = -1, ""
        try:
            # admission and publication under one lock: fills in flight are counted from
            # their pointers, so two fills must not both be admitted before either is published
            with locks.held_lock(os.path.join(self.tmp, ADMIT_LOCK)):
                self.store.admit(upstream.size)
                # where it will land exists before any byte is sent (a mkdir can hit a full disk)
                diskio.makedirs_durable(os.path.dirname(self.store.blob_path(digest)))
                fd, path = new_temp(self.tmp, digest_hex(digest))
                diskio.reserve(fd, upstream.size or 0)
                fill = Fill(path, upstream.size, media_type)
                pointer = self._pointer_path(digest)
                tmp_pointer = f"{pointer}.{os.getpid()}.{threading.get_ident()}"
                with open(tmp_pointer, "w", encoding="utf-8") as fh:
                    json.dump({"path": path, "size": fill.size, "media_type": media_type}, fh)
                os.rename(tmp_pointer, pointer)
        except BaseException as exc:
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            self._clear_stale(digest)
            locks.release(lock_fd, lock)
            if isinstance(exc, NoRoom) or diskio.is_no_space(exc):
                room = exc if isinstance(exc, NoRoom) else NoRoom(
                    f"disk full: cannot store {digest}: {exc}", reason="disk_full"
                )
                room.stream = upstream  # the mirror may stream it through uncached
                raise room from exc
            upstream.close()
            raise
        thread = threading.Thread(
            target=self._copy,
            args=(digest, fill, fd, lock_fd, upstream, pacer),
            name=f"fill-{digest_hex(digest)[:12]}",
            daemon=True,
        )
        self._threads.add(thread)
        self._on_inflight(+1)
        thread.start()
        return fill

    def _clear_stale(self, digest: str) -> None:
        """Remove what a crashed leader left for this digest (we hold the lock)."""
        hexd = digest_hex(digest)
        for name in os.listdir(self.tmp):
            if name.startswith(f"{hexd}.") and (name.endswith(".part") or ".fill" in name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.tmp, name))

    def _copy(
        self, digest: str, fill: Fill, fd: int, lock_fd: int, upstream: BlobStream, pacer: Pacer | None
    ) -> None:
        h = hashlib.sha256()
        written = 0
        try:
            try:
                with os.fdopen(fd, "wb", buffering=0) as out:
                    for chunk in upstream.chunks():
                        h.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            n = out.write(view)
                            view = view[n:]
                        written += len(chunk)
                        self._on_fetched(len(chunk))
                        if pacer is not None:
                            pacer.pace(digest, len(chunk))
            finally:
                upstream.close()
            if fill.size is not None and written < fill.size:
                raise UpstreamUnavailable(
                    f"upstream closed the blob after {written} of {fill.size} bytes"
                )
            self.store.commit_verified(fill.path, digest, fill.size, fill.media_type, h.hexdigest(), written)
            with contextlib.suppress(FileNotFoundError):  # no longer in flight: landed
                os.unlink(self._pointer_path(digest))
            try:
                self.store.evict(keep=digest)
            except NicCacheError:
                log.exception("eviction after the fill of %s failed", digest)
        except Exception as exc:
            log.warning("fill of %s failed after %d bytes: %s", digest, written, exc)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fill.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pointer_path(digest))
            locks.release(lock_fd, self._lock_path(digest))  # followers now see the outcome
            self._on_inflight(-1)
            self._on_done()
            self._threads.discard(threading.current_thread())

    def _leader_gone(self, digest: str) -> bool:
        return not locks.is_held(self._lock_path(digest))

    def stream(
        self, digest: str, fill: Fill, start: int = 0, end: int | None = None, *, live: bool = True
    ) -> Iterator[bytes]:
        """Bytes [start, end) of a fill as they land; a response reaching the blob's end gets
        its last byte only once the whole blob is verified and stored.

        A range ending earlier is sent as it lands: the client cannot check a part against
        the digest anyway, and waiting for the whole fill made a 10-byte range of a 200 MB
        miss take as long as the blob.

        A `live` reader (a client, not a background prefetch) is visible to `live_reader`
        and `live_misses` while it streams. Raises FillAborted if the fill fails or is
        superseded.
        """
        with self._marked_live(digest) if live else contextlib.nullcontext():
            yield from self._stream(digest, fill, start, end)

    def _stream(self, digest: str, fill: Fill, start: int, end: int | None) -> Iterator[bytes]:
        final = self.store.blob_path(digest)
        try:
            fd = os.open(fill.path, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        offset = start
        limit = end if end is not None else fill.size
        partial = limit is not None and fill.size is not None and limit < fill.size
        delay = POLL_MIN
        try:
            while True:
                if partial and limit is not None and offset >= limit:
                    return
                hold = limit if partial else (limit - 1) if limit is not None else None
                want = CHUNK if hold is None else min(CHUNK, hold - offset)
                data = os.pread(fd, want, offset) if fd >= 0 and want > 0 else b""
                if data:
                    offset += len(data)
                    delay = POLL_MIN
                    yield data
                    continue
                if _committed(fd, final):
                    yield from _read_rest(fd, final, offset, limit)
                    return
                if self._leader_gone(digest) or self._superseded(digest, fill):
                    if _committed(fd, final):
                        yield from _read_rest(fd, final, offset, limit)
                        return
                    raise FillAborted(f"the upstream fill of {digest} failed; try again")
                time.sleep(delay)
                delay = min(delay * 2, POLL_MAX)
        finally:
            if fd >= 0:
                os.close(fd)

    @contextlib.contextmanager
    def _marked_live(self, digest: str) -> Iterator[None]:
        with locks.held_lock(self._live_path(digest), shared=True), \
                locks.held_lock(os.path.join(self.tmp, LIVE_MISSES), shared=True):
            yield

    def _live_path(self, digest: str) -> str:
        return self.store.live_lock_path(digest)

    def live_reader(self, digest: str) -> bool:
        """Whether a live reader, in any worker, is streaming the fill of `digest`."""
        return locks.is_held(self._live_path(digest))

    def live_misses(self) -> bool:
        """Whether a live reader, in any worker, is streaming any fill."""
        return locks.is_held(os.path.join(self.tmp, LIVE_MISSES))

    def _superseded(self, digest: str, fill: Fill) -> bool:
        current = self._published(digest)
        return current is not None and current.path != fill.path

    def wait(self, timeout: float | None = None) -> None:
        """Wait for this process's fill threads (tests and shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout)


def _committed(fd: int, final: str) -> bool:
    """Whether the fill a reader follows (open as `fd`) is the blob now in the store.

    The rename keeps the inode, so a stored file with another inode came from a later fill:
    the bytes already sent were never verified and the response must fail.
    """
    try:
        stored = os.stat(final)
    except FileNotFoundError:
        return False
    if fd >= 0 and not os.path.samestat(os.fstat(fd), stored):
        raise FillAborted("the fill being followed failed; the stored blob came from another fill")
    return True


def _read_rest(fd: int, final: str, offset: int, limit: int | None) -> Iterator[bytes]:
    """The rest of a verified blob, from the reader's own descriptor when it has one: it is the
    stored file's inode, so eviction unlinking the path cannot cut the response short."""
    if fd >= 0:
        yield from _pread(fd, final, offset, limit)
        return
    try:
        own = os.open(final, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise FillAborted(f"{final} was evicted while being streamed") from exc
    try:
        yield from _pread(own, final, offset, limit)
    finally:
        os.close(own)


def _pread(fd: int, name: str, offset: int, limit: int | None) -> Iterator[bytes]:
    while limit is None or offset < limit:
        data = os.pread(fd, CHUNK if limit is None else min(CHUNK, limit - offset), offset)
        if not data:
            if limit is not None:
                raise FillAborted(f"{name} ended at {offset} of {limit} bytes")
            return
        offset += len(data)
        yield data
