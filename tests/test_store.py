"""Tests for nic_cache.store: verified commits, crash recovery, LRU eviction, manifest edges, tags."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from nic_cache.blobs import BlobStore, new_temp
from nic_cache.errors import BlobUnknown, DigestMismatch, StoreError
from nic_cache.store import Store
from tests.support.clock import FakeClock


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_temp(store: Store, data: bytes) -> str:
    fd, path = new_temp(store.tmp_dir, "test")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def stored_files(store: Store) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), store.blob_dir)
        for root, _, names in os.walk(store.blob_dir)
        for name in names
    )


@pytest.fixture(params=["files", "store"])
def blob_store(request: pytest.FixtureRequest, store: Store) -> BlobStore:
    """Each implementation of the BlobStore contract: the files alone and the whole store."""
    impl: BlobStore = store.files if request.param == "files" else store
    return impl


class TestBlobStoreContract:
    def test_missing_blob(self, blob_store: BlobStore) -> None:
        """A blob not stored has no info, and opening it raises BlobUnknown."""
        assert blob_store.stat(sha(b"nothing")) is None
        with pytest.raises(BlobUnknown):
            blob_store.open(sha(b"nothing"))

    def test_commit_then_read(self, blob_store: BlobStore, store: Store) -> None:
        """A verified commit is stat-able and opens to its bytes."""
        data = b"contract bytes"
        tmp = write_temp(store, data)
        info = blob_store.commit_verified(tmp, sha(data), len(data), None, sha(data)[7:], len(data))
        assert blob_store.stat(sha(data)) == info and info.size == len(data)
        fd, opened = blob_store.open(sha(data))
        with os.fdopen(fd, "rb") as fh:
            assert fh.read() == data
        assert opened == info

    def test_mismatch_removes_the_temp_file(self, blob_store: BlobStore, store: Store) -> None:
        """Content that does not hash to the digest is refused and never published."""
        tmp = write_temp(store, b"wrong")
        with pytest.raises(DigestMismatch):
            blob_store.commit_verified(tmp, sha(b"right"), 5, None, sha(b"wrong")[7:], 5)
        assert not os.path.exists(tmp) and blob_store.stat(sha(b"right")) is None


class TestCommitVerified:
    def test_moves_verified_file_into_place(self, store: Store) -> None:
        """Matching content is renamed to blobs/sha256/<2 hex>/<hex> and indexed."""
        data = b"layer bytes"
        digest = sha(data)
        tmp = write_temp(store, data)
        info = store.commit_verified(tmp, digest, len(data), "application/x-test", digest[7:], len(data))
        assert (info.digest, info.size, info.media_type, info.hits, info.pinned) == (
            digest,
            len(data),
            "application/x-test",
            0,
            False,
        )
        assert Path(store.blob_path(digest)).read_bytes() == data
        assert store.blob_path(digest).endswith(f"/blobs/sha256/{digest[7:9]}/{digest[7:]}")
        assert not os.path.exists(tmp)
        assert store.stat(digest) == info
        assert store.usage() == (len(data), 1)

    def test_unknown_size_is_accepted(self, store: Store) -> None:
        """Without an expected size only the digest is checked."""
        data = b"no content-length"
        tmp = write_temp(store, data)
        info = store.commit_verified(tmp, sha(data), None, None, sha(data)[7:], len(data))
        assert info.size == len(data)

    @pytest.mark.parametrize(
        ("claimed", "size", "actual_size"),
        [
            (sha(b"other"), 4, 4),
            (None, 5, 4),
            (None, 3, 4),
            (sha(b"other"), None, 4),
        ],
        ids=["digest", "size-short", "size-long", "digest-no-size"],
    )
    def test_refuses_mismatch_and_leaves_nothing(
        self, store: Store, claimed: str | None, size: int | None, actual_size: int
    ) -> None:
        """A digest or size mismatch raises DigestMismatch, removes the temp file and stores nothing."""
        data = b"data"
        digest = claimed or sha(data)
        tmp = write_temp(store, data)
        with pytest.raises(DigestMismatch, match=digest):
            store.commit_verified(tmp, digest, size, None, hashlib.sha256(data).hexdigest(), actual_size)
        assert os.listdir(store.tmp_dir) == []
        assert stored_files(store) == []
        assert store.stat(digest) is None
        assert store.usage() == (0, 0)


class TestPutBytes:
    def test_round_trip(self, store: Store) -> None:
        """Small verified content is stored and read back with its media type."""
        data = b'{"schemaVersion": 2}'
        store.put_bytes(sha(data), data, "application/vnd.oci.image.manifest.v1+json")
        body, info = store.read_bytes(sha(data))
        assert body == data
        assert info.media_type == "application/vnd.oci.image.manifest.v1+json"
        assert os.listdir(store.tmp_dir) == []

    def test_mismatch_stores_nothing(self, store: Store) -> None:
        """Content that does not hash to the digest raises DigestMismatch and leaves no file."""
        with pytest.raises(DigestMismatch):
            store.put_bytes(sha(b"expected"), b"actual", None)
        assert os.listdir(store.tmp_dir) == []
        assert stored_files(store) == []

    def test_second_put_keeps_one_row(self, store: Store, clock: FakeClock) -> None:
        """Putting the same content twice keeps the first row and its creation time."""
        data = b"same"
        first = store.put_bytes(sha(data), data, "a/b")
        clock.now += 10
        second = store.put_bytes(sha(data), data, "c/d")
        assert second == first
        assert store.usage() == (len(data), 1)


class TestStatAndOpen:
    def test_unknown_blob(self, store: Store) -> None:
        """stat of an absent blob is None and open raises BlobUnknown."""
        digest = sha(b"absent")
        assert store.stat(digest) is None
        with pytest.raises(BlobUnknown, match=digest):
            store.open(digest)

    def test_open_counts_hits_and_access(self, store: Store, clock: FakeClock) -> None:
        """Each open bumps hits and moves last_access to the clock's time."""
        data = b"popular"
        store.put_bytes(sha(data), data, None)
        for t in (2000.0, 3000.0):
            clock.now = t
            fd, _ = store.open(sha(data))
            os.close(fd)
        info = store.stat(sha(data))
        assert info is not None
        assert (info.hits, info.last_access) == (2, 3000.0)

    def test_adopts_orphan_file(self, store: Store, clock: FakeClock) -> None:
        """A verified file without a row (crash between rename and insert) is adopted with its size."""
        data = b"renamed before the crash"
        path = Path(store.blob_path(sha(data)))
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        info = store.stat(sha(data))
        assert info is not None
        assert (info.size, info.media_type, info.last_access) == (len(data), None, clock.now)
        assert store.usage() == (len(data), 1)

    def test_adoption_keeps_media_type_from_late_commit(self, store: Store) -> None:
        """A commit that indexes after stat adopted its file still records its media type."""
        data = b"race"
        path = Path(store.blob_path(sha(data)))
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        assert store.stat(sha(data)) is not None
        tmp = write_temp(store, data)
        info = store.commit_verified(tmp, sha(data), len(data), "x/y", sha(data)[7:], len(data))
        assert info.media_type == "x/y"
        assert store.usage() == (len(data), 1)

    def test_drops_row_whose_file_vanished(self, store: Store) -> None:
        """A row whose file is gone is forgotten: stat is None, open is BlobUnknown, usage drops."""
        data = b"deleted by hand"
        store.put_bytes(sha(data), data, None)
        os.unlink(store.blob_path(sha(data)))
        assert store.stat(sha(data)) is None
        assert store.usage() == (0, 0)
        with pytest.raises(BlobUnknown):
            store.open(sha(data))

    def test_open_reader_survives_delete(self, store: Store) -> None:
        """A reader's descriptor keeps the bytes after the blob is deleted."""
        data = b"x" * 10_000
        store.put_bytes(sha(data), data, None)
        fd, _ = store.open(sha(data))
        try:
            assert store.delete_blob(sha(data)) is True
            assert os.pread(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)
        assert store.delete_blob(sha(data)) is False

    def test_index_survives_reopen(self, tmp_path: Path, store: Store) -> None:
        """A second Store on the same directory sees what the first stored."""
        store.put_bytes(sha(b"persist"), b"persist", "m/t")
        other = Store(store.data_dir)
        try:
            info = other.stat(sha(b"persist"))
            assert info is not None and info.media_type == "m/t"
        finally:
            other.close()

    def test_unusable_data_dir(self, tmp_path: Path) -> None:
        """A data directory that cannot be created is a StoreError naming it."""
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        with pytest.raises(StoreError, match="cannot open store"):
            Store(str(blocker / "data"))


