"""The faas-provider: its pure parts in tables, then the HTTP API against real runtimes.

Integration tests run the app in this process (werkzeug, threaded) on 127.0.0.1 next to a
private containerd (or dockerd) in the same network namespace, so a function's host
networking is ours. The function image is busybox `httpd`: `/_/health` is a file, CGI
scripts answer invocations, `-vv` logs every request to stderr. Deploys send exactly what
faas-cli sends: PUT, then POST on 404, basic auth, `labels`/`annotations` as `{}`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from flask import Flask
from flask import request as flask_request
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from faas_accel.gateway import deployment
from faas_accel.provider import logdriver
from faas_accel.provider.api import EXTENSION
from faas_accel.provider.app import create_app
from faas_accel.provider.cli import provider as provider_cli
from faas_accel.provider.config import ProviderConfig, parse_port_range
from faas_accel.provider.errors import InvalidRequest
from faas_accel.provider.logs import LogFollower
from faas_accel.provider.model import (
    FunctionDeployment,
    image_ref,
    parse_cpus,
    parse_deployment,
    parse_memory,
    parse_scale,
    plain_http,
)
from faas_accel.provider.phases import OTHER, PHASES, parse_server_timing
from faas_accel.provider.store import FunctionRecord, FunctionStore
from faas_accel.testbed import oci
from faas_accel.testbed.procs import Proc, free_port, wait_for, wait_http
from faas_accel.testbed.runtimes import Containerd, Dockerd
from tests.conftest import Seeded

USER, PASSWORD = "admin", "s3cret-pw"
FAAS_CLI_UA = "faas-cli/0.16.38"

ECHO_CGI = b"""#!/bin/sh
echo "Content-Type: text/plain"
echo ""
echo "method=$REQUEST_METHOD query=$QUERY_STRING fprocess=$fprocess greeting=$GREETING port=$port"
cat
"""
SLOW_CGI = b"""#!/bin/sh
echo "Content-Type: text/plain"
echo ""
echo first
sleep 1
echo second
"""
INSPECT_CGI = b"""#!/bin/sh
echo "Content-Type: text/plain"
echo ""
secret=/var/openfaas/secrets/api-key
cat $secret
if (: > $secret) 2>/dev/null; then echo "secret: writable"; else echo "secret: read-only"; fi
if (: > /probe) 2>/dev/null; then echo "root: writable"; else echo "root: read-only"; fi
if (: > /tmp/probe) 2>/dev/null; then echo "tmp: writable"; else echo "tmp: read-only"; fi
"""
INDEX = b"hello from a busybox function\n"


def function_image() -> oci.Image:
    """A watchdog stand-in: listens on $port, /_/health answers 200, CGI answers invocations."""
    return oci.busybox_image(
        {
            "www/index.html": INDEX,
            "www/_/health": b"OK\n",
            "www/cgi-bin/echo": (ECHO_CGI, 0o755),
            "www/cgi-bin/slow": (SLOW_CGI, 0o755),
            "www/cgi-bin/inspect": (INSPECT_CGI, 0o755),
        },
        cmd=["/bin/sh", "-c", 'echo "listening on $port"; exec /bin/busybox httpd -f -vv -p "$port" -h /www'],
    )


@dataclass(frozen=True)
class Images:
    function: str
    crash: str  # prints "boom" and exits 3
    mute: str  # runs but never listens
    missing: str  # never pushed


@pytest.fixture(scope="session")
def images(seeded: Seeded) -> Images:
    refs = Images(
        function=seeded.ref("lab/bbfn:1"),
        crash=seeded.ref("lab/crash:1"),
        mute=seeded.ref("lab/mute:1"),
        missing=seeded.ref("lab/does-not-exist:1"),
    )
    oci.publish(function_image(), refs.function)
    oci.publish(oci.busybox_image(cmd=["/bin/sh", "-c", "echo boom; exit 3"]), refs.crash)
    oci.publish(oci.busybox_image(cmd=["/bin/sleep", "60"]), refs.mute)
    return refs


# ---------------------------------------------------------------- pure parts


def faas_cli_body(name: str, image: str, **extra: Any) -> dict[str, Any]:
    """The FunctionDeployment faas-cli sends for a plain `faas-cli deploy`."""
    return deployment(name, image, **extra)


class TestModel:
    def test_faas_cli_body_parses(self) -> None:
        """What faas-cli sends parses, with the default namespace and no limits."""
        dep = parse_deployment(json.dumps(faas_cli_body("hello", "ghcr.io/a/b:1")).encode())
        assert (dep.service, dep.image, dep.namespace, dep.labels, dep.limits) == (
            "hello",
            "ghcr.io/a/b:1",
            "openfaas-fn",
            {},
            None,
        )

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"{not json", "unable to parse"),
            (b"[]", "JSON object"),
            (json.dumps({"image": "a"}).encode(), "service is required"),
            (json.dumps({"service": "Bad_Name", "image": "a"}).encode(), "not valid"),
            (json.dumps({"service": "ok"}).encode(), "image is required"),
            (json.dumps({"service": "ok", "image": "UPPER/x"}).encode(), "image"),
            (json.dumps({"service": "ok", "image": "a", "namespace": "other"}).encode(), "namespace"),
            (json.dumps({"service": "ok", "image": "a", "envVars": {"a": 1}}).encode(), "envVars"),
            (json.dumps({"service": "ok", "image": "a", "limits": {"memory": "lots"}}).encode(), "memory"),
        ],
        ids=[
            "bad-json",
            "not-object",
            "no-service",
            "bad-name",
            "no-image",
            "bad-image",
            "namespace",
            "env-not-strings",
            "bad-memory",
        ],
    )
    def test_bad_deployments_are_invalid(self, body: bytes, message: str) -> None:
        """Each malformed deployment is an InvalidRequest naming what is wrong."""
        with pytest.raises(InvalidRequest, match=message):
            parse_deployment(body)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("128Mi", 128 << 20), ("1Gi", 1 << 30), ("500M", 500_000_000), ("1024", 1024), ("1.5Ki", 1536)],
        ids=["Mi", "Gi", "M", "plain", "fraction"],
    )
    def test_memory_quantities(self, text: str, expected: int) -> None:
        """Kubernetes memory quantities become bytes."""
        assert parse_memory(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"), [("500m", 0.5), ("2", 2.0), ("0.25", 0.25)], ids=["milli", "whole", "fraction"]
    )
    def test_cpu_quantities(self, text: str, expected: float) -> None:
        """Kubernetes CPU quantities become CPUs."""
        assert parse_cpus(text) == expected

    @pytest.mark.parametrize(
        ("image", "normalized", "plain"),
        [
            ("alpine", "docker.io/library/alpine:latest", False),
            ("localhost:5000/fn:1", "localhost:5000/fn:1", True),
            ("127.0.0.1:5000/lab/fn:1", "127.0.0.1:5000/lab/fn:1", True),
            ("127.0.0.1/fn", "127.0.0.1/fn:latest", True),
            ("registry.lab:5000/fn:1", "registry.lab:5000/fn:1", False),
            ("198.18.0.1:5000/fn:1", "198.18.0.1:5000/fn:1", False),
        ],
        ids=["hub", "localhost", "loopback", "loopback-no-port", "named", "other-ip"],
    )
    def test_pull_reference_and_plain_http(self, image: str, normalized: str, plain: bool) -> None:
        """Images are normalized as faasd does; only localhost/127.0.0.1 registries use plain HTTP."""
        ref = image_ref(image)
        assert (str(ref), plain_http(ref)) == (normalized, plain)

    @pytest.mark.parametrize(
        "body", [b'{"serviceName": "f"}', b'{"replicas": -1}', b'{"replicas": true}', b'{"replicas": "1"}']
    )
    def test_scale_needs_replicas(self, body: bytes) -> None:
        """A scale request without a non-negative integer `replicas` is invalid (never a silent 0)."""
        with pytest.raises(InvalidRequest, match="replicas"):
            parse_scale(body)

    @pytest.mark.parametrize(
        ("text", "expected"), [("18000-18999", (18000, 18999)), ("9000", (9000, 9000))], ids=["range", "one"]
    )
    def test_port_range(self, text: str, expected: tuple[int, int]) -> None:
        assert parse_port_range(text) == expected

    def test_config_round_trips_through_json(self, tmp_path: Path) -> None:
        """The CLI hands gunicorn's worker the exact configuration."""
        config = ProviderConfig(
            runtime="containerd",
            address="/s",
            state_dir=tmp_path,
            hosts_dir=tmp_path / "h",
            port_range=(1, 2),
        )
        assert ProviderConfig.from_json(config.to_json()) == config


