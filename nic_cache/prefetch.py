"""Prefetch: fill an image's manifests and blobs through the same path as a live miss."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .errors import NameUnknown, NicCacheError
from .manifest import Descriptor, ParsedManifest, parse_manifest, select_platforms
from .proxy import BlobHit, Mirror
from .reference import Route, parse_image

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """How far a prefetch got; safe to read from another thread (snapshot with `as_dict`)."""

    image: str
    state: str = "running"  # running | done | failed
    digest: str | None = None
    platforms: list[str] = field(default_factory=list)
    manifests: int = 0
    blobs_total: int = 0
    blobs_done: int = 0
    blobs_cached_before: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Prefetcher:
    """Fills images on request; one blob fill per digest across the whole cache."""

    def __init__(self, mirror: Mirror, *, platforms: tuple[str, ...], concurrency: int = 4) -> None:
        self.mirror = mirror
        self.platforms = platforms
        self.concurrency = concurrency
        self._lock = threading.Lock()

    def route_for(self, image: str) -> tuple[Route, str]:
        """The upstream route and manifest reference of an image; raises on bad input."""
        ref = parse_image(image)
        if ref.registry not in self.mirror.upstreams.names():
            raise NameUnknown(f"registry {ref.registry!r} of {image!r} is not a configured upstream")
        return Route(ref.registry, ref.repository), ref.reference

    def start(
        self, image: str, *, platforms: tuple[str, ...] | None = None, wait: float | None = None
    ) -> Progress:
        """Validate, start the prefetch in a thread, and wait at most `wait` seconds for it."""
        self.route_for(image)  # bad input is the caller's error, before any thread
        progress = Progress(image)
        thread = threading.Thread(
            target=self.run, args=(image,), kwargs={"platforms": platforms, "progress": progress},
            name="prefetch", daemon=True,
        )
        thread.start()
        thread.join(wait)
        return progress

    def run(
        self, image: str, *, platforms: tuple[str, ...] | None = None, progress: Progress | None = None
    ) -> Progress:
        """Fill `image` for the wanted platforms; errors are recorded, not raised."""
        progress = progress or Progress(image)
        wanted = platforms or self.platforms
        progress.platforms = list(wanted)
        t0 = time.monotonic()
        try:
            route, reference = self.route_for(image)
            top = self.mirror.manifest(route, reference)
            progress.digest = top.digest
            parsed = parse_manifest(top.body, top.media_type)
            progress.manifests = 1
            images: list[ParsedManifest] = [parsed]
            if parsed.is_index:
                images = []
                for child in select_platforms(parsed, wanted):
                    child_manifest = self.mirror.manifest(route, child.digest)
                    images.append(parse_manifest(child_manifest.body, child_manifest.media_type))
                    progress.manifests += 1
            blobs: dict[str, Descriptor] = {}
            for m in images:
                blobs.update({b.digest: b for b in m.blobs})
            progress.blobs_total = len(blobs)
            progress.bytes_total = sum(b.size or 0 for b in blobs.values())
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="prefetch-blob") as pool:
                for fut in [pool.submit(self._fill, route, b, progress) for b in blobs.values()]:
                    fut.result()
            progress.state = "failed" if progress.errors else "done"
        except NicCacheError as exc:
            progress.errors.append(str(exc))
            progress.state = "failed"
        except Exception as exc:  # a prefetch thread must report, never die silently
            log.exception("prefetch of %s crashed", image)
            progress.errors.append(f"internal error: {exc}")
            progress.state = "failed"
        progress.seconds = round(time.monotonic() - t0, 3)
        return progress

    def _fill(self, route: Route, blob: Descriptor, progress: Progress) -> None:
        try:
            got = self.mirror.blob(route, blob.digest, blob.media_type)
            if isinstance(got, BlobHit):
                os.close(got.fd)
                with self._lock:
                    progress.blobs_cached_before += 1
                    progress.bytes_done += got.size
            else:
                for chunk in self.mirror.stream(got):
                    with self._lock:
                        progress.bytes_done += len(chunk)
            with self._lock:
                progress.blobs_done += 1
        except NicCacheError as exc:
            with self._lock:
                progress.errors.append(f"{blob.digest}: {exc}")
