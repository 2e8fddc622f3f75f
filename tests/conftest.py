"""Shared fixtures: a clean environment, a seeded upstream registry, runtime factories.

Integration fixtures skip with a reason when not root or a program is missing,
except under CI (``CI`` set), where a missing prerequisite is an error: CI has
everything installed, so a skip there would hide a broken machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faas_accel.testbed import oci
from faas_accel.testbed.cache import Cache
from faas_accel.testbed.oci import Blob, Image, Index, Layer
from faas_accel.testbed.procs import PROXY_VARS
from faas_accel.testbed.registry import Registry
from faas_accel.testbed.runtimes import Containerd, Dockerd, NetNS
from nic_cache.store import Store
from tests.support.clock import FakeClock

APP_ENV_PREFIXES = ("NIC_CACHE_",)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a proxy setting or a NIC_CACHE_* variable from the outside."""
    for name in list(os.environ):
        if name in PROXY_VARS or name.startswith(APP_ENV_PREFIXES):
            monkeypatch.delenv(name)


def require(*programs: str, root: bool = True) -> None:
    """Skip (fail under CI) unless running as root with every program on PATH."""
    problems = []
    if root and os.geteuid() != 0:
        problems.append("needs root")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        problems.append(f"missing program(s): {', '.join(missing)}")
    if problems:
        reason = "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(f"integration prerequisites missing under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def upstream() -> Iterator[Registry]:
    """The session's upstream: a CNCF distribution registry on 127.0.0.1.

    Counts are cumulative for the session: compare ``blob_gets()`` before and
    after (``after - before``) rather than asserting absolute numbers.
    """
    require("docker-registry", "skopeo")
    registry = Registry()
    try:
        registry.start()
        yield registry
    finally:
        registry.close()


@pytest.fixture
def registry_factory() -> Iterator[Callable[..., Registry]]:
    """Start extra registries: ``make(proxy=None) -> Registry`` (started); all closed after."""
    require("docker-registry")
    made: list[Registry] = []

    def make(**kwargs: Any) -> Registry:
        registry = Registry(**kwargs)
        made.append(registry)
        return registry.start()

    try:
        yield make
    finally:
        _close_all(made)


@dataclass(frozen=True)
class Seeded:
    """What ``seeded`` pushed to ``upstream``, so tests know every digest.

    ``hello``, ``multilayer`` and ``multiarch``'s amd64 image share the
    busybox layer (``busybox``); ``app_a`` and ``app_b`` share ``app_base``.
    """

    registry: Registry
    hello: Image
    multiarch: Index
    multilayer: Image
    app_a: Image
    app_b: Image
    busybox: Layer
    app_base: Layer

    @property
    def by_name(self) -> dict[str, Blob]:
        """Repository:tag (without host) -> what was pushed there."""
        return {
            "lab/multiarch:1": self.multiarch,
            "lab/multilayer:1": self.multilayer,
            "lab/app-a:1": self.app_a,
            "lab/app-b:1": self.app_b,
            "lab/hello:1": self.hello,
        }

    def __getitem__(self, name: str) -> Blob:
        return self.by_name[name]

    def ref(self, name: str) -> str:
        """Full reference on the upstream, e.g. ``127.0.0.1:PORT/lab/hello:1``."""
        return f"{self.registry.host}/{name}"


HELLO_TEXT = "hello from nic-cache"


def build_seed_images(registry: Registry) -> Seeded:
    """Build (deterministically) the lab images; see ``Seeded``."""
    busybox = oci.busybox_layer()
    hello = oci.busybox_image(cmd=["echo", HELLO_TEXT])
    multiarch = oci.index(
        [
            oci.busybox_image({"etc/arch": b"amd64\n"}, cmd=["cat", "/etc/arch"]),
            oci.image(
                [oci.layer({"etc/arch": b"arm64\n"})], arch="arm64", variant="v8", cmd=["cat", "/etc/arch"]
            ),
        ]
    )
    multilayer = oci.busybox_image(
        extra_layers=[
            oci.random_layer(1_000_000, seed=1),
            oci.random_layer(1_500_000, seed=2),
            oci.random_layer(2_000_000, seed=3),
        ],
        cmd=["sh", "-c", "ls /data"],
    )
    app_base = oci.layer(
        {
            "bin/busybox": (oci.find_busybox().read_bytes(), 0o755),
            "bin/sh": oci.Symlink("busybox"),
            "bin/cat": oci.Symlink("busybox"),
            "etc/app-base": b"shared by app-a and app-b\n",
        }
    )
    app_a = oci.image([app_base, oci.layer({"app/name": b"app-a\n"})], cmd=["cat", "/app/name"])
    app_b = oci.image([app_base, oci.layer({"app/name": b"app-b\n"})], cmd=["cat", "/app/name"])
    return Seeded(
        registry=registry,
        hello=hello,
        multiarch=multiarch,
        multilayer=multilayer,
        app_a=app_a,
        app_b=app_b,
        busybox=busybox,
        app_base=app_base,
    )


