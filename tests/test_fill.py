"""Tests for nic_cache.fill: one upstream fetch per digest across threads and processes, bytes verified
before any reader gets the last one, and every reader aborted when a fill fails."""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import cast

import pytest

from faas_accel.testbed.procs import wait_for
from nic_cache.errors import BlobUnknown, FillAborted, NoRoom, UpstreamUnavailable
from nic_cache.fill import CHUNK, Fill, Fills
from nic_cache.store import Store
from nic_cache.upstream import BlobStream

ROOT = str(Path(__file__).resolve().parent.parent)
PIECE = 64 * 1024  # what the fake upstream yields at a time
DEADLINE = 20.0  # generous bound for anything the tests wait on; never reached when all is well


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking content (the child processes rebuild it the same way)."""
    return bytes((i * 7 + seed) % 251 for i in range(size))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeBlob:
    """Stands in for nic_cache.upstream.BlobStream: `size`, `chunks()` and `close()`.

    Yields `data` in PIECE-sized chunks. Once `hold_after` bytes are out it waits for `gate`
    (a slow upstream); once `fail_after` bytes are out it raises UpstreamUnavailable (a reset).
    """

    def __init__(
        self,
        data: bytes,
        *,
        size: int | str | None = "len",
        gate: threading.Event | None = None,
        hold_after: int = 0,
        fail_after: int | None = None,
    ) -> None:
        self.data = data
        self.size = len(data) if size == "len" else size
        self.gate = gate
        self.hold_after = hold_after
        self.fail_after = fail_after
        self.sent = 0
        self.closed = 0

    def chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), PIECE):
            self._checkpoint()
            chunk = self.data[start : start + PIECE]
            self.sent += len(chunk)
            yield chunk
        self._checkpoint()

    def _checkpoint(self) -> None:
        if self.gate is not None and self.sent >= self.hold_after and not self.gate.wait(DEADLINE):
            raise UpstreamUnavailable("test gate never opened")
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise UpstreamUnavailable("connection reset by peer (test)")

    def close(self) -> None:
        self.closed += 1


class Opener:
    """An `open_upstream` callable that counts how often the upstream was opened."""

    def __init__(self, make: Callable[[], FakeBlob]) -> None:
        self.make = make
        self.calls = 0
        self.blobs: list[FakeBlob] = []
        self._lock = threading.Lock()

    def __call__(self) -> BlobStream:
        with self._lock:
            self.calls += 1
        blob = self.make()
        self.blobs.append(blob)
        return cast(BlobStream, blob)


class Tally:
    """Thread-safe event counts the test waits on."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]


class CountingFills(Fills):
    """Fills that also counts how often a would-be follower looked for a published fill."""

    def __init__(self, store: Store, tally: Tally, **kwargs: object) -> None:
        super().__init__(
            store,
            on_fetched=lambda n: tally.bump("fetched", n),
            on_inflight=lambda d: tally.bump("inflight", d),
            on_done=lambda: tally.bump("fills_done"),
            **kwargs,  # type: ignore[arg-type]
        )
        self.tally = tally

    def _published(self, digest: str) -> Fill | None:
        self.tally.bump("published_checks")
        return super()._published(digest)


class Client(threading.Thread):
    """One registry client: join the fill of `digest`, then stream it (or read the store)."""

    def __init__(
        self,
        fills: Fills,
        digest: str,
        opener: Opener,
        tally: Tally,
        start: int = 0,
        end: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.fills, self.digest, self.opener, self.tally = fills, digest, opener, tally
        self.range = (start, end)
        self.fill: Fill | None = None
        self.received = bytearray()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fill = self.fills.join(self.digest, self.opener)
            self.tally.bump("joined")
            if self.fill is None:
                self.received += self.fills.store.read_bytes(self.digest)[0]
                return
            for chunk in self.fills.stream(self.digest, self.fill, *self.range):
                if chunk and not self.received:
                    self.tally.bump("first_chunk")
                self.received += chunk
        except BaseException as exc:
            self.error = exc
        finally:
            self.fills.store.close()
            self.tally.bump("done")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "data"))
    yield s
    s.close()


@pytest.fixture
def tally() -> Tally:
    return Tally()


@pytest.fixture
def fills(store: Store, tally: Tally) -> Iterator[CountingFills]:
    f = CountingFills(store, tally, wait_timeout=DEADLINE)
    yield f
    f.wait(DEADLINE)
    assert [t.name for t in threading.enumerate() if t.name.startswith("fill-")] == []
    assert tally["inflight"] == 0
    assert os.listdir(store.tmp_dir) == [], "a fill left files (locks included) behind"


