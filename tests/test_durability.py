"""Durability, bounded state and space of the store: fsync before publish, hits that survive
a failing index, the pull log's bounds, `check` and quarantine, a real full disk (tmpfs)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nic_cache import diskio, scrub
from nic_cache.blobs import new_temp
from nic_cache.errors import NoRoom, StoreError
from nic_cache.fill import Fills
from nic_cache.index import PRUNE_EVERY
from nic_cache.sqlitedb import Database
from nic_cache.store import Store
from tests.support.clock import FakeClock


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put(store: Store, data: bytes) -> str:
    store.put_bytes(sha(data), data, None)
    return sha(data)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class TestPublish:
    def test_bytes_reach_the_disk_before_the_rename_and_the_directory_after(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """commit_verified fsyncs the file, renames it, then fsyncs the directory, in that order."""
        calls: list[str] = []
        for name in ("fsync_file", "fsync_dir"):
            real = getattr(diskio, name)
            monkeypatch.setattr(diskio, name, lambda p, real=real, name=name: (calls.append(name), real(p)))
        real_rename = os.rename
        monkeypatch.setattr(os, "rename", lambda a, b: (calls.append("rename"), real_rename(a, b)))
        data = b"durable"
        fd, tmp = new_temp(store.tmp_dir, "t")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        store.commit_verified(tmp, sha(data), len(data), None, sha(data)[7:], len(data))
        assert calls.index("fsync_file") < calls.index("rename") < len(calls) - 1
        assert calls[-1] == "fsync_dir"


def fail_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every index write fails the way SQLite does on a full disk."""

    def full(self: Database) -> Iterator[None]:
        raise StoreError(f"{self.label}: database or disk is full")
        yield  # pragma: no cover

    import contextlib

    monkeypatch.setattr(Database, "transaction", contextlib.contextmanager(full))