def fill_store(store: Store, clock: FakeClock, names: str, size: int = 100) -> dict[str, str]:
    """Store one blob of `size` bytes per letter, one clock tick apart; returns letter -> digest."""
    digests = {}
    for name in names:
        clock.now += 1
        data = name.encode() * size
        digests[name] = store.put_bytes(sha(data), data, None).digest
    return digests


class TestEvict:
    @pytest.mark.parametrize(
        ("capacity", "watermark", "touched", "pinned", "victims"),
        [
            (350, 0.6, "", "", "ab"),
            (350, 0.6, "a", "", "bc"),
            (350, 0.6, "", "b", "ac"),
            (350, 0.6, "", "abc", "d"),
            (350, 0.6, "", "abcd", ""),
            (400, 0.5, "", "", ""),
            (399, 0.5, "", "", "abc"),
            (399, 1.0, "", "", "a"),
            (0, 0.5, "", "", ""),
        ],
        ids=[
            "oldest-first",
            "touched-survives",
            "pinned-survives",
            "only-unpinned",
            "all-pinned",
            "at-capacity",
            "just-over",
            "watermark-one",
            "disabled",
        ],
    )
    def test_lru_with_low_watermark(
        self,
        store: Store,
        clock: FakeClock,
        capacity: int,
        watermark: float,
        touched: str,
        pinned: str,
        victims: str,
    ) -> None:
        """Over capacity, the least recently used unpinned blobs go until usage is at the low watermark."""
        digests = fill_store(store, clock, "abcd")
        for name in touched:
            clock.now += 1
            store.touch(digests[name])
        store.set_pinned([digests[n] for n in pinned], True)
        store.capacity, store.low_watermark = capacity, watermark
        gone = store.evict()
        assert gone == [digests[n] for n in victims]
        for name, digest in digests.items():
            assert (store.stat(digest) is None) is (name in victims)
            assert os.path.exists(store.blob_path(digest)) is (name not in victims)

    def test_unpin(self, store: Store, clock: FakeClock) -> None:
        """An unpinned blob is evictable again."""
        digests = fill_store(store, clock, "ab")
        store.set_pinned(digests.values(), True)
        store.capacity, store.low_watermark = 150, 0.5
        assert store.evict() == []
        store.set_pinned([digests["a"]], False)
        assert store.evict() == [digests["a"]]
        info = store.stat(digests["b"])
        assert info is not None and info.pinned

    def test_eviction_forgets_manifest_edges(self, store: Store, clock: FakeClock) -> None:
        """Evicting a manifest drops the edges it recorded."""
        digests = fill_store(store, clock, "mb")
        store.link_manifest(digests["m"], [digests["b"]])
        store.capacity, store.low_watermark = 150, 0.7
        assert store.evict() == [digests["m"]]
        assert store.children(digests["m"]) == []


