"""Prepull: keep a VM's container runtime holding what its NIC cache holds and VMs deploy most.

The NIC's prewarm fills the NIC; a deploy still has to pull the image into the VM and unpack
it, which is most of a cached cold start. `faas-accel prepull` runs in each VM and pulls,
from the NIC only, the images the NIC holds completely, most popular first, up to a count and
a byte budget, under the mirror tag the hook rewrites deploys to
(`<mirror-host>/<registry>/<repo>:<tag>`), so a deploy finds its image already unpacked.

Prepull gives the NIC no reason to contact the upstream (but see eviction below): an image is
pulled *by digest*, `<mirror-host>/<registry>/<repo>@<digest>` with the digest
`GET /api/v1/images` lists for the tag, which the NIC serves from its store. A pull by tag would,
once the NIC's `tag_ttl` has passed, make it revalidate the tag upstream (a HEAD, and on a new
digest a manifest whose layers then cross the WAN). The pulled image is then named with the
mirror tag (containerd: `ctr images tag --force`; docker: a tag), and an image is *present*
only when the VM's image under the mirror tag has the NIC's digest: a VM holding an older
digest under the same tag gets the new one. Pulls by digest are not counted as popularity by
the NIC (only manifest pulls by tag are), so prepull does not feed its own choices back into
the ranking.

The by-digest name: containerd drops it once the mirror tag points at the image, so the tag
is the image's only name and, when the tag moves to a new digest, containerd's garbage
collector frees the old content (a running container keeps what it uses). docker keeps it:
the repo digest is where docker records the manifest digest that `present` compares, and an
image superseded under the mirror tag keeps that name until removed (`docker rmi`).

Known limitations:

- Completeness is per tag, as the NIC reports it (`blobs_known == blobs_stored`). For a
  multi-arch index `blobs_known` counts every platform's manifest while the NIC fills only its
  configured platforms, so such images are never complete and never chosen.
- The NIC may evict (or an operator delete) part of an image between the listing and the
  pull. The NIC then fetches what is gone from the upstream *by digest* (no tag revalidation,
  but those bytes do cross the WAN once) and the pull succeeds; with the upstream unreachable
  the NIC answers with an error, the pull fails and the image is reported in `failed` (and
  `prepull once` exits 1); the next round chooses it again only if the NIC lists it complete.

Requested images (`only`, the command line's `--image`) that the NIC does not hold completely
are reported as `missing` and never pulled; `prepull once` then exits 1. The admin token is
best passed in `NIC_CACHE_ADMIN_TOKEN` (a `--token` value shows in `ps`).

The choice itself (`choose`, `missing`, `Candidate`) is the policy core's
(nic_cache/policy/hold.py); `candidates` is pure too; the NIC is asked through
faas_accel/cacheapi.py; the runtimes are thin wrappers. Every error (the admin API's, ctr's
exit status, the docker SDK's and requests' exceptions) becomes `PrepullError`. The
fan-out (fanout.py) pulls what other VMs just deployed; cli.py is `faas-accel prepull`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from nic_cache.errors import RegistryError
from nic_cache.policy.hold import Candidate, choose, missing
from nic_cache.reference import parse_image, validate_digest

from ..cacheapi import CacheAPI, CacheAPIError, CachedImage, PopularImage

log = logging.getLogger("faas_accel.prepull")


class PrepullError(RuntimeError):
    """The NIC or the runtime could not be asked; the message says which and why."""


def candidates(images: Iterable[CachedImage], popular: Iterable[PopularImage]) -> list[Candidate]:
    """Join what the NIC holds (`GET /api/v1/images`) and how it ranks it (`GET /api/v1/popular`)
    into candidates, newest first. An image without a digest is never complete."""
    scores = {p.image: p.score for p in popular}
    return [
        Candidate(
            i.image,
            i.digest or "",
            i.bytes_stored,
            bool(i.digest) and i.blobs_known > 0 and i.blobs_known == i.blobs_stored,
            scores.get(i.image, 0.0),
        )
        for i in sorted(images, key=lambda i: -i.fetched_at)
    ]


class Runtime(Protocol):
    """A VM's container runtime, as prepull needs it."""

    def digests(self) -> dict[str, set[str]]:
        """Each local image name -> the manifest digests it is known by.

        Raises PrepullError when the runtime cannot be asked.
        """
        ...

    def pull(self, source: str, name: str) -> None:
        """Pull `source` (a by-digest reference) and name it `name`, replacing whatever
        `name` pointed at. Raises PrepullError when the pull or the naming fails."""
        ...