@pytest.fixture(scope="session")
def seeded(upstream: Registry, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """``upstream`` with lab/multiarch:1, lab/multilayer:1, lab/app-a:1, lab/app-b:1
    and lab/hello:1 pushed, digests preserved."""
    seed = build_seed_images(upstream)
    layout = tmp_path_factory.mktemp("seed-layout")
    for name, obj in seed.by_name.items():
        tag = name.replace("/", "_").replace(":", "_")
        oci.write_layout(layout, tag, obj)
        oci.push(layout, tag, seed.ref(name))
    return seed


def _close_all(things: list[Any]) -> None:
    """Close each (newest first) even if one fails; re-raise the first failure."""
    first: BaseException | None = None
    for thing in reversed(things):
        try:
            thing.close()
        except BaseException as exc:  # keep closing the rest
            first = first or exc
    if first is not None:
        raise first


@pytest.fixture
def containerd_factory() -> Iterator[Callable[..., Containerd]]:
    """``make(netns=None, namespace=None, ...) -> Containerd`` (started); all stopped after."""
    require("containerd", "ctr", "runc", "nsenter")
    made: list[Containerd] = []

    def make(**kwargs: Any) -> Containerd:
        instance = Containerd(**kwargs)
        made.append(instance)
        return instance.start()

    try:
        yield make
    finally:
        _close_all(made)


@pytest.fixture
def dockerd_factory() -> Iterator[Callable[..., Dockerd]]:
    """``make(config=None, netns=None, extra_args=()) -> Dockerd`` (started); all stopped after."""
    require("dockerd", "containerd", "runc", "nsenter")
    made: list[Dockerd] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> Dockerd:
        instance = Dockerd(config, **kwargs)
        made.append(instance)
        return instance.start()

    try:
        yield make
    finally:
        _close_all(made)


@pytest.fixture
def netns_factory() -> Iterator[Callable[[], NetNS]]:
    """``make() -> NetNS``: a fresh network namespace with lo up; all deleted after."""
    require("ip", "nsenter")
    made: list[NetNS] = []

    def make() -> NetNS:
        ns = NetNS()
        made.append(ns)
        return ns

    try:
        yield make
    finally:
        _close_all(made)


LAB = "registry.lab"  # how the tests' image references name the seeded upstream


@pytest.fixture
def cache_factory(seeded: Seeded) -> Iterator[Callable[..., Cache]]:
    """`make(upstreams=None, **kw) -> Cache` (started; by default `registry.lab` is the seeded
    upstream); every cache closed after the test."""
    made: list[Cache] = []

    def make(upstreams: dict[str, str] | None = None, **kwargs: Any) -> Cache:
        cache = Cache(upstreams or {LAB: seeded.registry.url}, **kwargs)
        made.append(cache)
        return cache.start()

    try:
        yield make
    finally:
        for cache in made:
            cache.close()


@pytest.fixture
def cache(cache_factory: Callable[..., Cache]) -> Cache:
    """A fresh, empty cache whose `registry.lab` (also the default upstream) is the seeded one."""
    return cache_factory(default_upstream=LAB)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    """An empty store on the test's clock (closed after the test)."""
    s = Store(str(tmp_path / "data"), clock=clock)
    yield s
    s.close()


@pytest.fixture
def tmpfs_factory() -> Iterator[Callable[[str], Path]]:
    """``make("24m") -> Path``: a fresh tmpfs of that size (a small disk to fill up); all
    unmounted and removed after the test."""
    require("mount", "umount")
    import subprocess
    import tempfile

    made: list[Path] = []

    def make(size: str) -> Path:
        where = Path(tempfile.mkdtemp(prefix="fa-tmpfs-"))
        made.append(where)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        return where

    try:
        yield make
    finally:
        for where in made:
            subprocess.run(["umount", "-l", str(where)], check=False)
            where.rmdir()
