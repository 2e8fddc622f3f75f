"""Prefetch: fill an image's manifests and blobs through the same path as a live miss.

Every blob goes through `Fills.join`, so a prefetch and a client pulling the same image
share one upstream fetch per blob, whoever comes first. A *live* prefetch (the hook's, on a
deploy) behaves like a client. A *background* prefetch (prewarm) takes a slot of the shared
budget, is paced by it and gives way to live misses (nic_cache/prewarm/budget.py); finding a
blob already stored, it refreshes the blob's LRU time without counting a hit.

Pinned content may take at most `PIN_SHARE` of the capacity below the low watermark
(nic_cache/policy/pins.py decides): an image that would cross it is filled but not pinned,
and the prefetch says so.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import BlobUnknown, NameUnknown, NicCacheError, NoRoom
from .manifest import Descriptor, parse_manifest, select_platforms
from .policy.pins import pin_refusal
from .prewarm.budget import Budget
from .proxy import BlobHit, BlobPassthrough, Mirror
from .reference import Route, parse_image

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """How far a prefetch got; safe to read from another thread (snapshot with `as_dict`)."""

    image: str
    state: str = "running"  # running | done | failed
    priority: str = "live"  # live | background
    pinned: bool = False
    digest: str | None = None
    platforms: list[str] = field(default_factory=list)
    manifests: int = 0
    blobs_total: int = 0
    blobs_done: int = 0
    blobs_cached_before: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_cached_before: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Resolved:
    """An image's manifests (top first) and the blobs of the wanted platforms."""

    digest: str
    manifests: tuple[str, ...]
    blobs: dict[str, Descriptor]


