"""The lab's pure parts and its clear errors (no namespaces needed)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from faas_accel.cli import main
from faas_accel.lab.host import LabError, check_host
from faas_accel.lab.netns import tbf_args
from faas_accel.lab.spec import LabSpec
from faas_accel.testbed.procs import Proc, free_port


class TestSpec:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"vms": 0}, "--vms must be between 1 and 200"),
            ({"vms": 201}, "--vms must be between 1 and 200"),
            ({"runtime": "podman"}, "--runtime must be one of containerd, docker"),
            ({"wan_rate": "fast"}, "not a bit rate"),
            ({"wan_rtt": "20 parsecs"}, "not a duration"),
            ({"nic_cpus": "first"}, "--nic-cpus takes a CPU list"),
        ],
        ids=["no-vms", "too-many-vms", "runtime", "rate", "rtt", "cpus"],
    )
    def test_bad_options_are_refused_with_a_reason(self, kwargs: dict[str, object], message: str) -> None:
        """Each bad option names itself and what is expected."""
        with pytest.raises(ValueError, match=message):
            LabSpec(**kwargs).validate()  # type: ignore[arg-type]

    def test_addresses_come_from_the_benchmarking_range(self) -> None:
        """Every VM gets a distinct 198.18.1.x address and gateway URL."""
        spec = LabSpec(vms=3)
        ips = [vm.ip for vm in spec.all_vms]
        assert ips == ["198.18.1.11", "198.18.1.12", "198.18.1.13"]
        assert spec.vm(2).gateway_url == "http://198.18.1.12:8080"
        assert LabSpec(vms=1, accel=False).vm(1).gateway_url == "http://198.18.1.11:8081"

    def test_tbf_burst_scales_with_rate(self) -> None:
        """tbf gets ~10 ms of burst at the rate, never less than 64 KiB."""
        assert tbf_args("1gbit")[:4] == ["tbf", "rate", "1000000000", "burst"]
        assert int(tbf_args("1gbit")[4]) == 1_250_000
        assert int(tbf_args("1mbit")[4]) == 64 * 1024


class TestHostChecks:
    def test_not_root_is_refused(self) -> None:
        """Without root the lab says it needs root and how to run it."""
        with pytest.raises(LabError, match="needs root.*sudo"):
            check_host(LabSpec(), which=lambda p: "/usr/bin/" + p, euid=1000)

    def test_missing_program_names_the_package(self) -> None:
        """A missing program is named with the apt-get line that installs it."""
        with pytest.raises(LabError, match=r"missing program\(s\): skopeo; install with: apt-get install skopeo"):
            check_host(LabSpec(), which=lambda p: None if p == "skopeo" else "/usr/bin/" + p, euid=0)

    def test_docker_runtime_needs_dockerd(self) -> None:
        """--runtime docker also needs dockerd (docker.io)."""
        with pytest.raises(LabError, match="apt-get install docker.io"):
            check_host(LabSpec(runtime="docker"), which=lambda p: None if p == "dockerd" else "/x/" + p, euid=0)

    def test_cli_reports_bad_option(self) -> None:
        """`lab up --vms 0` fails with a usage error, not a traceback."""
        result = CliRunner().invoke(main, ["lab", "up", "--vms", "0"])
        assert result.exit_code == 2
        assert "--vms must be between 1 and 200" in result.output


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP server on loopback that answers each line with the same line."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    t = threading.Thread(target=serve)
    t.start()
    try:
        yield port
    finally:
        stop.set()
        t.join()
        srv.close()


class TestWanProxy:
    def test_adds_setup_and_round_trip_latency(self, echo_server: int, tmp_path: object) -> None:
        """Through the proxy, connecting costs `setup` and each round trip costs `rtt`."""
        port = free_port()
        proc = Proc(
            [sys.executable, "-m", "faas_accel.lab.wanproxy", "--listen", f"127.0.0.1:{port}",
             "--target", f"127.0.0.1:{echo_server}", "--rtt", "100ms", "--setup", "150ms"],
            tmp_path / "wanproxy.log",  # type: ignore[operator]
        )  # fmt: skip
        try:
            proc.wait_until(lambda: _connects(port), 10, "the proxy listening")
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", port)) as s:
                for i in range(3):
                    s.sendall(b"ping %d\n" % i)
                    assert s.recv(100) == b"ping %d\n" % i
            elapsed = time.monotonic() - t0
            assert elapsed >= 0.15 + 3 * 0.1
        finally:
            proc.stop()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
