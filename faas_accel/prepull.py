"""Prepull: keep a VM's container runtime holding what its NIC cache holds and VMs deploy most.

The NIC's prewarm fills the NIC; a deploy still has to pull the image into the VM and unpack
it, which is most of a cached cold start. `faas-accel prepull` runs in each VM and pulls,
from the NIC only (no WAN traffic), the images the NIC holds completely, most popular first,
up to a count and a byte budget, in the mirror form the hook rewrites deploys to, so a deploy
finds its image already unpacked. `choose` is pure; the runtimes are thin wrappers.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from nic_cache.errors import RegistryError
from nic_cache.reference import parse_image

log = logging.getLogger("faas_accel.prepull")


class PrepullError(RuntimeError):
    """The NIC or the runtime could not be asked; the message says which and why."""


@dataclass(frozen=True)
class Candidate:
    """An image the NIC holds, as the admin API describes it."""

    image: str
    size: int
    complete: bool
    score: float = 0.0


def choose(
    cached: Iterable[Candidate],
    *,
    limit: int,
    budget: int = 0,
    only: Sequence[str] = (),
) -> list[str]:
    """Images to hold in the VM: complete on the NIC, most popular first (then the most
    recently listed), at most `limit` of them and `budget` bytes in all (0: no byte limit).
    `only` restricts the choice to those images (e.g. a stack file's)."""
    wanted = set(only)
    pool = [c for c in cached if c.complete and (not wanted or c.image in wanted)]
    pool.sort(key=lambda c: -c.score)  # stable: equal scores keep the NIC's order
    out: list[str] = []
    used = 0
    for c in pool:
        if len(out) >= limit:
            break
        if budget and used + c.size > budget:
            continue
        out.append(c.image)
        used += c.size
    return out


def candidates(images_doc: dict[str, Any], popular_doc: dict[str, Any]) -> list[Candidate]:
    """Join `GET /api/v1/images` and `GET /api/v1/popular` into candidates."""
    scores = {p["image"]: float(p.get("score", 0)) for p in popular_doc.get("images", [])}
    out = []
    for i in sorted(images_doc.get("images", []), key=lambda i: -float(i.get("fetched_at", 0))):
        complete = i.get("blobs_known", 0) > 0 and i.get("blobs_known") == i.get("blobs_stored")
        out.append(
            Candidate(i["image"], int(i.get("bytes_stored", 0)), complete, scores.get(i["image"], 0.0))
        )
    return out


class Runtime(Protocol):
    def images(self) -> set[str]: ...

    def pull(self, ref: str) -> None: ...


class ContainerdPuller:
    """`ctr images pull` into one containerd namespace (the one the provider deploys into)."""

    def __init__(self, address: str, namespace: str, hosts_dir: str | None, ctr: str = "ctr") -> None:
        self.base = [ctr, "--address", address, "--namespace", namespace]
        self.hosts_dir = hosts_dir

    def _ctr(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PrepullError(f"ctr {' '.join(args[:2])}: {exc}") from exc

    def images(self) -> set[str]:
        result = self._ctr("images", "ls", "-q", timeout=60)
        if result.returncode != 0:
            raise PrepullError(f"ctr images ls: {result.stderr.strip()}")
        return set(result.stdout.split())

    def pull(self, ref: str) -> None:
        args = ["images", "pull", "--plain-http"]
        if self.hosts_dir:
            args += ["--hosts-dir", self.hosts_dir]
        result = self._ctr(*args, ref)
        if result.returncode != 0:
            raise PrepullError(f"pull of {ref}: {result.stderr.strip().splitlines()[-1:]}")


class DockerPuller:
    """`docker pull` through the docker SDK (the VM's hook serves the NIC as a local registry)."""

    def __init__(self, base_url: str) -> None:
        import docker

        self.client = docker.DockerClient(base_url=base_url)

    def images(self) -> set[str]:
        return {tag for img in self.client.images.list() for tag in img.tags}

    def pull(self, ref: str) -> None:
        import docker.errors

        try:
            self.client.images.pull(ref)
        except docker.errors.APIError as exc:
            raise PrepullError(f"pull of {ref}: {exc}") from exc


@dataclass(frozen=True)
class PrepullResult:
    pulled: list[str]
    present: list[str]
    failed: dict[str, str]
    seconds: float


class Prepuller:
    """One VM's prepull: ask the NIC, pull what is missing, report."""

    def __init__(
        self,
        cache_url: str,
        token: str | None,
        mirror_host: str,
        runtime: Runtime,
        *,
        limit: int = 10,
        budget: int = 0,
        only: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_url = cache_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.mirror_host = mirror_host
        self.runtime = runtime
        self.limit, self.budget, self.only = limit, budget, tuple(only)
        self.clock = clock

    def _get(self, path: str) -> dict[str, Any]:
        try:
            resp = self.session.get(f"{self.cache_url}/api/v1/{path}", timeout=30)
        except requests.RequestException as exc:
            raise PrepullError(f"NIC cache at {self.cache_url} unreachable: {exc}") from exc
        with resp:
            if resp.status_code != 200:
                raise PrepullError(f"GET /api/v1/{path}: HTTP {resp.status_code} {resp.text[:200]}")
            doc: dict[str, Any] = resp.json()
            return doc

    def mirror_ref(self, image: str) -> str:
        """The reference the hook rewrites `image` to (what the provider will pull)."""
        return parse_image(image).mirror_form(self.mirror_host)

    def once(self) -> PrepullResult:
        t0 = self.clock()
        chosen = choose(
            candidates(self._get("images"), self._get(f"popular?limit={max(self.limit * 4, 20)}")),
            limit=self.limit,
            budget=self.budget,
            only=[str(parse_image(i)) for i in self.only],
        )
        local = self.runtime.images()
        pulled, present, failed = [], [], {}
        for image in chosen:
            try:
                ref = self.mirror_ref(image)
            except RegistryError as exc:
                failed[image] = str(exc)
                continue
            if ref in local:
                present.append(image)
                continue
            try:
                self.runtime.pull(ref)
                pulled.append(image)
                log.info("prepulled %s", ref)
            except PrepullError as exc:
                failed[image] = str(exc)
                log.warning("prepull of %s failed: %s", ref, exc)
        return PrepullResult(pulled, present, failed, self.clock() - t0)
