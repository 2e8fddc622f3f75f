"""Private containerd and dockerd instances, optionally inside a network namespace.

Each instance owns a short temp dir (unix socket paths must stay under 108
bytes) holding its root, state, socket, config and log. What cannot be moved
there is kept apart by name: containerd 1.6 shims put their sockets in
``/run/containerd/s/`` and runc its state in ``/run/containerd/runc/<namespace>``
whatever ``--root``/``--state`` say, so every Containerd gets its own
containerd namespace and cleans up its own containers by id.

A network namespace is entered with ``nsenter --net=/run/netns/NS`` only:
``ip netns exec`` also remounts ``/sys``, after which runc finds no cgroup
mount.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..dockerd import dockerd_argv
from ..lab.netns import NETNS_DIR, nsenter
from .procs import Proc, pid_alive, run, stop, stop_pid

MNT_DETACH = 2
CRI_PLUGIN = "io.containerd.grpc.v1.cri"


def netns_path(netns: str) -> str:
    """``/run/netns/NAME`` for a name; a path is returned unchanged."""
    return os.path.join(NETNS_DIR, netns)


def in_netns(argv: Sequence[str | os.PathLike[str]], netns: str | None) -> list[str]:
    """Prefix ``argv`` so it runs in ``netns`` (network namespace only)."""
    args = [os.fspath(a) for a in argv]
    return nsenter(netns, args) if netns else args


def _unescape_mountinfo(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory``, deepest first."""
    prefix = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape_mountinfo(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(directory: Path) -> None:
    """Detach every mount at or below ``directory`` (lazy, so busy mounts go too)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for point in mounts_under(directory):
        libc.umount2(point.encode(), MNT_DETACH)


def remove_tree(directory: Path) -> None:
    """Unmount anything left below ``directory``, then delete it."""
    if directory.exists():
        unmount_under(directory)
        shutil.rmtree(directory, ignore_errors=True)


def _short_tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class NetNS:
    """A named network namespace with loopback up; ``close()`` deletes it."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"t-{uuid.uuid4().hex[:8]}"
        self.path = netns_path(self.name)
        run(["ip", "netns", "add", self.name])
        try:
            run(in_netns(["ip", "link", "set", "lo", "up"], self.name))
        except BaseException:
            self.close()
            raise

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace."""
        return run(in_netns(argv, self.name), check=check)

    def close(self) -> None:
        run(["ip", "netns", "delete", self.name], check=False)


class Containerd:
    """A private containerd 1.6 with the CRI plugin disabled.

    ``namespace`` is the containerd namespace every ``ctr`` call uses (unique
    per instance unless given). With ``netns`` the daemon and every ``ctr``
    call run in that network namespace: ``ctr images pull`` fetches from the
    client process, not from the daemon.
    """

    def __init__(
        self,
        *,
        netns: str | None = None,
        namespace: str | None = None,
        snapshotter: str = "overlayfs",
        config_extra: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.netns = netns
        self.env = env
        self.namespace = namespace or f"t-{uuid.uuid4().hex[:10]}"
        self.snapshotter = snapshotter
        self.workdir = _short_tmpdir("ctrd-")
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        self.address = str(self.workdir / "containerd.sock")
        self.hosts_dir = self.workdir / "certs.d"
        self.config_path = self.workdir / "config.toml"
        self.log = self.workdir / "containerd.log"
        self.config_path.write_text(self.config() + config_extra)
        self.proc: Proc | None = None

    def config(self) -> str:
        """The config file (TOML, version 2) this instance runs with."""
        q = json.dumps  # a JSON string is a valid TOML basic string for these paths
        return (
            "version = 2\n"
            f"root = {q(str(self.root))}\n"
            f"state = {q(str(self.state))}\n"
            f"disabled_plugins = [{q(CRI_PLUGIN)}]\n"
            "[grpc]\n"
            f"  address = {q(self.address)}\n"
            "[plugins]\n"
            '  [plugins."io.containerd.internal.v1.opt"]\n'
            f"    path = {q(str(self.workdir / 'opt'))}\n"
        )

    def start(self) -> Containerd:
        """Start the daemon and wait until it answers."""
        if self.proc is None or not self.proc.running():
            argv = in_netns(["containerd", "--config", self.config_path], self.netns)
            self.proc = Proc(argv, self.log, env=self.env)
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until ``ctr version`` reaches the daemon."""
        assert self.proc is not None, "start() first"
        self.proc.wait_until(
            lambda: (
                os.path.exists(self.address) and self.ctr("version", check=False, timeout=10).returncode == 0
            ),
            timeout,
            "ctr version to reach the daemon",
        )

    def ctr(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``ctr --address A --namespace N ARGS`` (in the netns, if any)."""
        argv = ["ctr", "--address", self.address, "--namespace", self.namespace, *args]
        return run(in_netns(argv, self.netns), check=check, timeout=timeout)

    def pull(self, ref: str, *, plain_http: bool = True, hosts: bool = False) -> None:
        """``ctr images pull`` ``ref``; ``hosts`` uses ``hosts_dir`` (see ``mirror``)."""
        args = ["images", "pull"]
        if plain_http:
            args.append("--plain-http")
        if hosts:
            args += ["--hosts-dir", str(self.hosts_dir)]
        self.ctr(*args, ref, timeout=300)

    def mirror(self, registry_host: str, mirror_url: str) -> Path:
        """Write ``hosts_dir/<registry_host>/hosts.toml`` sending pulls to ``mirror_url``
        (plain HTTP allowed) before the registry itself."""
        directory = self.hosts_dir / registry_host
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "hosts.toml"
        path.write_text(
            f"server = {json.dumps('http://' + registry_host)}\n"
            f"[host.{json.dumps(mirror_url)}]\n"
            '  capabilities = ["pull", "resolve"]\n'
            "  skip_verify = true\n"
        )
        return path

    def image_digest(self, ref: str) -> str:
        """The target digest containerd recorded for image ``ref``."""
        for line in self.ctr("images", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return next(f for f in fields if f.startswith("sha256:"))
        raise KeyError(f"{ref} not in containerd namespace {self.namespace}")

    def _ids(self, kind: str) -> list[str]:
        result = self.ctr(kind, "ls", "-q", check=False, timeout=30)
        return result.stdout.split() if result.returncode == 0 else []

    def remove_containers(self) -> None:
        """Kill and delete every task and container in this instance's namespace."""
        for task in self._ids("tasks"):
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False, timeout=30)
            self.ctr("tasks", "delete", "--force", task, check=False, timeout=30)
        for container in self._ids("containers"):
            self.ctr("containers", "delete", container, check=False, timeout=30)

    def _our_shims(self) -> list[int]:
        """PIDs of shims our daemon started (their argv names our socket)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and b"containerd-shim" in argv[0] and self.address.encode() in argv:
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """Remove our containers, stop the daemon by PID, clean up every file it left."""
        if self.proc is not None and self.proc.running():
            self.remove_containers()
        if self.proc is not None:
            stop(self.proc)
        for pid in self._our_shims():
            stop_pid(pid, timeout=5)
        remove_tree(self.workdir)
        runc_state = Path("/run/containerd/runc") / self.namespace
        with contextlib.suppress(OSError):
            runc_state.rmdir()  # empty once every task of ours is deleted

    close = stop

    def __repr__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"<Containerd {self.address} ns={self.namespace}{where}>"


def unix_http_status(sock_path: str, path: str, timeout: float = 2.0) -> int | None:
    """Status code of ``GET path`` over a unix socket, or None if nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(sock_path)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            head = sock.recv(64).decode("latin-1")
    except OSError:
        return None
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


# dockerd refuses a key given both as a flag and in the config file.
DOCKERD_FLAG_KEYS = frozenset({"bridge", "iptables", "ip-masq", "data-root", "exec-root", "pidfile", "hosts"})


class Dockerd:
    """A private dockerd (and the containerd it manages) under a temp dir.

    Always started with ``--bridge=none --iptables=false --ip-masq=false`` and
    its own data root, exec root, pidfile and socket. ``config`` becomes the
    ``--config-file`` (e.g. ``{"registry-mirrors": [...], "insecure-registries":
    [...]}``). Note that dockerd treats 127.0.0.0/8 registries as insecure anyway.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        netns: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        clash = DOCKERD_FLAG_KEYS & set(config or {})
        if clash:
            raise ValueError(f"set by Dockerd itself, not in config: {sorted(clash)}")
        self.netns = netns
        self.workdir = _short_tmpdir("dockerd-")
        self.data_root = self.workdir / "data"
        self.exec_root = self.workdir / "exec"
        self.pidfile = self.workdir / "docker.pid"
        self.sock = str(self.workdir / "docker.sock")
        self.base_url = f"unix://{self.sock}"
        self.config_path = self.workdir / "daemon.json"
        self.log = self.workdir / "dockerd.log"
        self.containerd_namespace = f"t-{uuid.uuid4().hex[:10]}"
        self.config_path.write_text(json.dumps(dict(config or {}), indent=2))
        self.extra_args = list(extra_args)
        self.proc: Proc | None = None
        self._clients: list[Any] = []

    def args(self) -> list[str]:
        return dockerd_argv(
            data_root=self.data_root, exec_root=self.exec_root, pidfile=self.pidfile, sock=self.sock,
            config=self.config_path, containerd_namespace=self.containerd_namespace, extra=self.extra_args,
        )

    def start(self) -> Dockerd:
        """Start dockerd and wait until ``/_ping`` answers 200."""
        if self.proc is None or not self.proc.running():
            self.proc = Proc(in_netns(self.args(), self.netns), self.log)
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None, "start() first"
        self.proc.wait_until(
            lambda: unix_http_status(self.sock, "/_ping") == 200, timeout, "/_ping answering 200"
        )

    def client(self, timeout: int = 300) -> Any:
        """A ``docker.DockerClient`` for this daemon, closed by ``stop()``."""
        import docker  # only tests that use dockerd need the SDK

        client = docker.DockerClient(base_url=self.base_url, timeout=timeout)
        self._clients.append(client)
        return client

    def _managed_containerd_pid(self) -> int | None:
        """PID of the containerd this dockerd started, if it is still running."""
        try:
            pid = int((self.exec_root / "containerd" / "containerd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_containerd(pid) else None

    def _is_our_containerd(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return pid_alive(pid) and str(self.exec_root).encode() in cmdline

    def remove_containers(self) -> None:
        """Force-remove every container of this (private) daemon."""
        client = self.client(timeout=60)
        for container in client.containers.list(all=True):
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def stop(self) -> None:
        """Remove containers, stop dockerd by PID (then its containerd if it
        outlived it), unmount whatever is left and delete the temp dir."""
        try:
            if self.proc is not None and self.proc.running():
                with contextlib.suppress(Exception):
                    self.remove_containers()
        finally:
            for client in self._clients:
                client.close()
            self._clients.clear()
            containerd_pid = self._managed_containerd_pid()
            if self.proc is not None:
                stop(self.proc, timeout=20)
            if containerd_pid and self._is_our_containerd(containerd_pid):
                stop_pid(containerd_pid)
            remove_tree(self.workdir)

    close = stop

    def __repr__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"<Dockerd {self.base_url}{where}>"
