"""Tests for the image builder (layers, Debian and stack parsing, determinism, cache),
the function server that runs in every function image, and the images themselves
pushed to a real registry and run by containerd."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import sys
import tarfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from faas_accel.images import build_all, push_all
from faas_accel.images import watchdog as wd
from faas_accel.images.build import BuiltImage, ImageBuilder
from faas_accel.images.catalog import (
    DEFAULT_STACK,
    REFERENCE_IMAGES,
    catalog,
    load_stack,
    select,
    split_name,
)
from faas_accel.images.cli import images
from faas_accel.images.debian import Package, excluded, parse_depends, parse_simulation, prune
from faas_accel.images.errors import CatalogError, LayerError
from faas_accel.images.layer import (
    Filler,
    Tree,
    directory,
    file,
    filler_size,
    hardlink,
    stored_size,
    symlink,
    write_layer,
)
from faas_accel.images.wheels import requirement_lines
from faas_accel.testbed.procs import Proc, free_port, run, stop, wait_for
from faas_accel.testbed.registry import Registry
from faas_accel.testbed.runtimes import Containerd
from tests.conftest import require

REPO = Path(__file__).resolve().parents[1]
# Kept between runs (build/ is git-ignored): a warm build takes well under a second.
CACHE = REPO / "build" / "cache"
FUNCTIONS = ("hello", "transform", "heavy")
WATCHDOG_FILE = Path(wd.__file__)


def layer_bytes(tree: Tree, filler: Filler | None = None) -> bytes:
    out = io.BytesIO()
    write_layer(tree, out, filler=filler)
    return out.getvalue()


def members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return tar.getmembers()


def sample_tree() -> Tree:
    return Tree([
        ("usr/bin/tool", file(b"#!/bin/sh\necho hi\n" * 50, 0o755)),
        ("usr/lib/alias", hardlink("usr/bin/tool")),
        ("etc/link", symlink("../usr/bin/tool")),
        ("tmp", directory(0o1777)),
    ])


# -- layers ----------------------------------------------------------------------------------


class TestLayer:
    def test_same_tree_same_bytes(self) -> None:
        """Two layers written from equal trees are byte-identical."""
        assert layer_bytes(sample_tree()) == layer_bytes(sample_tree())

    def test_entries_sorted_with_parents_and_zero_times(self) -> None:
        """Entries come sorted, every parent directory present (0755 root), mtime 0."""
        found = members(layer_bytes(sample_tree()))
        assert [m.name for m in found] == [
            "etc", "etc/link", "tmp", "usr", "usr/bin", "usr/bin/tool", "usr/lib", "usr/lib/alias",
        ]
        assert {m.mtime for m in found} == {0}
        assert {(m.uid, m.gid) for m in found} == {(0, 0)}
        by_name = {m.name: m for m in found}
        assert by_name["usr"].mode == 0o755 and by_name["usr"].isdir()
        assert by_name["tmp"].mode == 0o1777

    def test_hardlink_written_after_its_data(self) -> None:
        """A hard link sorting before its target takes the data; the target links to it."""
        tree = Tree([("b/file", file(b"data")), ("a/link", hardlink("b/file"))])
        by_name = {m.name: m for m in members(layer_bytes(tree))}
        assert by_name["a/link"].isfile() and by_name["a/link"].size == 4
        assert by_name["b/file"].islnk() and by_name["b/file"].linkname == "a/link"

    def test_hardlink_to_nothing_refused(self) -> None:
        """A hard link whose target is not a file in the layer is an error."""
        with pytest.raises(LayerError, match="not a file"):
            layer_bytes(Tree([("a", hardlink("missing"))]))

    def test_path_outside_root_refused(self) -> None:
        """A path with .. cannot be added."""
        with pytest.raises(LayerError, match="escapes"):
            Tree([("../etc/passwd", file(b""))])

    @pytest.mark.parametrize("target", [20_000, 65_536 * 3 + 17, 1_000_000, 7_330_000],
                             ids=["20k", "3-blocks", "1M", "alpine"])
    def test_filler_hits_target(self, target: int) -> None:
        """A layer with a filler compresses to its target, less at most one tar block,
        and is an ordinary gzip tar with the filler as its last file."""
        filler = Filler("usr/share/filler.bin", target, "seed")
        blob = layer_bytes(sample_tree(), filler)
        assert target - 512 - 5 <= len(blob) <= target
        found = members(blob)
        assert found[-1].name == "usr/share/filler.bin"
        assert found[-1].size % 512 == 0

    def test_filler_is_reproducible(self) -> None:
        """The same seed and target give the same bytes; another seed does not."""
        one = layer_bytes(sample_tree(), Filler("f.bin", 100_000, "a"))
        assert one == layer_bytes(sample_tree(), Filler("f.bin", 100_000, "a"))
        assert one != layer_bytes(sample_tree(), Filler("f.bin", 100_000, "b"))

    def test_filler_without_room_refused(self) -> None:
        """A target smaller than the content is an error naming both sizes."""
        with pytest.raises(LayerError, match="more than its target"):
            layer_bytes(sample_tree(), Filler("f.bin", 100, "a"))

    @pytest.mark.parametrize(
        ("room", "expected"),
        [(1536 + 5, 0), (1536 + 4, -512), (2048 + 5, 512), (65535 + 5, 65535 - 1536 - 511)],
        ids=["empty-fits", "nothing-fits", "one-block", "one-stored-block"],
    )
    def test_filler_size(self, room: int, expected: int) -> None:
        """The filler is the largest multiple of 512 whose stored blocks fit the room."""
        got = filler_size(room)
        assert got == expected
        if got >= 0:
            assert stored_size(1536 + got) <= room < stored_size(1536 + got + 512)


# -- Debian resolution -------------------------------------------------------------------------

SIMULATION = """\
NOTE: This is only a simulation!
Inst gcc-12-base (12.2.0-14 Debian:12.5/stable [amd64])
Inst libc6 (2.36-9+deb12u4 Debian:12.5/stable [amd64]) []
Inst zlib1g (1:1.2.13.dfsg-1 Debian:12.5/stable [amd64])
Inst tar (1.34+dfsg-1.2 Debian:12.5/stable [amd64])
Inst dpkg (1.21.22 Debian:12.5/stable [amd64])
Inst readline-common (8.2-1.3 Debian:12.5/stable [all])
Inst media-types (10.0.0 Debian:12.5/stable [all])
Inst python3.11-minimal (3.11.2-6 Debian:12.5/stable, Debian-Security:12/stable-security [amd64])
Conf libc6 (2.36-9+deb12u4 Debian:12.5/stable [amd64])
"""

DEPENDS = """\
python3.11-minimal
  PreDepends: libc6
  Depends: zlib1g
 |Depends: media-types
  Depends: <mime-support>
    media-types
  Depends: readline-common