class TestStore:
    def record(self, name: str, port: int) -> FunctionRecord:
        dep = FunctionDeployment(service=name, image="alpine")
        return FunctionRecord(deployment=dep, port=port, created_at=datetime(2024, 1, 1, tzinfo=UTC))

    def test_ports_round_robin_skipping_taken_and_busy(self, tmp_path: Path) -> None:
        """Ports go round the range, skipping used, reserved and busy ones; freed ones come last."""
        busy = {101}
        store = FunctionStore(tmp_path / "f.json", (100, 103), is_free=lambda p: p not in busy)
        first = store.reserve_port()
        store.put(self.record("a", first))
        second = store.reserve_port()
        third = store.reserve_port()
        assert (first, second, third) == (100, 102, 103)
        store.release_port(second)
        store.delete("a")
        assert [store.reserve_port(), store.reserve_port()] == [100, 102]

    def test_records_survive_a_restart(self, tmp_path: Path) -> None:
        """What was put is there when the store is opened again; invocation counts are not."""
        store = FunctionStore(tmp_path / "f.json", (100, 103))
        store.put(self.record("a", 100))
        store.put(self.record("b", 101).scaled(0))
        store.count_invocation("a")
        again = FunctionStore(tmp_path / "f.json", (100, 103))
        assert again.all() == store.all()
        assert (again.get("b") or self.record("x", 0)).replicas == 0
        assert again.invocations("a") == 0


