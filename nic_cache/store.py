"""The local store: blob files (blobs.py) plus their SQLite index (index.py), under a byte budget.

`Store` is what the services hold: the `BlobStore` contract of the files, the index's
manifest edges, tags and pull log, and the budget. Eviction is lock + rows -> policy ->
delete: one process at a time takes `tmp/evict.lock`, reads the index's rows, lets the
policy core (nic_cache/policy) choose the victims, and deletes them. A crash never breaks
the index; `nic_cache/scrub.py` checks the files against it at start-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence

from . import locks
from .blobs import BlobFiles
from .errors import NoRoom, StoreError
from .index import BlobInfo, Index, PullRecord, TagEntry
from .policy import LRU, Entry, Policy, Prefetch
from .policy_state import choose_victims, predicted_prefetch

__all__ = ["BlobInfo", "PullRecord", "Store", "TagEntry"]


class Store:
    """Blob files plus the SQLite index. Safe to share across threads and processes."""

    def __init__(
        self,
        data_dir: str,
        *,
        capacity: int = 0,
        low_watermark: float = 0.9,
        clock: Callable[[], float] = time.time,
        pull_log_max_age: float = 30 * 86400.0,
        pull_log_max_rows: int = 100_000,
        on_index_error: Callable[[], None] = lambda: None,
        policy: Callable[[], Policy] = LRU,
    ) -> None:
        self.data_dir = data_dir
        self.capacity = capacity
        self.low_watermark = low_watermark
        self.clock = clock
        self.policy = policy  # makes the eviction policy (nic_cache/policy) fed from the index
        # told (seconds, of which the policy's) after each eviction that dropped blobs
        self.on_evicted: Callable[[float, float], None] = lambda seconds, policy_seconds: None
        self.db_path = os.path.join(data_dir, "index.sqlite")
        try:
            os.makedirs(data_dir, exist_ok=True)
            self.index = Index(self.db_path, clock=clock, pull_log_max_age=pull_log_max_age,
                               pull_log_max_rows=pull_log_max_rows, on_error=on_index_error)  # fmt: skip
            self.files = BlobFiles(data_dir, self.index)
        except (OSError, StoreError) as exc:
            raise StoreError(f"cannot open store at {data_dir}: {exc}") from exc
        self.blob_dir, self.tmp_dir = self.files.blob_dir, self.files.tmp_dir
        self.quarantine_dir = self.files.quarantine_dir

    @property
    def on_index_error(self) -> Callable[[], None]:
        """Called for every index write that failed while a blob was served (a metric)."""
        return self.index.on_error

    @on_index_error.setter
    def on_index_error(self, fn: Callable[[], None]) -> None:
        self.index.on_error = fn

    def close(self) -> None:
        """Close this thread's index connection."""
        self.index.close()

    # -- blobs (blobs.py) -------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        """Where a blob lives once verified."""
        return self.files.blob_path(digest)

    def stat(self, digest: str) -> BlobInfo | None:
        """The blob's info, or None when it is not stored."""
        return self.files.stat(digest)

    def open(self, digest: str) -> tuple[int, BlobInfo]:
        """Open a stored blob for reading and count the access; raises BlobUnknown."""
        return self.files.open(digest)

    def read_bytes(self, digest: str) -> tuple[bytes, BlobInfo]:
        """A small stored blob (a manifest) in memory; raises BlobUnknown."""
        return self.files.read_bytes(digest)

    def commit_verified(
        self,
        tmp_path: str,
        digest: str,
        size: int | None,
        media_type: str | None,
        sha256_hex: str,
        actual_size: int,
    ) -> BlobInfo:
        """Rename a temp file whose hash the caller computed while writing it."""
        return self.files.commit_verified(tmp_path, digest, size, media_type, sha256_hex, actual_size)

    def put_bytes(self, digest: str, data: bytes, media_type: str | None) -> BlobInfo:
        """Store small content (a manifest) after verifying it."""
        return self.files.put_bytes(digest, data, media_type)

    def delete_blob(self, digest: str) -> bool:
        """Remove a blob (and what was derived from it); open readers keep their bytes."""
        return self.files.delete(digest)

    def live_lock_path(self, digest: str) -> str:
        """The lock a client streaming the fill of `digest` holds shared (see fill.py)."""
        return self.files.live_lock_path(digest)

    def recover(self) -> list[str]:
        """Collect what crashed fills left in tmp/ (never a fill still running); see scrub.py."""
        from .scrub import collect_temp

        return collect_temp(self)

    # -- facts about blobs, manifests, tags and pulls (index.py) ----------------------------

    def touch(self, digest: str) -> bool:
        """Record an access (never raises; False if it could not be written)."""
        return self.index.touch(digest)

    def set_pinned(self, digests: Iterable[str], pinned: bool) -> None:
        """Pin (never evict) or unpin blobs."""
        self.index.set_pinned(digests, pinned)

    def pinned(self) -> set[str]:
        """Digests of every pinned blob."""
        return self.index.pinned()

    def refresh(self, digests: Iterable[str]) -> None:
        """Mark blobs as recently used without counting a hit (a prewarm found them)."""
        self.index.refresh(digests)

    def usage(self) -> tuple[int, int]:
        """(bytes, blob count) in the store."""
        return self.index.usage()

    def link_manifest(self, manifest: str, children: Iterable[str]) -> None:
        """Record which blobs and child manifests a manifest needs."""
        self.index.link_manifest(manifest, children)

    def children(self, manifest: str) -> list[str]:
        """What a stored manifest references."""
        return self.index.children(manifest)

    def closure(self, manifest: str) -> list[str]:
        """The manifest and everything it references, transitively."""
        return self.index.closure(manifest)

    def get_tag(self, upstream: str, repository: str, tag: str) -> TagEntry | None:
        """The cached digest of a tag, or None."""
        return self.index.get_tag(upstream, repository, tag)

    def set_tag(self, upstream: str, repository: str, tag: str, digest: str, media_type: str) -> None:
        """Remember a tag's digest as just confirmed upstream."""
        self.index.set_tag(upstream, repository, tag, digest, media_type)

    def tags(self, upstream: str | None = None, repository: str | None = None) -> list[TagEntry]:
        """Every cached tag, optionally of one upstream/repository."""
        return self.index.tags(upstream, repository)

    def delete_tag(self, upstream: str, repository: str, tag: str) -> None:
        """Forget a tag."""
        self.index.delete_tag(upstream, repository, tag)

    def referenced_elsewhere(
        self, digests: Iterable[str], excluding_tags: set[tuple[str, str, str]]
    ) -> set[str]:
        """Which of `digests` are still needed by some tag other than `excluding_tags`."""
        return self.index.referenced_elsewhere(digests, excluding_tags)

    def log_pull(self, image: str, digest: str | None, client: str | None, kind: str = "pull") -> None:
        """Record a manifest pull or a deploy event for popularity."""
        self.index.log_pull(image, digest, client, kind)

    def prune(self) -> None:
        """Cut the pull log to its bounds and forget long-unused tags."""
        self.index.prune()

    def pulls(self, since: float = 0.0) -> list[PullRecord]:
        """The pull log since a time, oldest first."""
        return self.index.pulls(since)

    # -- space ----------------------------------------------------------------------------

    def inflight_bytes(self) -> int:
        """Bytes that fills in progress (in any process) will add when they land."""
        return self.files.inflight_bytes()

    def admit(self, size: int | None) -> None:
        """Make room for a fill of `size` bytes under the budget, counting fills in flight;
        raises NoRoom when the blob can never fit (`too_big`) or cannot fit now (`budget`)."""
        if self.capacity <= 0 or size is None:
            return
        if size > self.capacity * self.low_watermark:
            raise NoRoom(
                f"blob of {size} bytes is larger than the cache keeps "
                f"({self.low_watermark:.0%} of {self.capacity})", reason="too_big",
            )
        if self._demand(size) <= self.capacity:
            return
        try:
            self.evict(incoming=size)
        except StoreError as exc:  # the index cannot even record a deletion: the disk is full
            raise NoRoom(f"cannot make room for {size} bytes: {exc}", reason="disk_full") from exc
        if self._demand(size) > self.capacity:
            raise NoRoom(f"no room for {size} more bytes under the budget right now", reason="budget")

    def _demand(self, incoming: int = 0) -> int:
        return self.usage()[0] + self.inflight_bytes() + incoming

    def evict(self, keep: str | None = None, incoming: int = 0) -> list[str]:
        """When over capacity, drop the blobs the eviction policy chooses (never pinned ones)
        down to the low watermark (never `keep`, the blob just filled, which its readers are
        about to get, nor a blob whose fill a client still streams). Fills in flight and
        `incoming` bytes count as used. One process evicts at a time; others skip. Returns
        what went."""
        if self.capacity <= 0 or self._demand(incoming) <= self.capacity:
            return []
        fd = locks.acquire(os.path.join(self.tmp_dir, "evict.lock"))
        if fd is None:
            return []
        try:
            started = time.monotonic()
            policy_seconds = 0.0
            need = self._demand(incoming) - int(self.capacity * self.low_watermark)
            held = {k for k in (keep, *self.files.live_readers()) if k}
            # derived blobs (re-encodings of a stored layer, transcoder.py) go first: their
            # source stands in for them; the policy chooses among the rest
            victims = derived_first(self.index.derived_entries(), need, held)
            need -= sum(e.size for e in victims)
            chosen = [e.key for e in victims]
            if need > 0:  # the configured policy, with what it learned (policy_state.py)
                chose = time.monotonic()
                chosen += choose_victims(self.index, self.policy(), self.index.entries(), self.closure,
                                         need=need, now=self.clock(), keep=[*held, *chosen])  # fmt: skip
                policy_seconds = time.monotonic() - chose
            for digest in chosen:
                self.delete_blob(digest)
            if chosen:
                self.on_evicted(time.monotonic() - started, policy_seconds)
            return chosen
        finally:
            os.close(fd)  # evict.lock stays: it is one file, taken and left by every eviction

    def predicted(self, policy: Policy, budget: int) -> list[Prefetch]:
        """What `policy`, fed with what the eviction policy learned, would prefetch now within
        `budget` bytes (read-only: it takes no lock and saves nothing)."""
        return predicted_prefetch(self.index, policy, self.index.entries(), self.closure,
                                  now=self.clock(), budget=budget)  # fmt: skip


def derived_first(derived: Sequence[Entry], need: int, held: set[str]) -> list[Entry]:
    """The derived blobs to drop before asking the policy, least recently used first, until
    `need` bytes are freed (never one in `held`)."""
    out: list[Entry] = []
    for entry in derived:
        if need <= 0:
            break
        if entry.key not in held:
            out.append(entry)
            need -= entry.size
    return out