def run_clients(clients: list[Client]) -> None:
    for client in clients:
        client.join(DEADLINE)
    assert [c.name for c in clients if c.is_alive()] == []


def paused_stream(
    fills: Fills, digest: str, fill: Fill, start: int = 0, end: int | None = None
) -> Generator[bytes, None, None]:
    """A stream the test drives by hand, like a client whose socket is slow (close it when done)."""
    return cast(Generator[bytes, None, None], fills.stream(digest, fill, start, end))


def leftovers(store: Store) -> list[str]:
    """What is in tmp/ besides lock files."""
    return sorted(n for n in os.listdir(store.tmp_dir) if not n.endswith(".lock"))


class TestJoin:
    def test_stored_blob_needs_no_fill(self, fills: CountingFills, store: Store) -> None:
        """join returns None for a stored blob without opening the upstream."""
        data = payload(1000)
        store.put_bytes(sha(data), data, None)
        opener = Opener(lambda: FakeBlob(data))
        assert fills.join(sha(data), opener) is None
        assert opener.calls == 0

    def test_leader_streams_its_own_fill(self, fills: CountingFills, store: Store, tally: Tally) -> None:
        """The leader's client streams the bytes; the blob ends up stored and tmp/ clean."""
        data = payload(3 * PIECE + 5)
        opener = Opener(lambda: FakeBlob(data))
        fill = fills.join(sha(data), opener, "application/x-layer")
        assert fill is not None and (fill.size, fill.media_type) == (len(data), "application/x-layer")
        assert b"".join(fills.stream(sha(data), fill)) == data
        fills.wait(DEADLINE)
        info = store.stat(sha(data))
        assert info is not None and (info.size, info.media_type) == (len(data), "application/x-layer")
        assert (opener.calls, opener.blobs[0].closed) == (1, 1)
        assert (tally["fetched"], tally["fills_done"]) == (len(data), 1)
        assert leftovers(store) == []

    def test_unknown_size_streams_everything(self, fills: CountingFills, store: Store) -> None:
        """Without a Content-Length the reader still gets the whole verified blob."""
        data = payload(2 * PIECE + 1)
        fill = fills.join(sha(data), Opener(lambda: FakeBlob(data, size=None)))
        assert fill is not None and fill.size is None
        assert b"".join(fills.stream(sha(data), fill)) == data
        fills.wait(DEADLINE)
        assert store.stat(sha(data)) is not None

    def test_open_error_reaches_the_leader_and_frees_the_digest(self, fills: CountingFills) -> None:
        """An error opening the upstream propagates to the leader and the next join can lead."""
        data = payload(1000)

        def missing() -> FakeBlob:
            raise BlobUnknown("no such blob upstream")

        failing = Opener(missing)
        with pytest.raises(BlobUnknown):
            fills.join(sha(data), failing)
        good = Opener(lambda: FakeBlob(data))
        fill = fills.join(sha(data), good)
        assert fill is not None
        assert b"".join(fills.stream(sha(data), fill)) == data
        assert (failing.calls, good.calls) == (1, 1)

    def test_follower_leads_when_the_leader_fails_to_start(
        self, fills: CountingFills, store: Store, tally: Tally
    ) -> None:
        """A client waiting on a leader whose upstream open fails becomes the leader itself."""
        data = payload(2 * PIECE)
        release = threading.Event()

        def slow_failure() -> FakeBlob:
            if not release.wait(DEADLINE):
                raise AssertionError("never released")
            raise UpstreamUnavailable("connection refused (test)")

        failing, good = Opener(slow_failure), Opener(lambda: FakeBlob(data))
        leader = Client(fills, sha(data), failing, tally)
        leader.start()
        wait_for(lambda: failing.calls == 1, DEADLINE, "the leader to open the upstream", 0.002)
        follower = Client(fills, sha(data), good, tally)
        follower.start()
        wait_for(lambda: tally["published_checks"] >= 1, DEADLINE, "the follower to wait", 0.002)
        release.set()
        run_clients([leader, follower])
        assert isinstance(leader.error, UpstreamUnavailable)
        assert follower.error is None and bytes(follower.received) == data
        assert (failing.calls, good.calls) == (1, 1)

    def test_follower_gives_up_at_wait_timeout(
        self, store: Store, tally: Tally, fills: CountingFills
    ) -> None:
        """A follower whose leader never publishes a fill raises UpstreamUnavailable at its deadline."""
        data = payload(100)
        release = threading.Event()

        def stuck() -> FakeBlob:
            release.wait(DEADLINE)
            raise UpstreamUnavailable("gave up (test)")

        stuck_opener = Opener(stuck)
        leader = Client(fills, sha(data), stuck_opener, tally)
        leader.start()
        impatient = CountingFills(store, tally, wait_timeout=0.2)
        try:
            wait_for(lambda: stuck_opener.calls == 1, DEADLINE, "the leader to open the upstream", 0.002)
            never = Opener(lambda: FakeBlob(data))
            with pytest.raises(UpstreamUnavailable, match="timed out waiting for the fill"):
                impatient.join(sha(data), never)
            assert never.calls == 0
        finally:
            release.set()
            run_clients([leader])
        assert isinstance(leader.error, UpstreamUnavailable)

    def test_next_leader_clears_what_a_crashed_leader_left(self, fills: CountingFills, store: Store) -> None:
        """A stale part file and fill pointer without a live leader are removed, not followed."""
        data = payload(PIECE + 1)
        hexd = sha(data)[7:]
        stale_part = Path(store.tmp_dir, f"{hexd}.99999.dead.part")
        stale_part.write_bytes(b"garbage from a crashed leader")
        Path(store.tmp_dir, f"{hexd}.fill").write_text(
            json.dumps({"path": str(stale_part), "size": len(data)})
        )
        Path(store.tmp_dir, f"{hexd}.fill.99999.1").write_text("{")
        opener = Opener(lambda: FakeBlob(data))
        fill = fills.join(sha(data), opener)
        assert fill is not None and fill.path != str(stale_part)
        assert b"".join(fills.stream(sha(data), fill)) == data
        fills.wait(DEADLINE)
        assert opener.calls == 1
        assert leftovers(store) == []