def write_records(path: Path, texts: list[str], start: datetime, stream: str = "stdout") -> None:
    with open(path, "a") as f:
        for i, text in enumerate(texts):
            stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            f.write(json.dumps({"time": stamp, "stream": stream, "log": text}) + "\n")


class TestLogs:
    T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    def test_history_since_and_tail(self, tmp_path: Path) -> None:
        """History spans the rotated file; `since` filters first, then `tail` keeps the last N."""
        path = tmp_path / "fn.log"
        write_records(path.with_name("fn.log.1"), ["a", "b"], self.T0)
        write_records(path, ["c", "d", "e"], self.T0 + timedelta(seconds=2))
        follower = LogFollower(path, "fn")

        def texts(**kw: Any) -> list[str]:
            return [line.text for line in follower.lines(follow=False, **kw) if line]

        assert texts(since=None, tail=None) == ["a", "b", "c", "d", "e"]
        assert texts(since=self.T0 + timedelta(seconds=1), tail=None) == ["b", "c", "d", "e"]
        assert texts(since=self.T0 + timedelta(seconds=1), tail=2) == ["d", "e"]
        assert texts(since=None, tail=0) == []

    def test_follow_across_rotation_until_unlinked(self, tmp_path: Path) -> None:
        """A follower sees every appended line once, across a rotation, and ends on unlink."""
        path = tmp_path / "fn.log"
        write_records(path, ["old"], self.T0)
        got: list[str] = []
        follower = LogFollower(path, "fn", poll=0.01, heartbeat=0.05)
        done = threading.Event()

        def consume() -> None:
            for line in follower.lines(since=None, tail=None, follow=True):
                if line is not None:
                    got.append(line.text)
            done.set()

        threading.Thread(target=consume, daemon=True).start()
        wait_for(lambda: got == ["old"], 5, "the history line")
        write_records(path, ["new1"], self.T0)
        wait_for(lambda: len(got) == 2, 5, "an appended line")
        with open(path, "a") as f:  # a partial line is held back until its newline
            f.write('{"time": "2024-05-01T12:00:00Z", "log": "par')
        time.sleep(0.1)
        assert got == ["old", "new1"]
        with open(path, "a") as f:
            f.write('tial"}\n')
        wait_for(lambda: len(got) == 3, 5, "the completed line")
        write_records(path, ["before-rotate"], self.T0)
        os.replace(path, path.with_name("fn.log.1"))
        write_records(path, ["after-rotate"], self.T0)
        wait_for(lambda: len(got) == 5, 5, "lines around the rotation")
        path.unlink()
        assert done.wait(5), "follower did not end after the file was unlinked"
        assert got == ["old", "new1", "partial", "before-rotate", "after-rotate"]

    def test_logdriver_speaks_the_shim_protocol(self, tmp_path: Path) -> None:
        """Run as containerd's shim runs it: ready by closing fd 5, lines from fds 3 and 4 stamped."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ready_r, ready_w = os.pipe()
        # what the shim does: the pipes become fds 3, 4 and 5 of the logger, nothing else open
        remap = (
            "import os, sys\n"
            f"for src, dst in (({out_r}, 3), ({err_r}, 4), ({ready_w}, 5)):\n"
            "    os.dup2(src, dst)\n"
            "    os.close(src)\n"
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", remap, logdriver.__file__, str(tmp_path)],
            pass_fds=(out_r, err_r, ready_w),
            env={"CONTAINER_ID": "fn1", "CONTAINER_NAMESPACE": "ns"},
        )
        try:
            for fd in (out_r, err_r, ready_w):
                os.close(fd)
            assert os.read(ready_r, 1) == b""  # EOF: the logger closed fd 5
            before = datetime.now(UTC)
            os.write(out_w, b"hello\nwor")
            os.write(err_w, "oops \u00e9\n".encode())
            os.write(out_w, b"ld\nno newline at the end")
            os.close(out_w)
            os.close(err_w)
            assert proc.wait(10) == 0
        finally:
            os.close(ready_r)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        records = [json.loads(line) for line in (tmp_path / "fn1.log").read_text().splitlines()]
        by_stream = {s: [r["log"] for r in records if r["stream"] == s] for s in ("stdout", "stderr")}
        assert by_stream == {"stdout": ["hello", "world", "no newline at the end"], "stderr": ["oops \u00e9"]}
        assert all(datetime.fromisoformat(r["time"]) >= before - timedelta(seconds=1) for r in records)


# ---------------------------------------------------------------- the HTTP API on real runtimes


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<free port> in a thread; yield its URL; shut down after."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Served:
    """A provider app being served, the runtime behind it and a faas-cli-like client."""

    url: str
    app: Flask
    config: ProviderConfig
    http: requests.Session

    def system(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.http.request(method, f"{self.url}{path}", auth=(USER, PASSWORD) if auth else None, **kw)

    def deploy(self, name: str, image: str, **extra: Any) -> list[requests.Response]:
        """What `faas-cli deploy` does: PUT, and POST if the PUT says 404. Returns both answers."""
        body = faas_cli_body(name, image, **extra)
        headers = {"User-Agent": FAAS_CLI_UA, "Content-Type": "application/json"}
        answers = [self.system("PUT", "/system/functions", data=json.dumps(body), headers=headers)]
        if answers[0].status_code == 404:
            answers.append(self.system("POST", "/system/functions", data=json.dumps(body), headers=headers))
        return answers

    def invoke(self, name: str, path: str = "", method: str = "GET", **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.http.request(method, f"{self.url}/function/{name}{path}", **kw)

    def describe(self, name: str) -> dict[str, Any]:
        resp = self.system("GET", f"/system/function/{name}")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc


@pytest.fixture
def provider_factory(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``make(runtime, address, namespace=..., **config) -> Served``; all shut down after."""
    stack = contextlib.ExitStack()
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")

    def make(runtime: str, address: str, **overrides: Any) -> Served:
        settings: dict[str, Any] = {"ready_timeout": 20, "stop_grace": 0.2, "state_dir": tmp_path / "state"}
        settings.update(overrides)
        config = ProviderConfig(
            runtime=runtime,
            address=address,
            auth_user=USER,
            auth_password_file=password_file,
            **settings,
        )
        app = create_app(config)
        wiring = app.extensions[EXTENSION]
        stack.callback(wiring.session.close)
        stack.callback(wiring.calls.close)
        if hasattr(wiring.provider.runtime, "close"):
            stack.callback(wiring.provider.runtime.close)
        url = stack.enter_context(serving(app))
        http = stack.enter_context(requests.Session())
        http.trust_env = False
        return Served(url, app, config, http)

    with stack:
        yield make