A1, A2, B1 = ("docker.io", "lib/a", "1"), ("docker.io", "lib/a", "2"), ("docker.io", "lib/b", "1")


class TestManifestEdges:
    def test_closure_is_transitive(self, store: Store) -> None:
        """closure() returns the manifest and everything reachable from it, once each."""
        store.link_manifest("index", ["m1", "m2"])
        store.link_manifest("m1", ["cfg1", "shared"])
        store.link_manifest("m2", ["cfg2", "shared"])
        store.link_manifest("m1", ["cfg1"])
        assert sorted(store.closure("index")) == ["cfg1", "cfg2", "index", "m1", "m2", "shared"]
        assert store.closure("index")[0] == "index"
        assert sorted(store.children("m1")) == ["cfg1", "shared"]

    def test_closure_tolerates_cycles(self, store: Store) -> None:
        """A cycle in the edges does not loop forever."""
        store.link_manifest("a", ["b"])
        store.link_manifest("b", ["a"])
        assert sorted(store.closure("a")) == ["a", "b"]

    def test_closure_of_unknown(self, store: Store) -> None:
        """An unknown manifest's closure is itself."""
        assert store.closure("lonely") == ["lonely"]

    @pytest.mark.parametrize(
        ("excluded", "kept"),
        [
            ({A1}, {"m1", "cfg1", "shared"}),
            ({A1, A2}, {"shared"}),
            ({A1, A2, B1}, set()),
            (set(), {"m1", "cfg1", "shared"}),
        ],
        ids=["other-tag-same-image", "shared-layer", "all-excluded", "nothing-excluded"],
    )
    def test_referenced_elsewhere(
        self, store: Store, excluded: set[tuple[str, str, str]], kept: set[str]
    ) -> None:
        """Blobs still reachable from a tag outside the excluded set are reported as needed."""
        store.link_manifest("m1", ["cfg1", "shared"])
        store.link_manifest("m2", ["cfg2", "shared"])
        for (upstream, repository, tag), manifest in [(A1, "m1"), (A2, "m1"), (B1, "m2")]:
            store.set_tag(upstream, repository, tag, manifest, "m/t")
        assert store.referenced_elsewhere(store.closure("m1"), excluded) == kept