class ContainerdPuller:
    """`ctr images pull` into one containerd namespace (the one the provider deploys into)."""

    reads_zstd = True  # containerd >= 1.5 unpacks zstd layers (the NIC's variants)

    def __init__(
        self, address: str, namespace: str, hosts_dir: str | None, ctr: str = "ctr", user: str | None = None
    ) -> None:
        self.base = [ctr, "--address", address, "--namespace", namespace]
        self.hosts_dir = hosts_dir
        self.user = user  # the VM's registry credential (user:password): the NIC checks it

    def _ctr(self, *args: str, timeout: float = 900) -> str:
        what = f"ctr {' '.join(args[:2])}"
        try:
            result = subprocess.run(
                [*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PrepullError(f"{what}: {exc}") from exc
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise PrepullError(f"{what}: {lines[-1] if lines else f'exit status {result.returncode}'}")
        return result.stdout

    def digests(self) -> dict[str, set[str]]:
        return ctr_digests(self._ctr("images", "ls", timeout=60))

    def in_use(self) -> set[str]:
        """Images the namespace's containers were created from (`ctr containers ls`: ID IMAGE RUNTIME)."""
        lines = self._ctr("containers", "ls", timeout=60).splitlines()[1:]
        return {f[1] for f in (line.split() for line in lines) if len(f) > 1}

    def remove(self, name: str) -> None:
        self._ctr("images", "rm", name, timeout=60)

    def pull(self, source: str, name: str) -> None:
        args = ["images", "pull", "--plain-http"]
        if self.user:
            args += ["--user", self.user]
        if self.hosts_dir:
            args += ["--hosts-dir", self.hosts_dir]
        self._ctr(*args, source)
        self._ctr("images", "tag", "--force", source, name, timeout=60)
        try:
            self._ctr("images", "rm", source, timeout=60)
        except PrepullError as exc:  # the image is in place under `name`; only a spare name is left
            log.warning("could not drop the by-digest name %s: %s", source, exc)


class DockerPuller:
    """dockerd through the docker SDK (the VM's hook serves the NIC as a local registry).

    The client is made on first use, so a dockerd that is not up yet fails a round, not the
    daemon, and `prepull` never contacts dockerd before it has something to pull.
    """

    reads_zstd = False  # Docker 20.10 fails on zstd layers ("invalid tar header")

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._client: Any = None

    def in_use(self) -> set[str]:
        """Image names the daemon's containers (any state) were created from."""
        found = self._call("list containers", lambda api: api.containers(all=True))
        return {str(c.get("Image")) for c in found}

    def remove(self, name: str) -> None:
        self._call(f"remove {name}", lambda api: api.remove_image(name))

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        import docker
        import docker.errors

        path = self.base_url.removeprefix("unix://")
        if path != self.base_url and not os.path.exists(path):
            # also spares the SDK's connect, which leaks its socket when the path is missing
            raise PrepullError(f"docker at {self.base_url}: {what}: no socket at {path}, is dockerd up?")
        try:
            if self._client is None:
                self._client = docker.DockerClient(base_url=self.base_url)
            return fn(self._client.api)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise PrepullError(f"docker at {self.base_url}: {what}: {exc}") from exc

    def digests(self) -> dict[str, set[str]]:
        return docker_digests(self._call("list images", lambda api: api.images()))

    def pull(self, source: str, name: str) -> None:
        repo, _, digest = source.partition("@")
        name_repo, tag = _split_tag(name)

        def pull_and_tag(api: Any) -> None:
            for event in api.pull(repo, tag=digest, stream=True, decode=True):
                if "error" in event:  # dockerd reports a failed pull in the stream, not the status
                    raise PrepullError(f"pull of {source}: {event['error']}")
            if not api.tag(source, name_repo, tag, force=True):
                raise PrepullError(f"tagging {source} as {name} failed")

        self._call(f"pull of {source}", pull_and_tag)


def ctr_digests(listing: str) -> dict[str, set[str]]:
    """Image name -> {target digest} from `ctr images ls` output."""
    out: dict[str, set[str]] = {}
    # REF TYPE DIGEST SIZE PLATFORMS LABELS; SIZE holds a space ("2.1 MiB"), DIGEST does not
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[2].startswith("sha256:"):
            out[fields[0]] = {fields[2]}
    return out


def docker_digests(listing: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """Tag -> the manifest digests docker knows its image by in the tag's repository, from
    `GET /images/json` (a tag's digests are its image's `RepoDigests` of the same repo)."""
    out: dict[str, set[str]] = {}
    for img in listing:
        repo_digests = [d.partition("@") for d in img.get("RepoDigests") or []]
        for tag in img.get("RepoTags") or []:
            repo = _split_tag(tag)[0]
            out[tag] = {digest for r, _, digest in repo_digests if r == repo}
    return out


def _split_tag(name: str) -> tuple[str, str]:
    """`host:port/repo:tag` -> (`host:port/repo`, `tag`)."""
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return repo, tag


@dataclass(frozen=True)
class PrepullResult:
    """One round: images pulled, already present, failed (with why), and requested images the
    NIC does not hold completely (`missing`, never pulled)."""

    pulled: list[str]
    present: list[str]
    failed: dict[str, str]
    missing: list[str]
    seconds: float


class Prepuller:
    """One VM's prepull: ask the NIC, pull what is missing by digest, report.

    `only` images are normalized here (`python:3.12` -> `docker.io/library/python:3.12`);
    an unparsable one raises RegistryError.
    """

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
        self.api = CacheAPI(cache_url, token, timeout=30.0)
        self.mirror_host = mirror_host
        self.runtime = runtime
        self.limit, self.budget = limit, budget
        self.only = tuple(str(parse_image(i)) for i in only)
        self.clock = clock

    def close(self) -> None:
        """Close the connections to the NIC."""
        self.api.close()

    @contextlib.contextmanager
    def nic(self) -> Iterator[CacheAPI]:
        """The NIC's admin API, its errors raised as PrepullError."""
        try:
            yield self.api
        except CacheAPIError as exc:
            raise PrepullError(str(exc)) from exc

    def refs(self, candidate: Candidate) -> tuple[str, str]:
        """(by-digest reference to pull, mirror tag to name it) for a candidate.

        Raises RegistryError for an image the hook cannot rewrite or a digest not sha256.
        """
        ref = parse_image(candidate.image)
        by_digest = dataclasses.replace(ref, tag=None, digest=validate_digest(candidate.digest))
        return by_digest.mirror_form(self.mirror_host), ref.mirror_form(self.mirror_host)

    def once(self) -> PrepullResult:
        """One round. Raises PrepullError when the NIC or the runtime cannot be asked; a
        failed pull is reported in the result instead."""
        t0 = self.clock()
        with self.nic() as api:
            cached = candidates(api.images(), api.popular(max(self.limit * 4, 20)))
        chosen = choose(cached, limit=self.limit, budget=self.budget, only=self.only)
        lacking = missing(cached, self.only)
        local = self.runtime.digests() if chosen else {}
        pulled, present, failed = [], [], {}
        for i, c in enumerate(chosen, 1):
            try:
                source, name = self.refs(c)
            except RegistryError as exc:
                failed[c.image] = str(exc)
                continue
            if c.digest in local.get(name, set()):
                present.append(c.image)
                continue
            log.info("pulling %s (%d of %d, %.1f MB) from the NIC", c.image, i, len(chosen), c.size / 1e6)
            try:
                self.runtime.pull(source, name)
                pulled.append(c.image)
                log.info("prepulled %s as %s", source, name)
            except PrepullError as exc:
                failed[c.image] = str(exc)
                log.warning("prepull of %s failed: %s", source, exc)
        return PrepullResult(pulled, present, failed, lacking, self.clock() - t0)


def serve(once: Callable[[], PrepullResult], every: float, stop: threading.Event) -> None:
    """Run `once` now and then every `every` seconds until `stop` is set.

    A round that fails is logged and the next one runs anyway: the daemon outlives a NIC or
    runtime restart, and a bug in one round.
    """
    while not stop.is_set():
        try:
            r = once()
        except PrepullError as exc:
            log.warning("round failed: %s", exc)
        except Exception:
            log.exception("round crashed")
        else:
            log.info(
                "round: %d pulled, %d present, %d failed, %d missing in %.1f s",
                len(r.pulled),
                len(r.present),
                len(r.failed),
                len(r.missing),
                r.seconds,
            )
            if r.missing:
                log.warning("not complete on the NIC, not pulled: %s", ", ".join(r.missing))
        stop.wait(every)