class TestHitsNeverFailOnBookkeeping:
    def test_open_serves_and_leaks_nothing_when_the_access_time_cannot_be_written(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With every index write failing, open() still returns the blob, the failure is
        counted, and no descriptor is left behind."""
        digest = put(store, b"x" * 100)
        errors: list[int] = []
        store.on_index_error = lambda: errors.append(1)
        fail_writes(monkeypatch)
        before = open_fds()
        for _ in range(20):
            fd, info = store.open(digest)
            assert os.read(fd, 1000) == b"x" * 100 and info.size == 100
            os.close(fd)
        assert open_fds() == before
        assert len(errors) == 20

    def test_an_unindexed_file_is_still_served_when_the_index_is_full(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A verified file whose row could not be written is served (and adopted later)."""
        digest = put(store, b"orphan")
        store.index.conn().execute("DELETE FROM blobs")
        fail_writes(monkeypatch)
        data, info = store.read_bytes(digest)
        assert data == b"orphan" and info.size == 6


class TestPullLog:
    def test_rows_stay_under_the_bound(self, tmp_path: Path, clock: FakeClock) -> None:
        """3,000 pulls with a 500-row bound leave at most 500 + PRUNE_EVERY rows."""
        store = Store(str(tmp_path / "d"), clock=clock, pull_log_max_rows=500)
        for i in range(3000):
            store.log_pull(f"r/img:{i % 7}", None, "vm")
        assert len(store.pulls()) <= 500 + PRUNE_EVERY
        store.prune()
        assert len(store.pulls()) == 500
        assert store.pulls()[-1].ts == clock.now

    def test_old_rows_and_unused_tags_go(self, tmp_path: Path, clock: FakeClock) -> None:
        """Rows older than max_age go, and so does a tag whose manifest is no longer stored."""
        store = Store(str(tmp_path / "d"), clock=clock, pull_log_max_age=100.0)
        store.log_pull("r/old:1", None, "vm")
        store.set_tag("up", "r/old", "1", sha(b"gone"), "x")
        kept = put(store, b"kept manifest")
        store.set_tag("up", "r/kept", "1", kept, "x")
        clock.now += 200
        store.log_pull("r/new:1", None, "vm")
        store.prune()
        assert [r.image for r in store.pulls()] == ["r/new:1"]
        assert [t.repository for t in store.tags()] == ["r/kept"]


class TestCheck:
    def test_truncated_blob_is_quarantined_and_never_served(self, store: Store) -> None:
        """A file shorter than its row is moved to quarantine/ and the blob is unknown after."""
        digest = put(store, b"a" * 1000)
        Path(store.blob_path(digest)).write_bytes(b"a" * 10)
        report = scrub.check(store)
        assert report.quarantined == [digest]
        assert store.stat(digest) is None
        assert len(os.listdir(store.quarantine_dir)) == 1

    def test_corrupt_content_is_found_only_with_digests(self, store: Store) -> None:
        """Same-size corruption passes a size check and is caught by a digest check."""
        digest = put(store, b"b" * 1000)
        Path(store.blob_path(digest)).write_bytes(b"c" * 1000)
        assert scrub.check(store).quarantined == []
        assert scrub.check(store, digests=True).quarantined == [digest]
        assert store.stat(digest) is None

    def test_missing_files_drop_rows_and_good_orphans_are_adopted(self, store: Store) -> None:
        """A row without a file is dropped; a correct file without a row is adopted; a wrong one
        is quarantined."""
        gone = put(store, b"gone")
        os.unlink(store.blob_path(gone))
        orphan = put(store, b"orphan")
        bad = put(store, b"bad")
        store.index.conn().execute("DELETE FROM blobs WHERE digest IN (?, ?)", (orphan, bad))
        Path(store.blob_path(bad)).write_bytes(b"bAd")
        report = scrub.check(store)
        assert (report.dropped, report.adopted, report.quarantined) == (1, 1, [bad])
        assert store.stat(orphan) is not None and store.stat(bad) is None

    def test_quarantine_is_bounded(self, store: Store) -> None:
        """quarantine/ keeps at most QUARANTINE_KEEP files."""
        for i in range(scrub.QUARANTINE_KEEP + 5):
            digest = put(store, f"q{i}".encode() * 10)
            Path(store.blob_path(digest)).write_bytes(b"short")
        assert len(scrub.check(store).quarantined) == scrub.QUARANTINE_KEEP + 5
        assert len(os.listdir(store.quarantine_dir)) == scrub.QUARANTINE_KEEP


@pytest.fixture
def small_disk(tmpfs_factory: Callable[[str], Path]) -> Path:
    """A 4 MiB tmpfs."""
    return tmpfs_factory("4m")


class Chunks:
    """A stand-in upstream stream of `data` (size known, like a registry's Content-Length)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.size, self.closed = data, len(data), False

    def chunks(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 1 << 16):
            yield self.data[i : i + (1 << 16)]

    def close(self) -> None:
        self.closed = True


class TestFullDisk:
    def test_fill_that_cannot_fit_on_the_disk_is_refused_before_any_byte(self, small_disk: Path) -> None:
        """On a full tmpfs a fill is refused with NoRoom("disk_full") before streaming (the
        upstream stream is handed over for a pass-through), nothing partial is stored, hits
        still work, and the fill succeeds once space is freed."""
        store = Store(str(small_disk / "data"), capacity=0)
        fills = Fills(store, wait_timeout=10)
        small = put(store, b"m" * 1000)
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * (diskio.free_bytes(str(small_disk)) - 200_000))
        data = os.urandom(1_000_000)
        with pytest.raises(NoRoom) as info:
            fills.join(sha(data), lambda: Chunks(data))  # type: ignore[arg-type, return-value]
        assert info.value.reason == "disk_full" and info.value.stream is not None
        assert os.listdir(store.tmp_dir) == []
        assert store.stat(sha(data)) is None
        fd, _ = store.open(small)  # a hit on a full disk
        assert os.read(fd, 2000) == b"m" * 1000
        os.close(fd)
        ballast.unlink()
        fill = fills.join(sha(data), lambda: Chunks(data))  # type: ignore[arg-type, return-value]
        assert fill is not None and b"".join(fills.stream(sha(data), fill)) == data
        fills.wait(10)
        assert scrub.check(store, digests=True).quarantined == []
        assert os.listdir(store.tmp_dir) == []
