"""The bench's instruments: pulls in a VM, the tarball path, image sizes (locust runs are
locustrun.py's, the cache's RSS rss.py's)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from faas_accel.dockerd import dockerd_argv
from faas_accel.lab import daemons
from faas_accel.lab.seed import answers
from faas_accel.lab.spec import NIC, NIC_IP, VM, LabSpec
from faas_accel.testbed.procs import session

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
TAR_PORT = 5004  # the NIC's file server for the tarball path


class BenchError(RuntimeError):
    """A measurement that could not be taken; the message says which and why."""


def run_cmd(argv: list[str], *, timeout: float = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` capturing text output; a timeout or a missing program is a BenchError."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(argv[:6])} ... ran over {timeout:.0f} s") from exc
    except OSError as exc:
        raise BenchError(f"cannot run {argv[0]}: {exc}") from exc


class VmCtr:
    """`ctr` against one lab VM's containerd, run in the VM's network namespace."""

    def __init__(self, spec: LabSpec, vm: VM) -> None:
        run = Path(spec.workdir) / "run" / vm.name
        self.netns = vm.netns
        self.base = [
            "nsenter",
            f"--net=/run/netns/{vm.netns}",
            "ctr",
            "--address",
            str(run / "containerd.sock"),
            "--namespace",
            vm.netns,
        ]
        self.hosts_dir = str(run / "certs.d")

    def _run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_cmd([*self.base, *args], timeout=timeout)

    def forget(self) -> None:
        """Remove every image and let the GC drop their content and snapshots; BenchError if
        anything is left (a later pull would find it and time nothing)."""
        refs = self._run("images", "ls", "-q").stdout.split()
        if refs:
            self._run("images", "rm", "--sync", *refs)
        left = self._run("images", "ls", "-q").stdout.split()
        if left:
            raise BenchError(f"{self.netns}: images left after removing them: {', '.join(left)}")

    def pull(self, ref: str) -> float:
        """Seconds `ctr images pull` takes (fetch and unpack); BenchError if it fails."""
        t0 = time.perf_counter()
        result = self._run("images", "pull", "--plain-http", "--hosts-dir", self.hosts_dir, ref)
        elapsed = time.perf_counter() - t0
        if result.returncode != 0:
            raise BenchError(f"pull of {ref} failed: {result.stderr.strip().splitlines()[-1:]}")
        return elapsed

    def import_url(self, url: str) -> float:
        """Seconds to stream a `docker save` tarball from `url` into `ctr images import`."""
        return stream_into(self.netns, url, [*self.base, "images", "import", "-"])


def stream_into(netns: str, url: str, sink: list[str], *, timeout: float = 900) -> float:
    """Seconds to fetch `url` with curl inside `netns` and pipe it into the `sink` command."""
    t0 = time.perf_counter()
    fetch = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", "curl", "-sSf", "--max-time", str(int(timeout)), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert fetch.stdout is not None and fetch.stderr is not None
    try:
        result = run_cmd(sink, stdin=fetch.stdout, timeout=timeout)
    finally:
        fetch.stdout.close()
        try:
            fetch.wait(10)
        except subprocess.TimeoutExpired:
            fetch.kill()
            fetch.wait()
        curl_err = fetch.stderr.read().decode(errors="replace").strip()
        fetch.stderr.close()
    elapsed = time.perf_counter() - t0
    if fetch.returncode != 0:
        raise BenchError(f"curl {url} failed (exit {fetch.returncode}): {curl_err[-300:]}")
    if result.returncode != 0:
        raise BenchError(f"{' '.join(sink[-3:])} from {url} failed: {result.stderr.strip()[-300:]}")
    return elapsed


class DockerLoader:
    """A private dockerd in a VM's network namespace, for the paper's own path: a `docker save`
    tarball fetched over the network and fed to `docker load`. Its data root is on the VM's
    disk (tmpfs by default); stopped by PID, with the containerd it started."""

    def __init__(self, spec: LabSpec, vm: VM) -> None:
        run = Path(spec.workdir) / "run" / vm.name
        self.netns = vm.netns
        self.data_root = run / "disk" / "bench-docker"
        self.exec_root = run / "bench-docker-exec"
        self.sock = run / "bench-docker.sock"
        self.config = run / "bench-docker.json"
        self.daemon: daemons.Daemon | None = None

    def __enter__(self) -> DockerLoader:
        self.config.write_text("{}\n")
        self.daemon = daemons.start(
            "bench-dockerd",
            dockerd_argv(data_root=self.data_root, exec_root=self.exec_root,
                         pidfile=f"{self.exec_root}.pid", sock=self.sock, config=self.config),
            self.sock.with_suffix(".log"),
            netns=self.netns,
        )
        try:
            daemons.wait_ready(
                self.daemon, lambda: self._docker("version").returncode == 0, 60, "docker version"
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def _docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cmd(["docker", "-H", f"unix://{self.sock}", *args], timeout=300)

    def forget(self) -> None:
        ids = self._docker("images", "-q").stdout.split()
        if ids:
            self._docker("rmi", "-f", *sorted(set(ids)))
        if self._docker("images", "-q").stdout.split():
            raise BenchError(f"{self.netns}: the bench dockerd still holds images after removing them")

    def load_url(self, url: str) -> float:
        """Seconds to stream the tarball at `url` (fetched in the VM) into `docker load`."""
        return stream_into(self.netns, url, ["docker", "-H", f"unix://{self.sock}", "load"])

    def __exit__(self, *exc: object) -> None:
        managed = _pid_from(self.exec_root / "containerd" / "containerd.pid", str(self.exec_root))
        if self.daemon is not None:
            self.daemon.stop(timeout=20)
            daemons.reap()
        if managed is not None and _pid_from(
            self.exec_root / "containerd" / "containerd.pid", str(self.exec_root)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(managed, signal.SIGKILL)


def _pid_from(pidfile: Path, marker: str) -> int | None:
    """The PID in `pidfile` if that process is alive and its command line names `marker`."""
    try:
        pid = int(pidfile.read_text().strip())
        return pid if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except (OSError, ValueError):
        return None


class TarballServer:
    """`docker save`-format archives made on the NIC from the cache, served over HTTP."""

    def __init__(self, spec: LabSpec) -> None:
        self.spec = spec
        self.dir = Path(spec.workdir) / "run" / "nic" / "tarballs"
        self.daemon: daemons.Daemon | None = None

    def __enter__(self) -> TarballServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.daemon = daemons.start(
            "tarballs",
            [
                sys.executable,
                "-m",
                "http.server",
                str(TAR_PORT),
                "--bind",
                NIC_IP,
                "--directory",
                str(self.dir),
            ],
            self.dir.parent / "tarballs.log",
            netns=NIC,
        )
        try:
            daemons.wait_ready(
                self.daemon, lambda: answers(f"http://{NIC_IP}:{TAR_PORT}/"), 20, "HTTP answering"
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.daemon is not None:
            self.daemon.stop(timeout=5)
            daemons.reap()

    def make(self, image: str) -> str:
        """Export `image` from the NIC cache as a docker-archive; returns its URL."""
        name = image.rsplit("/", 1)[-1].replace(":", "_") + ".tar"
        path = self.dir / name
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.unlink(missing_ok=True)
            src = f"docker://{NIC_IP}:5000/{image}"
            argv = [
                "nsenter",
                f"--net=/run/netns/{NIC}",
                "skopeo",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                src,
                f"docker-archive:{tmp}:{image}",
            ]
            result = run_cmd(argv)
            if result.returncode != 0:
                raise BenchError(f"docker-archive of {image} failed: {result.stderr.strip()[-300:]}")
            os.replace(tmp, path)
        return f"http://{NIC_IP}:{TAR_PORT}/{name}"


def image_blobs(registry_url: str, image: str, *, platform: str = "linux/amd64") -> dict[str, int]:
    """digest -> size of the config and layers of `image` (`name:tag` as the registry at
    `registry_url` names it), read from its /v2/ API; BenchError with the URL if it can't."""
    name, _, tag = image.rpartition(":")
    url = f"{registry_url}/v2/{name}/manifests/{tag}"
    with session() as http:
        doc = _manifest(http, url)
        if "manifests" in doc:
            os_, arch = platform.split("/")
            chosen = [
                m
                for m in doc["manifests"]
                if m.get("platform", {}).get("os") == os_
                and m.get("platform", {}).get("architecture") == arch
            ]
            if not chosen:
                raise BenchError(f"{url}: no {platform} manifest in the index")
            url = url.rsplit("/", 1)[0] + "/" + chosen[0]["digest"]
            doc = _manifest(http, url)
    try:
        blobs = {doc["config"]["digest"]: int(doc["config"]["size"])}
        blobs.update({layer["digest"]: int(layer["size"]) for layer in doc["layers"]})
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"{url}: not an image manifest ({exc})") from exc
    return blobs


def _manifest(http: requests.Session, url: str) -> dict[str, Any]:
    try:
        resp = http.get(url, headers={"Accept": MANIFEST_TYPES}, timeout=60)
        if resp.status_code != 200:
            raise BenchError(f"GET {url}: HTTP {resp.status_code} {resp.text[:200]}")
        doc: dict[str, Any] = resp.json()
        return doc
    except (requests.RequestException, ValueError) as exc:
        raise BenchError(f"GET {url}: {exc}") from exc