readline-common
 |Depends: dpkg
  Depends: install-info
dpkg
  PreDepends: libc6
  Depends: tar
tar
  PreDepends: libc6
libc6
  Depends: gcc-12-base
zlib1g
  PreDepends: libc6
gcc-12-base
media-types
"""


class TestDebian:
    def test_parse_simulation(self) -> None:
        """Inst lines become packages with their version (epoch kept) and arch."""
        found = parse_simulation(SIMULATION)
        assert [str(p) for p in found][:3] == ["gcc-12-base=12.2.0-14", "libc6=2.36-9+deb12u4",
                                                "zlib1g=1:1.2.13.dfsg-1"]
        assert found[5].arch == "all"
        assert len(found) == 8

    def test_deb_file_name_quotes_the_epoch(self) -> None:
        """apt-get download writes an epoch's colon as %3a."""
        assert Package("zlib1g", "1:1.2.13.dfsg-1").filename == "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb"

    def test_parse_depends_groups_and_virtuals(self) -> None:
        """Alternatives form one group; a virtual package is replaced by its providers."""
        deps = parse_depends(DEPENDS)
        assert deps["python3.11-minimal"] == [["libc6"], ["zlib1g"], ["media-types", "media-types"],
                                              ["readline-common"]]
        assert deps["readline-common"] == [["dpkg", "install-info"]]
        assert deps["media-types"] == []

    def test_prune_drops_dpkg_and_what_only_it_needs(self) -> None:
        """Dropping dpkg also drops tar (only dpkg needs it) but keeps what others need."""
        kept = prune(["python3.11-minimal"], parse_simulation(SIMULATION), parse_depends(DEPENDS), ["dpkg"])
        assert [p.name for p in kept] == [
            "gcc-12-base", "libc6", "zlib1g", "readline-common", "media-types", "python3.11-minimal",
        ]

    def test_prune_without_drop_keeps_everything_reachable(self) -> None:
        """With nothing dropped, every package apt chose is reachable and kept."""
        packages = parse_simulation(SIMULATION)
        assert prune(["python3.11-minimal"], packages, parse_depends(DEPENDS), []) == packages

    @pytest.mark.parametrize(
        ("path", "dropped"),
        [
            ("usr/share/doc/libc6/changelog.gz", True),
            ("usr/share/doc/libc6/copyright", False),
            ("usr/share/man/man1/python3.11.1.gz", True),
            ("usr/share/locale/de/LC_MESSAGES/x.mo", True),
            ("usr/lib/python3.11/os.py", False),
            ("usr/share/zoneinfo/UTC", False),
        ],
        ids=["changelog", "copyright", "man", "locale", "stdlib", "zoneinfo"],
    )
    def test_excluded(self, path: str, dropped: bool) -> None:
        """Docs, man pages and translations are left out; copyrights are kept."""
        assert excluded(path) is dropped