class TestSingleFlight:
    @pytest.mark.parametrize("n", [2, 8], ids=["two", "eight"])
    def test_concurrent_clients_share_one_upstream_fetch(
        self, fills: CountingFills, store: Store, tally: Tally, n: int
    ) -> None:
        """N clients joining at once open the upstream exactly once and all get the exact bytes."""
        data = payload(6 * PIECE + 3)
        gate = threading.Event()
        opener = Opener(lambda: FakeBlob(data, gate=gate, hold_after=PIECE))
        clients = [Client(fills, sha(data), opener, tally) for _ in range(n)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: tally["first_chunk"] == n, DEADLINE, "every client to get bytes", 0.002)
        finally:
            gate.set()
        run_clients(clients)
        assert [c.error for c in clients] == [None] * n
        assert all(bytes(c.received) == data for c in clients)
        assert len({c.fill.path for c in clients if c.fill is not None}) == 1
        assert opener.calls == 1
        assert tally["fetched"] == len(data)
        fills.wait(DEADLINE)
        assert store.usage() == (len(data), 1)

    def test_clients_after_the_fill_read_the_store(self, fills: CountingFills, tally: Tally) -> None:
        """Clients arriving after a fill completed read the stored blob and open nothing."""
        data = payload(2 * PIECE)
        opener = Opener(lambda: FakeBlob(data))
        fill = fills.join(sha(data), opener)
        assert fill is not None
        assert b"".join(fills.stream(sha(data), fill)) == data
        fills.wait(DEADLINE)
        late = [Client(fills, sha(data), opener, tally) for _ in range(4)]
        for client in late:
            client.start()
        run_clients(late)
        assert [(c.error, c.fill, bytes(c.received) == data) for c in late] == [(None, None, True)] * 4
        assert opener.calls == 1