@pytest.fixture
def containerd(containerd_factory: Callable[..., Containerd]) -> Containerd:
    return containerd_factory()


@pytest.fixture
def served(containerd: Containerd, provider_factory: Callable[..., Served]) -> Served:
    """A provider on a private containerd (host network of this namespace)."""
    return provider_factory("containerd", containerd.address, namespace=containerd.namespace)


def ctr_ids(containerd: Containerd, kind: str) -> list[str]:
    return containerd.ctr(kind, "ls", "-q").stdout.split()


@pytest.mark.integration
class TestContainerdProvider:
    def test_faas_cli_deploy_invoke_list_scale_delete(
        self, served: Served, containerd: Containerd, images: Images
    ) -> None:
        """faas-cli's PUT->404->POST deploys a function that answers at once; list and describe
        show it ready; scale 0 stops the task, scale 1 brings it back; delete removes it all."""
        put, post = served.deploy("echo", images.function, envProcess="cat", envVars={"GREETING": "hi"})
        assert (put.status_code, put.text) == (404, "service echo not found\n")
        assert post.status_code == 200, post.text

        first = served.invoke("echo")  # no retry: the deploy answered only once healthy
        assert (first.status_code, first.content) == (200, INDEX)
        echoed = served.invoke("echo", "/cgi-bin/echo?x=1", "POST", data=b"payload " * 1000)
        port = json.loads((served.config.state_dir / "functions.json").read_text())["functions"][0]["port"]
        assert echoed.status_code == 200
        assert (
            echoed.text == f"method=POST query=x=1 fprocess=cat greeting=hi port={port}\n" + "payload " * 1000
        )

        listed = served.system("GET", "/system/functions").json()
        assert [(f["name"], f["replicas"], f["availableReplicas"]) for f in listed] == [("echo", 1, 1)]
        described = served.describe("echo")
        assert {
            k: described[k] for k in ("name", "image", "namespace", "envProcess", "envVars", "labels")
        } == {
            "name": "echo",
            "image": images.function,
            "namespace": "openfaas-fn",
            "envProcess": "cat",
            "envVars": {"GREETING": "hi"},
            "labels": {},
        }
        assert described["invocationCount"] == 2
        assert datetime.fromisoformat(described["createdAt"]) <= datetime.now(UTC)

        assert (
            served.system(
                "POST", "/system/scale-function/echo", json={"serviceName": "echo", "replicas": 0}
            ).status_code
            == 200
        )
        assert (served.describe("echo")["replicas"], served.describe("echo")["availableReplicas"]) == (0, 0)
        assert ctr_ids(containerd, "tasks") == [] and ctr_ids(containerd, "containers") == ["echo"]
        stopped = served.invoke("echo")
        assert (stopped.status_code, stopped.text) == (503, "No endpoints available for: echo.\n")

        assert (
            served.system(
                "POST", "/system/scale-function/echo", json={"serviceName": "echo", "replicas": 1}
            ).status_code
            == 200
        )
        assert served.invoke("echo").status_code == 200
        assert (served.describe("echo")["replicas"], served.describe("echo")["availableReplicas"]) == (1, 1)

        deleted = served.system("DELETE", "/system/functions", json={"functionName": "echo"})
        assert deleted.status_code == 200, deleted.text
        assert ctr_ids(containerd, "tasks") == [] and ctr_ids(containerd, "containers") == []
        assert served.system("GET", "/system/function/echo").status_code == 404
        assert served.system("GET", "/system/functions").json() == []
        assert not (served.config.state_dir / "logs" / "echo.log").exists()

    def test_invocations_stream_both_ways(self, served: Served, images: Images) -> None:
        """A response is relayed as the function writes it, and a large body goes through intact."""
        assert served.deploy("stream", images.function)[-1].status_code == 200
        started = time.monotonic()
        with served.invoke("stream", "/cgi-bin/slow", stream=True) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(lines) == b"first"
            first_at = time.monotonic() - started
            assert next(lines) == b"second"
            second_at = time.monotonic() - started
        assert first_at < 0.8 <= second_at, (first_at, second_at)
        big = os.urandom(3 << 20)
        echoed = served.invoke(
            "stream", "/cgi-bin/echo", "POST", data=big
        )  # busybox CGI reads POST bodies only
        assert echoed.status_code == 200 and echoed.content.endswith(big)

    def test_logs_history_and_follow(self, served: Served, images: Images) -> None:
        """/system/logs gives ndjson lines of the function's output; follow streams new ones."""
        assert served.deploy("logger", images.function)[-1].status_code == 200
        resp = served.system(
            "GET", "/system/logs", params={"name": "logger", "tail": "-1", "follow": "false"}
        )
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
        history = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
        assert history[0]["text"].startswith("listening on 18")
        assert {(m["name"], m["namespace"], m["instance"]) for m in history} == {
            ("logger", "openfaas-fn", "logger")
        }
        assert datetime.fromisoformat(history[0]["timestamp"]) <= datetime.now(UTC)

        params = {"name": "logger", "follow": "true", "since": datetime.now(UTC).isoformat()}
        with served.system("GET", "/system/logs", params=params, stream=True, timeout=(5, 15)) as follow:
            assert follow.status_code == 200
            assert served.invoke("logger", "/cgi-bin/echo?from-follow").status_code == 200
            seen = []
            for raw in follow.iter_lines():
                if raw.strip():
                    seen.append(json.loads(raw)["text"])
                    if "url:/cgi-bin/echo" in seen[-1]:
                        break
        assert any("url:/cgi-bin/echo" in text for text in seen), seen
        tail = served.system("GET", "/system/logs", params={"name": "logger", "tail": "1"})
        assert len(tail.text.splitlines()) == 1

    def test_update_recreates_with_new_settings(
        self, served: Served, containerd: Containerd, images: Images
    ) -> None:
        """A second faas-cli deploy (PUT 200) replaces the container: new env, same name."""
        served.deploy("upd", images.function, envVars={"GREETING": "v1"})
        answers = served.deploy("upd", images.function, envVars={"GREETING": "v2"})
        assert [a.status_code for a in answers] == [200]
        assert "greeting=v2" in served.invoke("upd", "/cgi-bin/echo").text
        assert served.describe("upd")["envVars"] == {"GREETING": "v2"}
        assert ctr_ids(containerd, "containers") == ["upd"]

    def test_secrets_api_mounts_read_only_with_root_and_limits(
        self, served: Served, containerd: Containerd, images: Images
    ) -> None:
        """faas-cli's secret create/list/update/remove shapes work as under faasd: a secret is
        stored per namespace and mounted read-only at /var/openfaas/secrets/<name>, an update
        reaches the running function, values never come back; a deploy naming a missing secret
        is 400; the root is read-only with a writable /tmp and the limits are in the spec."""
        secrets = "/system/secrets"
        assert served.system("POST", secrets, json={"name": "api-key", "value": "k3y\n"}).status_code == 201
        again = served.system("POST", secrets, json={"name": "api-key", "value": "other"})
        assert again.status_code == 409 and "already exists" in again.text
        raw = base64.b64encode(b"\x00\xffbin").decode()
        assert served.system("POST", secrets, json={"name": "blob", "rawValue": raw}).status_code == 201
        assert served.system("GET", secrets).json() == [
            {"name": "api-key", "namespace": "openfaas-fn"},
            {"name": "blob", "namespace": "openfaas-fn"},
        ]
        stored = served.config.state_dir / "secrets" / "openfaas-fn"
        assert (stored / "blob").read_bytes() == b"\x00\xffbin"
        assert served.system("PUT", secrets, json={"name": "nope", "value": "x"}).status_code == 404
        assert served.system("POST", secrets, json={"name": "../etc", "value": "x"}).status_code == 400
        assert served.system("GET", secrets, auth=False).status_code == 401
        missing = served.deploy("sec", images.function, secrets=["nope"])[-1]
        assert (missing.status_code, missing.text.split(" (")[0]) == (400, "unable to find secret: nope")

        limits = {"memory": "64Mi", "cpu": "500m"}
        extra = {"secrets": ["api-key"], "readOnlyRootFilesystem": True, "limits": limits}
        assert served.deploy("sec", images.function, **extra)[-1].status_code == 200
        inspected = served.invoke("sec", "/cgi-bin/inspect").text
        assert inspected == "k3y\nsecret: read-only\nroot: read-only\ntmp: writable\n"
        assert served.system("PUT", secrets, json={"name": "api-key", "value": "n3w\n"}).status_code == 200
        assert served.invoke("sec", "/cgi-bin/inspect").text.startswith("n3w\nsecret: read-only\n")
        spec = json.loads(containerd.ctr("containers", "info", "sec").stdout)["Spec"]
        mount = next(m for m in spec["mounts"] if m["destination"] == "/var/openfaas/secrets/api-key")
        assert mount["source"] == str(stored / "api-key") and "ro" in mount["options"]
        assert spec["root"]["readonly"] is True
        resources = spec["linux"]["resources"]
        assert (resources["memory"]["limit"], resources["cpu"]["quota"], resources["cpu"]["period"]) == (
            64 << 20,
            50_000,
            100_000,
        )
        assert served.describe("sec")["limits"] == limits

        assert served.system("DELETE", secrets, json={"name": "blob"}).status_code == 200
        assert served.system("DELETE", secrets, json={"name": "blob"}).status_code == 404
        assert [s["name"] for s in served.system("GET", secrets).json()] == ["api-key"]

    def test_async_invocation_queues_and_calls_back(self, served: Served, images: Images) -> None:
        """POST /async-function/<name> answers 202 with an X-Call-Id at once; the function runs
        with the same path, query and body, and its answer is POSTed to X-Callback-Url with the
        queue-worker's headers. An unknown function is 404 at once."""
        assert served.deploy("later", images.function, envVars={"GREETING": "async"})[-1].status_code == 200
        got: list[tuple[dict[str, str], bytes]] = []
        callback = Flask("callback")

        @callback.post("/done")
        def done() -> str:
            got.append((dict(flask_request.headers), flask_request.get_data()))
            return "thanks"

        with serving(callback) as callback_url:
            resp = served.http.post(
                f"{served.url}/async-function/later/cgi-bin/echo?x=1",
                data=b"queued payload",
                headers={"X-Callback-Url": f"{callback_url}/done"},
                timeout=10,
            )
            assert resp.status_code == 202 and resp.content == b""
            call_id = resp.headers["X-Call-Id"]
            wait_for(lambda: len(got) == 1, 20, "the callback")
        headers, body = got[0]
        assert (headers["X-Call-Id"], headers["X-Function-Name"], headers["X-Function-Status"]) == (
            call_id,
            "later",
            "200",
        )
        assert float(headers["X-Duration-Seconds"]) > 0
        assert body.startswith(b"method=POST query=x=1 ") and b"greeting=async" in body
        assert body.endswith(b"queued payload")
        assert served.describe("later")["invocationCount"] == 1
        unknown = served.http.post(f"{served.url}/async-function/nope", data=b"x", timeout=10)
        assert (unknown.status_code, unknown.text) == (404, "function nope not found\n")

    def test_pull_through_the_hosts_dir(
        self, containerd: Containerd, provider_factory: Callable[..., Served], seeded: Seeded, images: Images
    ) -> None:
        """With --hosts-dir, a registry is reached as its hosts.toml says (as the lab's mirrors
        are), and the function keeps the image name it was deployed with."""
        # nothing listens on 127.0.0.1:1, so only the hosts.toml can make this pull work (and a
        # mistake cannot send a DNS query anywhere). ctr 1.6 ignores a hosts.toml that has only
        # `server`: the mirror must be a [host] entry.
        nowhere = "127.0.0.1:1"
        (containerd.hosts_dir / nowhere).mkdir(parents=True)
        (containerd.hosts_dir / nowhere / "hosts.toml").write_text(
            f'server = "{seeded.registry.url}"\n'
            f'[host."{seeded.registry.url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        served = provider_factory(
            "containerd", containerd.address, namespace=containerd.namespace, hosts_dir=containerd.hosts_dir
        )
        image = images.function.replace(seeded.registry.host, nowhere)
        assert served.deploy("mirrored", image)[-1].status_code == 200
        assert served.invoke("mirrored").content == INDEX
        assert served.describe("mirrored")["image"] == image

    def test_pull_failure_is_500_with_the_reason_and_leaves_nothing(
        self, served: Served, containerd: Containerd, images: Images
    ) -> None:
        """An image that does not exist fails the deploy with ctr's reason; nothing is left."""
        answers = served.deploy("ghost", images.missing)
        assert answers[-1].status_code == 500
        assert answers[-1].text.startswith(f"pull of {images.missing} failed:")
        assert "not found" in answers[-1].text
        assert ctr_ids(containerd, "containers") == [] and ctr_ids(containerd, "tasks") == []
        assert served.system("GET", "/system/functions").json() == []

    def test_a_function_that_exits_fails_the_deploy(
        self, served: Served, containerd: Containerd, images: Images
    ) -> None:
        """A container that exits before its health check passes: 500 with its status and output."""
        answer = served.deploy("crash", images.crash)[-1]
        assert answer.status_code == 500
        assert "function crash exited with status 3 before its health check passed" in answer.text
        assert "boom" in answer.text
        assert ctr_ids(containerd, "containers") == []
        assert served.system("GET", "/system/function/crash").status_code == 404

    def test_a_function_that_never_listens_times_out(
        self, containerd: Containerd, provider_factory: Callable[..., Served], images: Images
    ) -> None:
        """The health-check wait is bounded: 500 naming the URL it polled; nothing is left."""
        served = provider_factory(
            "containerd", containerd.address, namespace=containerd.namespace, ready_timeout=1.0
        )
        answer = served.deploy("mute", images.mute)[-1]
        assert answer.status_code == 500
        assert "did not become healthy within 1s: GET http://127.0.0.1:" in answer.text
        assert ctr_ids(containerd, "containers") == []

    def test_restart_re_adopts_running_and_killed_functions(
        self, containerd: Containerd, provider_factory: Callable[..., Served], images: Images
    ) -> None:
        """A new provider on the same state dir keeps a running function and restarts a killed one."""
        first = provider_factory("containerd", containerd.address, namespace=containerd.namespace)
        first.deploy("keep", images.function)
        first.deploy("kill", images.function)
        containerd.ctr("tasks", "kill", "--signal", "SIGKILL", "kill")
        wait_for(lambda: not first.describe("kill")["replicas"], 10, "the killed task to stop")

        second = provider_factory("containerd", containerd.address, namespace=containerd.namespace)
        assert second.invoke("keep").status_code == 200
        wait_for(lambda: second.invoke("kill").status_code == 200, 10, "the restarted function to answer")
        listed = second.system("GET", "/system/functions").json()
        assert [(f["name"], f["availableReplicas"]) for f in listed] == [("keep", 1), ("kill", 1)]

    def test_errors_are_plain_text_as_faasd_writes_them(self, served: Served) -> None:
        """401 with the Basic realm, 400 for bad input, 404 for unknown functions; /function/*
        and /healthz need no auth."""
        unauthorized = served.system("GET", "/system/functions", auth=False)
        assert unauthorized.status_code == 401
        assert unauthorized.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'
        wrong = served.http.get(f"{served.url}/system/info", auth=(USER, "nope"), timeout=10)
        assert wrong.status_code == 401
        for path in ("/system/info", "/system/logs?name=x", "/system/namespaces"):
            assert served.system("GET", path, auth=False).status_code == 401, path

        bad = served.system("POST", "/system/functions", data=b"{nope")
        assert bad.status_code == 400 and bad.headers["Content-Type"].startswith("text/plain")
        assert bad.text.startswith("unable to parse request body as JSON")
        assert served.system("GET", "/system/functions?namespace=kube-system").status_code == 400
        assert served.system("GET", "/system/function/nope").text == "function nope not found\n"
        assert served.system("DELETE", "/system/functions", json={"functionName": "nope"}).status_code == 404
        scale = served.system("POST", "/system/scale-function/nope", json={"replicas": 1})
        assert scale.status_code == 404
        assert served.system("GET", "/system/logs", params={"name": "nope"}).status_code == 404
        assert served.system("GET", "/system/logs", params={"name": "x", "tail": "many"}).status_code == 400
        assert served.invoke("nope").status_code == 503

        assert served.http.get(f"{served.url}/healthz", timeout=10).status_code == 200
        info = served.system("GET", "/system/info").json()
        assert (info["provider"], info["orchestration"]) == ("faas-accel-provider", "containerd")
        assert served.system("GET", "/system/namespaces").json() == ["openfaas-fn"]