# -- the catalog and stack.yml -----------------------------------------------------------------


class TestCatalog:
    def test_stack_file_matches_the_lab_contract(self) -> None:
        """stack.yml is an OpenFaaS 1.0 stack on the local gateway naming the lab images."""
        doc = yaml.safe_load(DEFAULT_STACK.read_text())
        assert str(doc["version"]) == "1.0"
        assert doc["provider"] == {"name": "openfaas", "gateway": "http://127.0.0.1:8080"}
        images_by_function = {name: fn["image"] for name, fn in doc["functions"].items()}
        assert images_by_function == {f: f"registry.lab/faas/{f}:0.1.0" for f in FUNCTIONS}

    def test_every_function_folder_has_handler_and_requirements(self) -> None:
        """Each function's folder has handler.py with handle() and a requirements.txt
        whose every line is pinned with ==."""
        for fn in load_stack(DEFAULT_STACK):
            assert "def handle(event, context)" in (fn.handler / "handler.py").read_text()
            lines = requirement_lines((fn.handler / "requirements.txt").read_text())
            assert all("==" in line for line in lines), fn.name

    def test_reference_images(self) -> None:
        """The four stand-ins have the paper's sizes and their upstreams' layer counts."""
        assert {s.name: (s.size, len(s.layers)) for s in REFERENCE_IMAGES} == {
            "registry.lab/ref/alpine:paper": (7_330_000, 1),
            "registry.lab/ref/ubuntu:paper": (77_800_000, 1),
            "registry.lab/ref/python:paper": (128_000_000, 4),
            "registry.lab/ref/nginx:paper": (143_000_000, 7),
        }

    @pytest.mark.parametrize(
        ("name", "parts"),
        [
            ("registry.lab/faas/hello:0.1.0", ("registry.lab", "faas/hello", "0.1.0")),
            ("127.0.0.1:5000/ref/nginx:paper", ("127.0.0.1:5000", "ref/nginx", "paper")),
        ],
        ids=["lab", "host-port"],
    )
    def test_split_name(self, name: str, parts: tuple[str, str, str]) -> None:
        """A full name splits into host, repository and tag."""
        assert split_name(name) == parts

    @pytest.mark.parametrize("name", ["hello:1", "registry.lab/faas/hello", "faas/hello:1"],
                             ids=["no-host", "no-tag", "host-without-dot"])
    def test_split_name_refuses(self, name: str) -> None:
        """A name without a registry host or tag is refused."""
        with pytest.raises(CatalogError):
            split_name(name)

    @pytest.mark.parametrize(
        "wanted", ["hello", "faas/hello", "registry.lab/faas/hello:0.1.0"], ids=["short", "repo", "full"]
    )
    def test_select_by_any_name(self, wanted: str) -> None:
        """--only accepts the last part, the repository or the full name."""
        assert [s.name for s in select(catalog(), [wanted])] == ["registry.lab/faas/hello:0.1.0"]

    def test_select_unknown(self) -> None:
        """An unknown name is refused with the list of known ones."""
        with pytest.raises(CatalogError, match="unknown; known: faas/hello"):
            select(catalog(), ["nope"])