class TestTags:
    def test_set_get_update_delete(self, store: Store, clock: FakeClock) -> None:
        """A tag is remembered with its fetch time, updated in place, and forgotten on delete."""
        store.set_tag("docker.io", "library/alpine", "3", "sha256:old", "m/t")
        clock.now += 60
        store.set_tag("docker.io", "library/alpine", "3", "sha256:new", "m/u")
        entry = store.get_tag("docker.io", "library/alpine", "3")
        assert entry is not None
        assert (entry.digest, entry.media_type, entry.fetched_at) == ("sha256:new", "m/u", clock.now)
        assert len(store.tags()) == 1
        store.delete_tag("docker.io", "library/alpine", "3")
        assert store.get_tag("docker.io", "library/alpine", "3") is None

    def test_listing_filters_and_order(self, store: Store) -> None:
        """tags() lists by upstream, repository and tag, optionally filtered."""
        for up, repo, tag in [
            ("ghcr.io", "a", "1"),
            ("docker.io", "b", "2"),
            ("docker.io", "a", "9"),
            ("docker.io", "a", "10"),
        ]:
            store.set_tag(up, repo, tag, f"sha256:{up}{repo}{tag}", "m/t")
        assert [(t.upstream, t.repository, t.tag) for t in store.tags()] == [
            ("docker.io", "a", "10"),
            ("docker.io", "a", "9"),
            ("docker.io", "b", "2"),
            ("ghcr.io", "a", "1"),
        ]
        assert [t.tag for t in store.tags("docker.io", "a")] == ["10", "9"]
        assert [t.upstream for t in store.tags(repository="a")] == ["docker.io", "docker.io", "ghcr.io"]


class TestPullLog:
    def test_since(self, store: Store, clock: FakeClock) -> None:
        """The pull log returns entries at or after a time, oldest first."""
        for t, image in [(10.0, "a"), (20.0, "b"), (30.0, "c")]:
            clock.now = t
            store.log_pull(image, None, "10.0.0.1", kind="deploy" if image == "c" else "pull")
        assert [(r.image, r.kind) for r in store.pulls(20.0)] == [("b", "pull"), ("c", "deploy")]


class TestRecover:
    H = "ab" * 32  # a digest's hex, as fill names its files

    def test_collects_crashed_fills_and_free_locks(self, store: Store) -> None:
        """recover() removes a dead fill's part and pointers and every lock file no one holds,
        and leaves directories alone."""
        names = [f"{self.H}.99999999.f00.part", f"{self.H}.fill", f"{self.H}.fill.99999999.456",
                 f"{self.H}.lock", "evict.lock", "tag-x.lock", f"{self.H}.live.lock"]  # fmt: skip
        for name in names:
            Path(store.tmp_dir, name).write_bytes(b"")
        Path(store.tmp_dir, "subdir").mkdir()
        removed = store.recover()
        assert sorted(removed) == sorted(names)
        assert os.listdir(store.tmp_dir) == ["subdir"]

    def test_never_touches_a_live_fill(self, store: Store) -> None:
        """A fill whose lock is held (an orphaned worker still filling) keeps its files."""
        from nic_cache import locks

        lock = os.path.join(store.tmp_dir, f"{self.H}.lock")
        fd = locks.acquire(lock)
        assert fd is not None
        try:
            Path(store.tmp_dir, f"{self.H}.1.f00.part").write_bytes(b"x")
            Path(store.tmp_dir, f"{self.H}.fill").write_bytes(b"{}")
            assert store.recover() == []
            assert sorted(os.listdir(store.tmp_dir)) == sorted(
                [f"{self.H}.1.f00.part", f"{self.H}.fill", f"{self.H}.lock"]
            )
        finally:
            locks.release(fd, lock)

    def test_keeps_a_young_temp_file_of_a_live_process(self, store: Store) -> None:
        """A manifest being written right now by a live process is not collected."""
        name = f"{self.H}.{os.getpid()}.f00.part"
        Path(store.tmp_dir, name).write_bytes(b"x")
        assert store.recover() == []
        assert os.listdir(store.tmp_dir) == [name]

    def test_keeps_verified_blobs(self, store: Store) -> None:
        """recover() never touches blobs/."""
        store.put_bytes(sha(b"keep"), b"keep", None)
        store.recover()
        assert store.stat(sha(b"keep")) is not None