@pytest.mark.integration
class TestDockerProvider:
    def test_deploy_invoke_logs_scale_delete(
        self, dockerd_factory: Callable[..., Dockerd], provider_factory: Callable[..., Served], images: Images
    ) -> None:
        """The same API over dockerd: host-network container, logs with timestamps, scale, delete,
        and a failed pull with dockerd's reason."""
        dockerd = dockerd_factory()
        served = provider_factory("docker", dockerd.base_url)
        put, post = served.deploy("dock", images.function, envVars={"GREETING": "whale"})
        assert (put.status_code, post.status_code) == (404, 200), post.text
        assert "greeting=whale" in served.invoke("dock", "/cgi-bin/echo").text
        assert (served.describe("dock")["replicas"], served.describe("dock")["availableReplicas"]) == (1, 1)
        assert served.system("GET", "/system/info").json()["orchestration"] == "docker"

        logs = served.system("GET", "/system/logs", params={"name": "dock", "follow": "false"})
        texts = [json.loads(line)["text"] for line in logs.text.splitlines() if line.strip()]
        assert texts[0].startswith("listening on 18") and any("url:/cgi-bin/echo" in t for t in texts)

        client = dockerd.client()
        assert served.system("POST", "/system/scale-function/dock", json={"replicas": 0}).status_code == 200
        assert client.containers.get("dock").status == "exited"
        assert served.system("POST", "/system/scale-function/dock", json={"replicas": 1}).status_code == 200
        assert served.invoke("dock").status_code == 200

        assert served.system("DELETE", "/system/functions", json={"functionName": "dock"}).status_code == 200
        assert client.containers.list(all=True) == []

        failed = served.deploy("ghost", images.missing)[-1]
        assert failed.status_code == 500 and failed.text.startswith(f"pull of {images.missing} failed:")
        assert client.containers.list(all=True) == []