class Prefetcher:
    """Fills images on request; one blob fill per digest across the whole cache."""

    def __init__(
        self,
        mirror: Mirror,
        *,
        platforms: tuple[str, ...],
        concurrency: int = 4,
        budget: Budget | None = None,
        record_pin: Callable[[str, str, str], None] | None = None,
        on_filled: Callable[[str], None] | None = None,
    ) -> None:
        self.mirror = mirror
        self.platforms = platforms
        self.concurrency = concurrency
        self.budget = budget or Budget(mirror.fills)
        self.record_pin = record_pin  # (owner, image, digest): who holds which digest pinned
        self.on_filled = on_filled  # (manifest digest) once all of an image is stored: transcode
        self._lock = threading.Lock()

    def route_for(self, image: str) -> tuple[Route, str]:
        """The upstream route and manifest reference of an image; raises on bad input."""
        ref = parse_image(image)
        if ref.registry not in self.mirror.upstreams.names():
            raise NameUnknown(
                f"registry {ref.registry!r} of {image!r} is not a configured upstream",
                detail={"registry": ref.registry},
            )
        return Route(ref.registry, ref.repository), ref.reference

    def start(
        self,
        image: str,
        *,
        platforms: tuple[str, ...] | None = None,
        wait: float | None = None,
        background: bool = False,
        limits: Mapping[str, int] | None = None,
        pin: bool = False,
        owner: str = "api",
        opted_out: bool = False,
    ) -> Progress:
        """Validate, start the prefetch in a thread, and wait at most `wait` seconds for it."""
        self.route_for(image)  # bad input is the caller's error, before any thread
        progress = Progress(image)
        thread = threading.Thread(
            target=self.run, args=(image,),
            kwargs={"platforms": platforms, "progress": progress, "background": background,
                    "limits": limits, "pin": pin, "owner": owner, "opted_out": opted_out},
            name="prefetch", daemon=True,
        )  # fmt: skip
        thread.start()
        thread.join(wait)
        return progress

    def run(
        self,
        image: str,
        *,
        platforms: tuple[str, ...] | None = None,
        progress: Progress | None = None,
        background: bool = False,
        limits: Mapping[str, int] | None = None,
        pin: bool = False,
        owner: str = "api",
        opted_out: bool = False,
    ) -> Progress:
        """Fill `image` for the wanted platforms; errors are recorded, not raised.

        A `background` prefetch shares the budget `limits` (default: the registered ones).
        With `pin`, the image's manifests and blobs are pinned as they land (and recorded as
        held by `owner`), so that eviction during the prefetch cannot take them. Once all of it
        is stored, `on_filled` gets the manifest digest (the transcoder), unless `opted_out`.
        """
        progress = progress or Progress(image)
        wanted = platforms or self.platforms
        progress.platforms = list(wanted)
        progress.priority = "background" if background else "live"
        t0 = time.monotonic()
        try:
            route, reference = self.route_for(image)
            resolved = self.resolve(route, reference, wanted)
            progress.digest = resolved.digest
            progress.manifests = len(resolved.manifests)
            if pin and (refused := self._pin_refusal(resolved)):
                progress.errors.append(refused)
                pin = False
            if pin:
                if self.record_pin is not None:
                    self.record_pin(owner, str(parse_image(image)), resolved.digest)
                self.mirror.store.set_pinned(resolved.manifests, True)
                progress.pinned = True
            progress.blobs_total = len(resolved.blobs)
            progress.bytes_total = sum(b.size or 0 for b in resolved.blobs.values())
            fill = functools.partial(self._fill_background, limits) if background else self._fill_live
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="prefetch-blob") as pool:
                futures = [pool.submit(self._fill, fill, route, b, progress, pin)
                           for b in resolved.blobs.values()]  # fmt: skip
                for fut in futures:
                    fut.result()
            progress.state = "failed" if progress.errors else "done"
            if progress.state == "done" and self.on_filled is not None and not opted_out:
                self.on_filled(resolved.digest)
        except NicCacheError as exc:
            progress.errors.append(str(exc))
            progress.state = "failed"
        except Exception as exc:  # a prefetch thread must report, never die silently
            log.exception("prefetch of %s crashed", image)
            progress.errors.append(f"internal error: {exc}")
            progress.state = "failed"
        progress.seconds = round(time.monotonic() - t0, 3)
        return progress

    def resolve(self, route: Route, reference: str, platforms: tuple[str, ...]) -> Resolved:
        """Fetch (through the cache) the manifests of an image and list the blobs to fill."""
        top = self.mirror.manifest(route, reference)
        parsed = parse_manifest(top.body, top.media_type)
        manifests = [top.digest]
        images = [parsed]
        if parsed.is_index:
            images = []
            for child in select_platforms(parsed, platforms):
                child_manifest = self.mirror.manifest(route, child.digest)
                images.append(parse_manifest(child_manifest.body, child_manifest.media_type))
                manifests.append(child.digest)
        blobs: dict[str, Descriptor] = {}
        for m in images:
            blobs.update({b.digest: b for b in m.blobs})
        return Resolved(top.digest, tuple(manifests), blobs)

    def _pin_refusal(self, resolved: Resolved) -> str | None:
        """Why pinning this image would pin too much (None when it may be pinned)."""
        store = self.mirror.store
        if store.capacity <= 0:
            return None
        pinned = store.pinned()
        held = sum(info.size for d in pinned if (info := store.stat(d)) is not None)
        adding = sum(b.size or 0 for d, b in resolved.blobs.items() if d not in pinned)
        return pin_refusal(capacity=store.capacity, low_watermark=store.low_watermark,
                           held=held, adding=adding)  # fmt: skip

    def plan(self, image: str, *, platforms: tuple[str, ...] | None = None) -> dict[str, Any]:
        """What a prefetch of `image` would fetch: its blobs, which are missing, how many bytes.

        Manifests are fetched through the cache (and kept: they are needed to know the
        blobs); no blob is.
        """
        wanted = platforms or self.platforms
        route, reference = self.route_for(image)
        resolved = self.resolve(route, reference, wanted)
        cached = {d: self.mirror.store.stat(d) is not None for d in resolved.blobs}
        missing = [b for d, b in resolved.blobs.items() if not cached[d]]
        return {
            "image": image,
            "digest": resolved.digest,
            "platforms": list(wanted),
            "manifests": len(resolved.manifests),
            "blobs": [{"digest": d, "size": b.size, "cached": cached[d]} for d, b in resolved.blobs.items()],
            "blobs_total": len(resolved.blobs),
            "blobs_missing": len(missing),
            "bytes_total": sum(b.size or 0 for b in resolved.blobs.values()),
            "bytes_missing": sum(b.size or 0 for b in missing),
        }

    def _fill(
        self,
        fill: Callable[[Route, Descriptor, Progress], bool],
        route: Route,
        blob: Descriptor,
        progress: Progress,
        pin: bool,
    ) -> None:
        try:
            cached = fill(route, blob, progress)
            if pin:
                self.mirror.store.set_pinned([blob.digest], True)
            with self._lock:
                progress.blobs_done += 1
                if cached:
                    progress.blobs_cached_before += 1
                    progress.bytes_cached_before += blob.size or 0
        except NicCacheError as exc:
            with self._lock:
                progress.errors.append(f"{blob.digest}: {exc}")

    def _fill_live(self, route: Route, blob: Descriptor, progress: Progress) -> bool:
        """Fill like a client would; True if the blob was already stored."""
        got = self.mirror.blob(route, blob.digest, blob.media_type)
        if isinstance(got, BlobPassthrough):  # nothing to gain from reading it
            got.upstream.close()
            raise NoRoom(f"not cached ({got.reason}): no room to store it", reason=got.reason)
        if isinstance(got, BlobHit):
            os.close(got.fd)
            self._add(progress, got.size)
            return True
        for chunk in self.mirror.stream(got):
            self._add(progress, len(chunk))
        return False

    def _fill_background(
        self, limits: Mapping[str, int] | None, route: Route, blob: Descriptor, progress: Progress
    ) -> bool:
        """Fill within the prewarm budget; True if the blob was already stored."""
        store, digest = self.mirror.store, blob.digest
        info = store.stat(digest)
        if info is None:
            with self.budget.slot(limits) as pacer:
                fill = self.mirror.fills.join(
                    digest,
                    lambda: self.mirror.upstreams[route.upstream].open_blob(route.repository, digest),
                    blob.media_type,
                    pacer=pacer,
                )
                if fill is not None:
                    for chunk in self.mirror.fills.stream(digest, fill, live=False):
                        self._add(progress, len(chunk))
                    return False
            info = store.stat(digest)  # landed while we waited for a slot
            if info is None:
                raise BlobUnknown(f"blob {digest} was evicted right after it was filled")
        store.refresh([digest])
        self._add(progress, info.size)
        return True

    def _add(self, progress: Progress, nbytes: int) -> None:
        with self._lock:
            progress.bytes_done += nbytes