class TestFailure:
    def test_upstream_failure_midway_aborts_every_reader(
        self, fills: CountingFills, store: Store, tally: Tally
    ) -> None:
        """A reset mid-body ends every reader with FillAborted, stores nothing, and a later join succeeds."""
        data = payload(6 * PIECE)
        gate = threading.Event()
        opener = Opener(lambda: FakeBlob(data, gate=gate, hold_after=PIECE, fail_after=3 * PIECE))
        clients = [Client(fills, sha(data), opener, tally) for _ in range(4)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: tally["first_chunk"] == 4, DEADLINE, "every client to get bytes", 0.002)
        finally:
            gate.set()
        run_clients(clients)
        assert [type(c.error) for c in clients] == [FillAborted] * 4
        # a reader may notice the failure before reading all that was written, never after more
        assert all(PIECE <= len(c.received) <= 3 * PIECE for c in clients)
        assert all(bytes(c.received) == data[: len(c.received)] for c in clients)
        fills.wait(DEADLINE)
        assert store.stat(sha(data)) is None
        assert os.path.exists(store.blob_path(sha(data))) is False
        assert leftovers(store) == []
        assert (opener.calls, opener.blobs[0].closed) == (1, 1)

        retry = Opener(lambda: FakeBlob(data))
        fill = fills.join(sha(data), retry)
        assert fill is not None
        assert b"".join(fills.stream(sha(data), fill)) == data
        assert retry.calls == 1

    @pytest.mark.parametrize(
        ("sent", "size"),
        [
            (bytes(b ^ 0x5A for b in payload(4 * PIECE)), 4 * PIECE),
            (payload(4 * PIECE) + b"trailing junk", 4 * PIECE),
            (payload(3 * PIECE), 4 * PIECE),
            (payload(4 * PIECE)[:-1] + b"\0", 4 * PIECE),
        ],
        ids=["corrupt", "too-long", "too-short", "last-byte-wrong"],
    )
    def test_bad_bytes_are_never_stored_nor_completed(
        self, fills: CountingFills, store: Store, tally: Tally, sent: bytes, size: int
    ) -> None:
        """Bytes that do not verify are not stored, and no reader receives the final byte of the blob."""
        good = payload(4 * PIECE)
        gate = threading.Event()
        opener = Opener(lambda: FakeBlob(sent, size=size, gate=gate, hold_after=PIECE))
        clients = [Client(fills, sha(good), opener, tally) for _ in range(3)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: tally["first_chunk"] == 3, DEADLINE, "every client to get bytes", 0.002)
        finally:
            gate.set()
        run_clients(clients)
        assert [type(c.error) for c in clients] == [FillAborted] * 3
        assert all(PIECE <= len(c.received) <= min(len(sent), size - 1) for c in clients)
        assert all(bytes(c.received) == sent[: len(c.received)] for c in clients)
        fills.wait(DEADLINE)
        assert store.stat(sha(good)) is None
        assert leftovers(store) == []

    def test_reader_of_a_failed_fill_never_completes_from_a_later_fill(
        self, fills: CountingFills, store: Store
    ) -> None:
        """A reader holding unverified bytes of a fill that failed is aborted, even once a refill succeeds."""
        good = payload(4 * PIECE)
        corrupt = bytes(b ^ 0x5A for b in good)
        gate = threading.Event()
        fill = fills.join(sha(good), Opener(lambda: FakeBlob(corrupt, gate=gate, hold_after=PIECE)))
        assert fill is not None
        slow_client = paused_stream(fills, sha(good), fill)
        received = bytearray(next(slow_client))  # the client's socket is slow: it pauses here
        gate.set()
        fills.wait(DEADLINE)
        assert store.stat(sha(good)) is None
        refill = fills.join(sha(good), Opener(lambda: FakeBlob(good)))
        assert refill is not None
        fills.wait(DEADLINE)
        assert store.stat(sha(good)) is not None
        try:
            with pytest.raises(FillAborted):
                for chunk in slow_client:
                    received += chunk
        finally:
            slow_client.close()
        assert bytes(received) == corrupt[: len(good) - 1]