@pytest.mark.integration
class TestServeCommand:
    def test_serve_runs_the_api_under_gunicorn(self, containerd: Containerd, tmp_path: Path) -> None:
        """`provider serve` (as the lab runs it) answers /healthz openly and /system/info with auth."""
        password = tmp_path / "password"
        password.write_text(PASSWORD)
        port = free_port()
        code = "from faas_accel.provider.cli import provider; provider()"
        argv = [
            sys.executable, "-c", code, "serve",
            "--runtime", "containerd", "--address", containerd.address, "--namespace", containerd.namespace,
            "--bind", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state"),
            "--auth-user", USER, "--auth-password-file", str(password), "--port-range", "18000-18099",
        ]  # fmt: skip
        proc = Proc(argv, tmp_path / "provider.log", cwd=Path(__file__).parent.parent)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
            with requests.Session() as http:
                http.trust_env = False
                assert http.get(f"http://127.0.0.1:{port}/system/info", timeout=10).status_code == 401
                info = http.get(f"http://127.0.0.1:{port}/system/info", auth=(USER, PASSWORD), timeout=10)
                assert info.status_code == 200, info.text
                assert info.json()["orchestration"] == "containerd"
        finally:
            proc.stop()

    def test_serve_refuses_to_run_without_auth_unless_told(self, tmp_path: Path) -> None:
        """No password file and no --no-auth is a usage error, not an open provider."""
        result = CliRunner().invoke(
            provider_cli, ["serve", "--address", "/x.sock", "--state-dir", str(tmp_path)]
        )
        assert result.exit_code == 2 and "--auth-password-file" in result.output