# -- the function server, in process --------------------------------------------------------


class Calls:
    """A handler that records its events and answers what the test set."""

    def __init__(self, answer: Any = "ok") -> None:
        self.events: list[wd.Event] = []
        self.answer = answer

    def __call__(self, event: wd.Event, context: wd.Context) -> Any:
        self.events.append(event)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def function_server() -> Iterator[Callable[[Any], tuple[str, Calls]]]:
    """``start(answer) -> (base_url, calls)``: a FunctionServer on 127.0.0.1:0 in a thread."""
    started: list[tuple[wd.FunctionServer, threading.Thread]] = []

    def start(answer: Any = "ok") -> tuple[str, Calls]:
        calls = Calls(answer)
        server = wd.FunctionServer(("127.0.0.1", 0), calls, log=lambda line: None)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.port}", calls

    try:
        yield start
    finally:
        for server, thread in started:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def fetch(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request without any proxy; any status is returned, not raised."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def raw_request(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (the request asks it to)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class TestWatchdog:
    def test_health_does_not_call_the_handler(self, function_server: Any) -> None:
        """GET /_/health answers 200 without calling handle()."""
        url, calls = function_server()
        status, _, body = fetch("GET", f"{url}/_/health")
        assert (status, body, len(calls.events)) == (200, b"OK", 0)

    def test_event_fields(self, function_server: Any) -> None:
        """The handler sees method, path, query, headers and body."""
        url, calls = function_server()
        status, _, _ = fetch("PUT", f"{url}/some/path?a=1&b=two", b"payload", {"X-Thing": "yes"})
        assert status == 200
        [event] = calls.events
        assert (event.method, event.path, event.query, event.body) == (
            "PUT", "/some/path", {"a": "1", "b": "two"}, b"payload")
        assert event.headers.get("x-thing") == "yes"

    def test_chunked_body_decoded(self, function_server: Any) -> None:
        """A chunked body, with a chunk extension and a trailer, reaches the handler whole."""
        url, calls = function_server()
        port = int(url.rsplit(":", 1)[1])
        answer = raw_request(port, (
            b"POST /fn HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
        ))
        assert answer.startswith(b"HTTP/1.1 200")
        assert [e.body for e in calls.events] == [b"hello, world"]

    def test_broken_chunked_body_is_400(self, function_server: Any) -> None:
        """A chunk size that is not hex gets 400 and never reaches the handler."""
        url, calls = function_server()
        port = int(url.rsplit(":", 1)[1])
        answer = raw_request(port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
        assert calls.events == []

    def test_keep_alive(self, function_server: Any) -> None:
        """Several requests share one HTTP/1.1 connection."""
        url, calls = function_server()
        conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
        try:
            for n in range(3):
                conn.request("POST", "/", body=f"n={n}".encode())
                assert conn.getresponse().read() == b"ok"
        finally:
            conn.close()
        assert [e.body for e in calls.events] == [b"n=0", b"n=1", b"n=2"]

    @pytest.mark.parametrize(
        ("answer", "status", "content_type", "body"),
        [
            ({"statusCode": 201, "body": "made", "headers": {"X-A": "b"}}, 201, "text/plain; charset=utf-8",
             b"made"),
            ({"statusCode": 200, "body": {"k": [1, 2]}}, 200, "application/json", b'{"k": [1, 2]}'),
            ({"body": b"\x00\x01", "headers": {"Content-Type": "image/png"}}, 200, "image/png", b"\x00\x01"),
            ({"statusCode": 404}, 404, "text/plain; charset=utf-8", b""),
            (None, 200, "text/plain; charset=utf-8", b""),
            ("text", 200, "text/plain; charset=utf-8", b"text"),
            (b"\xff", 200, "application/octet-stream", b"\xff"),
            ({"plain": "dict"}, 200, "application/json", b'{"plain": "dict"}'),
            ([1, 2], 200, "application/json", b"[1, 2]"),
            (("teapot", 418), 418, "text/plain; charset=utf-8", b"teapot"),
            (("x", 202, {"Content-Type": "text/csv"}), 202, "text/csv", b"x"),
            (ValueError("boom"), 500, "text/plain; charset=utf-8", b"ValueError: boom\n"),
        ],
        ids=["spec", "json-body", "bytes-body", "status-only", "none", "str", "bytes", "plain-dict",
             "list", "tuple", "tuple-headers", "exception"],
    )
    def test_return_shapes(self, function_server: Any, answer: Any, status: int, content_type: str,
                           body: bytes) -> None:
        """Each python3-http return shape becomes the expected status, type and body."""
        url, _ = function_server(answer)
        got_status, headers, got_body = fetch("POST", f"{url}/", b"x")
        assert (got_status, headers["Content-Type"], got_body) == (status, content_type, body)
        assert headers["Content-Length"] == str(len(body))

    def test_extra_headers_sent(self, function_server: Any) -> None:
        """Headers the handler returns are sent."""
        url, _ = function_server({"body": "x", "headers": [("X-One", "1"), ("X-Two", "2")]})
        _, headers, _ = fetch("GET", f"{url}/")
        assert (headers["X-One"], headers["X-Two"]) == ("1", "2")

    @pytest.mark.parametrize(
        ("environ", "port"),
        [({}, 8080), ({"port": "9001"}, 9001), ({"PORT": "9002"}, 9002), ({"port": "1", "PORT": "2"}, 1)],
        ids=["default", "of-watchdog", "PORT", "port-wins"],
    )
    def test_port_from_env(self, environ: dict[str, str], port: int) -> None:
        """``port`` (of-watchdog's variable) wins over ``PORT``; 8080 by default."""
        assert wd.port_from_env(environ) == port

    @pytest.mark.parametrize("value", ["http", "-1", "65536"], ids=["word", "negative", "too-big"])
    def test_bad_port(self, value: str) -> None:
        """A port that is not a TCP port number is refused."""
        with pytest.raises(ValueError, match="port"):
            wd.port_from_env({"port": value})

    def test_bind_does_not_resolve_names(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Binding never calls getfqdn (a DNS lookup that can stall for seconds)."""
        def refuse(*args: Any) -> str:
            raise AssertionError("getfqdn called")

        monkeypatch.setattr(socket, "getfqdn", refuse)
        server = wd.FunctionServer(("0.0.0.0", 0), Calls(), log=lambda line: None)
        server.server_close()
        assert server.server_name == "0.0.0.0"

    def test_sigterm_in_process(self, function_server: Any) -> None:
        """serve() returns 0 promptly on SIGTERM and restores the previous handler."""
        server = wd.FunctionServer(("127.0.0.1", 0), Calls(), log=lambda line: None)
        url = f"http://127.0.0.1:{server.port}/_/health"
        before = signal.getsignal(signal.SIGTERM)

        def terminate_when_up() -> None:
            wait_for(lambda: fetch("GET", url)[0] == 200, 10, "the server to answer")
            os.kill(os.getpid(), signal.SIGTERM)

        killer = threading.Thread(target=terminate_when_up)
        killer.start()
        started = time.monotonic()
        assert wd.serve(server, grace=5) == 0
        killer.join()
        assert time.monotonic() - started < 5
        assert signal.getsignal(signal.SIGTERM) is before
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


SLOW_HANDLER = """\
import pathlib, time

def handle(event, context):
    pathlib.Path(event.query["mark"]).touch()
    time.sleep(float(event.query.get("sleep", "0")))
    return "done"
"""


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    (tmp_path / "function").mkdir()
    (tmp_path / "function" / "handler.py").write_text(SLOW_HANDLER)
    return tmp_path


def start_watchdog(function_dir: Path, argv_prefix: list[str], log: Path, port: int) -> Proc:
    """The function server as a process, the way the image runs it."""
    proc = Proc([*argv_prefix, sys.executable, str(WATCHDOG_FILE), "--root", str(function_dir),
                 "--bind", "127.0.0.1"], log, env={"port": str(port), "FAAS_SHUTDOWN_GRACE": "5"})
    proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/_/health"), 15, "health answering")
    return proc


def http_ok(url: str) -> bool:
    try:
        return fetch("GET", url)[0] == 200
    except OSError:
        return False


class TestWatchdogProcess:
    def test_in_flight_request_finishes_after_sigterm(self, function_dir: Path, tmp_path: Path) -> None:
        """A request running when SIGTERM arrives still gets its answer; then the server exits 0."""
        port = free_port()
        proc = start_watchdog(function_dir, [], tmp_path / "wd.log", port)
        mark = tmp_path / "entered"
        result: list[Any] = []
        client = threading.Thread(target=lambda: result.append(
            fetch("GET", f"http://127.0.0.1:{port}/?sleep=1&mark={mark}")))
        try:
            client.start()
            wait_for(mark.exists, 10, "the handler to start")
            os.kill(proc.pid, signal.SIGTERM)
            client.join(10)
            assert proc.popen.wait(10) == 0
        finally:
            stop(proc)
        assert result and result[0][0] == 200 and result[0][2] == b"done"

    def test_sigterm_as_pid_1(self, function_dir: Path, tmp_path: Path) -> None:
        """As PID 1 of a PID namespace (where SIGTERM without a handler is ignored) the
        server still exits promptly with status 0."""
        require("unshare")
        port = free_port()
        proc = start_watchdog(function_dir, ["unshare", "--pid", "--fork", "--kill-child"],
                              tmp_path / "wd.log", port)
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            [inner] = children
            [nspid] = [ln for ln in Path(f"/proc/{inner}/status").read_text().splitlines()
                       if ln.startswith("NSpid:")]
            assert nspid.split()[-1] == "1"  # its PID inside the new namespace
            started = time.monotonic()
            os.kill(int(inner), signal.SIGTERM)
            assert proc.popen.wait(5) == 0
            assert time.monotonic() - started < 2
        finally:
            stop(proc)

    def test_sigterm_as_pid_1_while_importing_the_handler(self, tmp_path: Path) -> None:
        """A SIGTERM that arrives while a slow handler module is still importing ends
        the server at once, even as PID 1."""
        require("unshare")
        mark = tmp_path / "importing"
        (tmp_path / "function").mkdir()
        (tmp_path / "function" / "handler.py").write_text(
            f"import pathlib, time\npathlib.Path({str(mark)!r}).touch()\ntime.sleep(30)\n"
            "def handle(event, context):\n    return 'late'\n"
        )
        proc = Proc(["unshare", "--pid", "--fork", "--kill-child", sys.executable, str(WATCHDOG_FILE),
                     "--root", str(tmp_path)], tmp_path / "wd.log", env={"port": str(free_port())})
        try:
            proc.wait_until(mark.exists, 15, "the handler module to start importing")
            [inner] = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            os.kill(int(inner), signal.SIGTERM)
            assert proc.popen.wait(5) == 0
        finally:
            stop(proc)


# -- building (needs apt, the Debian mirror and PyPI) ---------------------------------------


@pytest.fixture(scope="module")
def build_prereqs() -> None:
    require("apt-get", "apt-cache", "skopeo", root=False)


@pytest.mark.integration
class TestBuild:
    def test_deterministic(self, build_prereqs: None, tmp_path: Path) -> None:
        """Building every layer twice from scratch gives the same digests (downloads reused)."""
        specs = select(catalog(), ["hello", "alpine"])
        first = ImageBuilder(CACHE, reuse=False)
        one = first.build(tmp_path / "one", specs)
        second = ImageBuilder(CACHE, reuse=False)
        two = second.build(tmp_path / "two", specs)
        assert first.stats["built"] == second.stats["built"] == 4
        assert {n: i.digest for n, i in one.items()} == {n: i.digest for n, i in two.items()}
        assert one == two

    def test_warm_build_reuses_every_layer(self, build_prereqs: None, tmp_path: Path) -> None:
        """Once built, a build of the same images builds nothing and takes seconds."""
        ImageBuilder(CACHE).build(tmp_path / "cold", select(catalog(), ["hello"]))
        builder = ImageBuilder(CACHE)
        started = time.monotonic()
        built = builder.build(tmp_path / "warm", select(catalog(), ["hello"]))
        assert time.monotonic() - started < 5
        assert builder.stats == {"reused": 3}
        assert [layer.name.split(":")[0] for layer in built["registry.lab/faas/hello:0.1.0"].layers] == [
            "python3.11 base", "runtime", "function"]

    def test_function_images_share_base_and_runtime(self, built_functions: dict[str, BuiltImage]) -> None:
        """Every function image is base + runtime + its own layer, the first two shared."""
        layers = [tuple(img.layers) for img in built_functions.values()]
        assert {len(ls) for ls in layers} == {3}
        assert len({ls[0].digest for ls in layers}) == 1
        assert len({ls[1].digest for ls in layers}) == 1
        assert len({ls[2].digest for ls in layers}) == len(FUNCTIONS)

    def test_layout_readable_by_skopeo(self, built_functions: dict[str, BuiltImage], layout: Path) -> None:
        """skopeo finds each image in the layout under its full name, with the same digest."""
        for name, image in built_functions.items():
            raw = run(["skopeo", "inspect", "--raw", f"oci:{layout}:{name}"]).stdout
            assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == image.digest

    def test_runs_as_function_user(self, built_functions: dict[str, BuiltImage], layout: Path) -> None:
        """Function images run as uid 1000 from /home/app with the watchdog as entrypoint."""
        image = built_functions["registry.lab/faas/hello:0.1.0"]
        config = json.loads((layout / "blobs" / "sha256" / image.config_digest.split(":")[1]).read_bytes())
        run_config = config["config"]
        assert run_config["User"] == "1000:1000"
        assert run_config["WorkingDir"] == "/home/app"
        assert run_config["Entrypoint"] == ["/usr/bin/python3.11", "-m", "faas_watchdog"]
        assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]

    def test_alpine_stand_in(self, build_prereqs: None, tmp_path: Path) -> None:
        """The alpine stand-in is one layer of 7.33 MB (to within a tar block) with a
        busybox shell in it."""
        built = build_all(tmp_path / "ref", cache_dir=CACHE, only=["alpine"])
        image = built["registry.lab/ref/alpine:paper"]
        assert len(image.layers) == 1
        assert 7_330_000 - 517 <= image.size <= 7_330_000
        blob = (tmp_path / "ref" / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]).read_bytes()
        names = {m.name: m for m in members(blob)}
        assert names["bin/sh"].issym() and names["bin/busybox"].isfile()

    def test_cli_build(self, build_prereqs: None, tmp_path: Path) -> None:
        """`images build --only hello --json` prints the image with its digest and size."""
        args = ["build", "--only", "hello", "--cache", str(CACHE), "--out", str(tmp_path / "o"), "--json"]
        result = CliRunner().invoke(images, args)
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.stdout)
        expected = build_all(tmp_path / "again", cache_dir=CACHE, only=["hello"])
        image = expected["registry.lab/faas/hello:0.1.0"]
        assert row == {"name": image.name, "digest": image.digest, "size": image.size, "layers": 3}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images") / "layout"


@pytest.fixture(scope="module")
def built_functions(build_prereqs: None, layout: Path) -> dict[str, BuiltImage]:
    """The three function images, built (from the cache when warm) into ``layout``."""
    return build_all(layout, cache_dir=CACHE, only=list(FUNCTIONS))


# -- the images, pushed to a registry and run by containerd -----------------------------------


@pytest.fixture(scope="module")
def lab_registry(built_functions: dict[str, BuiltImage], layout: Path) -> Iterator[Registry]:
    """A registry holding the function images, pushed with their digests preserved."""
    require("docker-registry", "skopeo")
    registry = Registry()
    try:
        registry.start()
        push_all(layout, built_functions, registry.host)
        yield registry
    finally:
        registry.close()


REQUESTS = {
    "hello": (("GET", "/?name=lab", None, {}), b"Hello, lab!\n"),
    "transform": (("POST", "/", b'{"markdown": "# Title\\n\\nsome *text*"}',
                   {"Content-Type": "application/json"}),
                  {"html": "<h1>Title</h1>\n<p>some <em>text</em></p>", "words": 4, "headings": ["Title"]}),
    "heavy": (("POST", "/", b"x,y\n1,10\n3,30\n", {"Content-Type": "text/csv"}), None),
}


def answers_or_died(url: str, ctrd: Containerd, task: str, log: Path) -> bool:
    """True once ``url`` answers 200; fails at once, quoting the task's output, if it stopped."""
    if http_ok(url):
        return True
    if task_status(ctrd, task) == "STOPPED":
        output = log.read_text(errors="replace") if log.exists() else "<no output>"
        pytest.fail(f"{task} exited before answering:\n{output[-3000:]}")
    return False


def task_status(ctrd: Containerd, task: str) -> str:
    for line in ctrd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == task:
            return fields[-1]
    return "GONE"


@pytest.mark.integration
class TestRunInContainerd:
    @pytest.mark.parametrize("function", FUNCTIONS)
    def test_pull_run_invoke_stop(self, function: str, lab_registry: Registry,
                                  built_functions: dict[str, BuiltImage],
                                  containerd_factory: Callable[..., Containerd], tmp_path: Path) -> None:
        """Pushed to a registry, pulled by containerd and run with the host's network on a
        chosen port, the function answers its handler's reply and stops on SIGTERM."""
        image = built_functions[f"registry.lab/faas/{function}:0.1.0"]
        ctrd = containerd_factory()
        ref = image.reference(lab_registry.host)
        ctrd.pull(ref)
        assert ctrd.image_digest(ref) == image.digest
        port = free_port()
        task = f"fn-{function}-{uuid.uuid4().hex[:6]}"
        log = tmp_path / "task.log"
        ctrd.ctr("run", "-d", "--net-host", "--env", f"port={port}", "--log-uri", f"file://{log}", ref, task)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: answers_or_died(f"{base}/_/health", ctrd, task, log), 60,
                     f"{function} to answer its health check")
            (method, path, body, headers), expected = REQUESTS[function]
            status, _, answer = fetch(method, base + path, body, headers)
            assert status == 200, answer
            if isinstance(expected, bytes):
                assert answer == expected
            elif expected is not None:
                assert json.loads(answer) == expected
            else:
                stats = json.loads(answer)
                assert (stats["rows"], stats["describe"]["y"]["mean"]) == (2, 20.0)
                assert stats["versions"] == {"numpy": "1.26.4", "pandas": "2.2.2"}
            started = time.monotonic()
            ctrd.ctr("tasks", "kill", "--signal", "SIGTERM", task)
            wait_for(lambda: task_status(ctrd, task) == "STOPPED", 10, f"{task} to stop on SIGTERM")
            assert time.monotonic() - started < 5
        finally:
            ctrd.ctr("tasks", "delete", "--force", task, check=False)
            ctrd.ctr("containers", "delete", task, check=False)