RANGES = [
    (0, None),
    (0, 1),
    (10, 20),
    (CHUNK - 1, CHUNK + 1),
    (CHUNK + PIECE // 2 + 6, None),
    (CHUNK + PIECE // 2 + 6, CHUNK + PIECE // 2 + 7),
    (100, 100),
]
RANGE_IDS = ["all", "first-byte", "middle", "across-chunk", "tail", "last-byte", "empty"]


class TestRange:
    SIZE = CHUNK + PIECE // 2 + 7

    @pytest.mark.parametrize(("start", "end"), RANGES, ids=RANGE_IDS)
    def test_while_filling(self, fills: CountingFills, tally: Tally, start: int, end: int | None) -> None:
        """A range streamed while the fill is in progress is exactly bytes [start, end)."""
        data = payload(self.SIZE)
        gate = threading.Event()
        opener = Opener(lambda: FakeBlob(data, gate=gate, hold_after=PIECE))
        fill = fills.join(sha(data), opener)
        assert fill is not None
        client = Client(fills, sha(data), opener, tally, start, end)
        client.start()
        try:
            wait_for(lambda: tally["joined"] == 1, DEADLINE, "the client to join", 0.002)
        finally:
            gate.set()
        run_clients([client])
        assert client.error is None
        assert client.fill == fill
        assert bytes(client.received) == data[start:end]
        assert opener.calls == 1

    @pytest.mark.parametrize(("start", "end"), RANGES, ids=RANGE_IDS)
    def test_after_the_fill_finished(self, fills: CountingFills, start: int, end: int | None) -> None:
        """A range of a fill that already finished is read from the stored blob."""
        data = payload(self.SIZE)
        fill = fills.join(sha(data), Opener(lambda: FakeBlob(data)))
        assert fill is not None
        fills.wait(DEADLINE)
        assert not os.path.exists(fill.path)
        assert b"".join(fills.stream(sha(data), fill, start, end)) == data[start:end]

    def test_early_range_does_not_wait_for_the_whole_fill(self, fills: CountingFills, store: Store) -> None:
        """A range ending before the blob's end is sent as it lands, before the fill is verified."""
        data = payload(4 * PIECE)
        gate = threading.Event()
        fill = fills.join(sha(data), Opener(lambda: FakeBlob(data, gate=gate, hold_after=2 * PIECE)))
        assert fill is not None
        try:
            got = b"".join(fills.stream(sha(data), fill, 0, 100))
            assert got == data[:100]
            assert not os.path.exists(store.blob_path(sha(data)))
        finally:
            gate.set()

    def test_range_to_the_end_withholds_its_last_byte_until_verified(
        self, fills: CountingFills, store: Store
    ) -> None:
        """A range reaching the blob's end gets its last byte only after the blob is verified and stored."""
        data = payload(4 * PIECE)
        gate = threading.Event()
        fill = fills.join(sha(data), Opener(lambda: FakeBlob(data, gate=gate, hold_after=2 * PIECE)))
        assert fill is not None
        stream = paused_stream(fills, sha(data), fill, 100, None)
        try:
            got = bytearray()
            while len(got) < 2 * PIECE - 100:  # every byte the upstream sent so far
                got += next(stream)
            assert got == data[100 : 2 * PIECE]
            assert not os.path.exists(store.blob_path(sha(data)))
            gate.set()
            assert b"".join(stream) == data[2 * PIECE :]
            assert os.path.exists(store.blob_path(sha(data)))
        finally:
            gate.set()
            stream.close()


FOLLOWER = r"""
import hashlib, json, sys
from nic_cache.fill import Fills
from nic_cache.store import Store

data_dir, digest = sys.argv[1:3]
store = Store(data_dir)
fills = Fills(store, wait_timeout=20)
opened = []

def open_upstream():
    opened.append(1)
    raise RuntimeError("the follower process opened the upstream")

fill = fills.join(digest, open_upstream)
print(json.dumps({"joined": fill is not None}), flush=True)
body = b"".join(fills.stream(digest, fill)) if fill else store.read_bytes(digest)[0]
print(json.dumps({"opened": len(opened), "digest": "sha256:" + hashlib.sha256(body).hexdigest()}), flush=True)
"""

STALLING_LEADER = r"""
import sys, threading
from nic_cache.fill import Fills
from nic_cache.store import Store

data_dir, digest, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = bytes((i * 7) % 251 for i in range(size))

class Stalls:
    "Sends the first half, says so, then stalls until the test kills this process."
    size = len(data)
    def chunks(self):
        yield data[: size // 2]
        print("half written", flush=True)
        threading.Event().wait(60)
    def close(self):
        pass

fills = Fills(Store(data_dir), wait_timeout=20)
fills.join(digest, Stalls)
threading.Event().wait(60)
"""


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next stdout line, failing with its stderr if none comes before the deadline."""
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        proc.wait(DEADLINE)
        raise AssertionError(f"no line from the child process; its stderr:\n{proc.stderr.read()}")
    return line


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    assert proc.stdout is not None and proc.stderr is not None
    try:
        code = proc.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(DEADLINE)
        raise
    return code, proc.stdout.read(), proc.stderr.read()


class TestAcrossProcesses:
    def test_follower_process_joins_the_fill(self, fills: CountingFills, store: Store) -> None:
        """A client in another worker process streams this process's fill instead of opening the upstream."""
        data = payload(4 * PIECE)
        gate = threading.Event()
        opener = Opener(lambda: FakeBlob(data, gate=gate, hold_after=PIECE))
        fill = fills.join(sha(data), opener)
        assert fill is not None
        with spawn(FOLLOWER, store.data_dir, sha(data)) as proc:
            try:
                assert json.loads(read_line(proc)) == {"joined": True}
            finally:
                gate.set()
            assert b"".join(fills.stream(sha(data), fill)) == data
            code, out, err = finish(proc)
        assert code == 0, err
        assert json.loads(out) == {"opened": 0, "digest": sha(data)}
        assert opener.calls == 1

    def test_killed_leader_process_aborts_followers_and_frees_the_digest(
        self, fills: CountingFills, store: Store
    ) -> None:
        """When the leading process dies mid-fill, followers abort and the next join leads afresh."""
        data = payload(4 * PIECE)
        half = len(data) // 2
        follower = Opener(lambda: FakeBlob(data))
        with spawn(STALLING_LEADER, store.data_dir, sha(data), str(len(data))) as proc:
            try:
                assert read_line(proc).strip() == "half written"
                fill = fills.join(sha(data), follower)
                assert fill is not None and follower.calls == 0
                stream = paused_stream(fills, sha(data), fill)
                received = bytearray()
                while len(received) < half:
                    received += next(stream)
            finally:
                proc.kill()
                finish(proc)
            try:
                with pytest.raises(FillAborted):
                    for chunk in stream:
                        received += chunk
            finally:
                stream.close()
        assert bytes(received) == data[:half]
        assert store.stat(sha(data)) is None

        fill = fills.join(sha(data), follower)
        assert fill is not None
        assert b"".join(fills.stream(sha(data), fill)) == data
        fills.wait(DEADLINE)
        assert follower.calls == 1
        assert leftovers(store) == []


class TestSpace:
    def test_blob_larger_than_the_cache_keeps_is_refused_with_its_stream(self, tmp_path: Path) -> None:
        """A blob above capacity x low_watermark is never filled: NoRoom("too_big") carries the
        opened upstream stream for a pass-through, and nothing is left in tmp/."""
        store = Store(str(tmp_path / "small"), capacity=10 * PIECE, low_watermark=0.5)
        fills = Fills(store, wait_timeout=DEADLINE)
        data = payload(6 * PIECE)
        opener = Opener(lambda: FakeBlob(data))
        with pytest.raises(NoRoom) as info:
            fills.join(sha(data), opener)
        assert info.value.reason == "too_big"
        assert info.value.stream is opener.blobs[0]
        assert os.listdir(store.tmp_dir) == []
        assert store.stat(sha(data)) is None

    def test_fills_in_flight_count_against_the_budget(self, tmp_path: Path) -> None:
        """With one fill in flight taking most of the budget, a second is refused (budget),
        and admitted once the first has landed and can be evicted."""
        store = Store(str(tmp_path / "budget"), capacity=10 * PIECE, low_watermark=0.9)
        fills = Fills(store, wait_timeout=DEADLINE)
        first, second = payload(6 * PIECE, 1), payload(6 * PIECE, 2)
        gate = threading.Event()
        fill = fills.join(sha(first), Opener(lambda: FakeBlob(first, gate=gate, hold_after=PIECE)))
        assert fill is not None
        try:
            assert store.inflight_bytes() == len(first)
            with pytest.raises(NoRoom) as info:
                fills.join(sha(second), Opener(lambda: FakeBlob(second)))
            assert info.value.reason == "budget"
        finally:
            gate.set()
        assert b"".join(fills.stream(sha(first), fill)) == first
        fills.wait(DEADLINE)
        assert store.inflight_bytes() == 0
        again = fills.join(sha(second), Opener(lambda: FakeBlob(second)))
        assert again is not None and b"".join(fills.stream(sha(second), again)) == second
        fills.wait(DEADLINE)
        assert store.stat(sha(first)) is None and store.stat(sha(second)) is not None

    def test_requests_for_unknown_digests_leave_no_lock_files(
        self, fills: CountingFills, store: Store
    ) -> None:
        """2,000 joins of digests the upstream does not have leave tmp/ empty."""

        def missing() -> FakeBlob:
            raise BlobUnknown("no such blob upstream")

        for i in range(2000):
            with pytest.raises(BlobUnknown):
                fills.join(sha(str(i).encode()), Opener(missing))
        assert os.listdir(store.tmp_dir) == []