# ---------------------------------------------------------------- deploy phases


def check_phases(served: Served, name: str, image: str) -> dict[str, float]:
    """Deploy `image`, check its phases against the client's wall clock; return them."""
    started = time.monotonic()
    answers = served.deploy(name, image)
    wall = time.monotonic() - started
    assert answers[-1].status_code == 200, answers[-1].text
    timed = parse_server_timing(answers[-1].headers.get("Server-Timing"))
    total = timed.pop("total")
    assert set(timed) == {*PHASES, OTHER}
    assert sum(timed.values()) == pytest.approx(total, rel=0.01)
    # the provider's total is all of the request but HTTP and parsing: within 5 % (+20 ms) of the client's
    assert total <= wall and wall - total <= 0.05 * wall + 0.02
    assert all(v >= 0 for v in timed.values())
    assert timed["fetch"] > 0 and timed["unpack"] > 0 and timed["healthy"] > 0 and timed["start"] > 0
    # `other` is the provider's own bookkeeping (the old container's removal, the port): tens of
    # ms that grow when the 2-core machine is loaded (45 ms seen under load), never a hidden phase
    assert timed[OTHER] <= 0.05 * total + 0.1
    return timed


def histogram_counts(served: Served) -> dict[str, float]:
    """{phase: observations} of faas_accel_provider_deploy_phase_seconds, and "total"."""
    text = served.http.get(f"{served.url}/metrics", timeout=10).text
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "faas_accel_provider_deploy_phase_seconds_count":
                counts[sample.labels["phase"]] = sample.value
            elif sample.name == "faas_accel_provider_deploy_seconds_count":
                counts["total"] = sample.value
    return counts


@pytest.mark.integration
class TestDeployPhases:
    def test_containerd_deploy_phases_add_up_and_reach_the_histograms(
        self, served: Served, containerd: Containerd, images: Images
    ) -> None:
        """A real pull on containerd shows resolve, fetch, unpack, start and healthy, adding up to
        the deploy's total; /metrics counts one observation per phase."""
        timed = check_phases(served, "phased", images.function)
        assert timed["resolve"] > 0  # ctr said "resolved" before it said "unpacking"
        assert histogram_counts(served) == {**dict.fromkeys((*PHASES, OTHER), 1.0), "total": 1.0}

    def test_docker_deploy_phases_add_up(
        self, dockerd_factory: Callable[..., Dockerd], provider_factory: Callable[..., Served], images: Images
    ) -> None:
        """The same from dockerd's pull events."""
        served = provider_factory("docker", dockerd_factory().base_url)
        timed = check_phases(served, "phased", images.function)
        assert timed["resolve"] > 0
        assert histogram_counts(served)["total"] == 1.0
