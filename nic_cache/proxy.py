"""Pull-through logic: the local store first, the upstream only on "unknown".

Manifests by digest and blobs are immutable and served from the store forever once
verified. Tags are trusted for `tag_ttl`, then revalidated with a HEAD (cheap, and not
counted by Docker Hub's rate limit); when the upstream cannot be reached the cached digest
is served. Blob misses go through `Fills`, so each blob crosses the WAN once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import locks
from .config import Config
from .credentials import Credential
from .errors import BlobUnknown, DigestMismatch, NoRoom, StoreError, UpstreamUnavailable
from .fill import Fill, Fills
from .manifest import ALL_TYPES, accepts, parse_manifest
from .reference import Route, is_digest, resolve_route
from .store import Store
from .upstream import BlobStream, Upstreams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestResult:
    """A manifest ready to send."""

    body: bytes
    media_type: str
    digest: str
    source: str  # "hit", "revalidated", "stale", "miss"


@dataclass(frozen=True)
class BlobHit:
    """A stored blob: an open descriptor the caller must close."""

    fd: int
    size: int


@dataclass(frozen=True)
class BlobMiss:
    """A blob being filled; stream it with `Mirror.stream`."""

    digest: str
    fill: Fill


@dataclass(frozen=True)
class BlobPassthrough:
    """A blob the store has no room for, streamed from the upstream uncached (`chunks`)."""

    digest: str
    upstream: BlobStream
    reason: str  # NoRoom.reason: too_big | budget | disk_full

    @property
    def size(self) -> int | None:
        return self.upstream.size

    def chunks(self) -> Iterator[bytes]:
        """The upstream's bytes, hashed on the way; the last byte is sent only if they match
        the digest, so a corrupt pass-through never looks complete either."""
        h = hashlib.sha256()
        held = b""
        try:
            for chunk in self.upstream.chunks():
                if not chunk:
                    continue
                h.update(chunk)
                if held:
                    yield held
                held = chunk
            got = f"sha256:{h.hexdigest()}"
            if got != self.digest:
                raise DigestMismatch(f"upstream bytes of {self.digest} hash to {got}")
            if held:
                yield held
        finally:
            self.upstream.close()


class Mirror:
    """The pull-through mirror over a store, the upstreams and the fill coordinator."""

    def __init__(
        self,
        config: Config,
        store: Store,
        upstreams: Upstreams,
        fills: Fills,
        *,
        clock: Callable[[], float] = time.time,
        on_passthrough: Callable[[str], None] = lambda reason: None,
        on_manifest: Callable[[str, str, str], None] = lambda upstream, repository, digest: None,
    ) -> None:
        self.config = config
        self.store = store
        self.upstreams = upstreams
        self.fills = fills
        self.clock = clock
        self.on_passthrough = on_passthrough
        self.on_manifest = on_manifest  # (upstream, repository, digest): kept for that repository

    def route(self, name: str, ns: str | None) -> Route:
        """Which upstream and repository a request path names."""
        return resolve_route(
            name, ns=ns, upstreams=self.upstreams.names(),
            default_upstream=self.config.default_upstream,
        )

    # -- manifests ------------------------------------------------------------------------

    def manifest(
        self, route: Route, reference: str, accept: str | None = None, client: Credential | None = None
    ) -> ManifestResult:
        """A manifest by tag or digest; raises ManifestUnknown, Upstream* errors.

        Access is the caller's check (nic_cache/access.py); `client` is used upstream only
        for an upstream the cache has no credentials of its own for.
        """
        as_client = self._fetch_as(route, client)
        if is_digest(reference):
            return self._manifest_by_digest(route, reference, as_client)
        with self._tag_lock(route, reference):
            return self._manifest_by_tag(route, reference, accept, as_client)

    def _fetch_as(self, route: Route, client: Credential | None) -> Credential | None:
        """Fill with the cache's credentials; with the client's where the cache has none."""
        cfg = self.config.upstreams.get(route.upstream)
        if client is None or client.anonymous or (cfg is not None and cfg.username is not None):
            return None
        return client

    def _manifest_by_digest(self, route: Route, digest: str, client: Credential | None) -> ManifestResult:
        try:
            body, info = self.store.read_bytes(digest)
            return ManifestResult(body, info.media_type or "", digest, "hit")
        except BlobUnknown:
            pass
        fetched = self.upstreams[route.upstream].get_manifest(route.repository, digest, ALL_TYPES, client)
        return self._keep_manifest(route, fetched.body, fetched.media_type, digest, None)

    def _manifest_by_tag(
        self, route: Route, tag: str, accept: str | None, client: Credential | None
    ) -> ManifestResult:
        up = self.upstreams[route.upstream]
        entry = self.store.get_tag(route.upstream, route.repository, tag)
        cached: tuple[bytes, str] | None = None
        if entry is not None:
            with contextlib.suppress(BlobUnknown):
                body, _ = self.store.read_bytes(entry.digest)
                cached = (body, entry.media_type)
        if entry is not None and cached is not None and accepts(accept, entry.media_type):
            if self.clock() - entry.fetched_at < self.config.tag_ttl:
                return ManifestResult(cached[0], cached[1], entry.digest, "hit")
            try:
                head = up.head_manifest(route.repository, tag, ALL_TYPES, client)
            except UpstreamUnavailable as exc:
                log.warning("serving stale %s/%s:%s: %s", route.upstream, route.repository, tag, exc)
                return ManifestResult(cached[0], cached[1], entry.digest, "stale")
            if head.digest == entry.digest:
                self.store.set_tag(route.upstream, route.repository, tag, entry.digest, cached[1])
                return ManifestResult(cached[0], cached[1], entry.digest, "revalidated")
        try:
            fetched = up.get_manifest(route.repository, tag, ALL_TYPES, client)
        except UpstreamUnavailable:
            if entry is None or cached is None:
                raise
            log.warning("serving stale %s/%s:%s: upstream down", route.upstream, route.repository, tag)
            return ManifestResult(cached[0], cached[1], entry.digest, "stale")
        digest = "sha256:" + hashlib.sha256(fetched.body).hexdigest()
        if fetched.digest and fetched.digest.startswith("sha256:") and fetched.digest != digest:
            raise DigestMismatch(
                f"upstream manifest for {route.repository}:{tag} hashes to {digest}, "
                f"but upstream said {fetched.digest}"
            )
        result = self._keep_manifest(route, fetched.body, fetched.media_type, digest, tag)
        return ManifestResult(result.body, result.media_type, result.digest, "miss")

    def _keep_manifest(
        self, route: Route, body: bytes, media_type: str, digest: str, tag: str | None
    ) -> ManifestResult:
        parsed = parse_manifest(body, media_type)
        media_type = media_type or parsed.media_type
        if media_type not in ALL_TYPES:  # e.g. text/plain from a sloppy server
            media_type = parsed.media_type
        try:
            self.store.put_bytes(digest, body, media_type)
            self.store.link_manifest(digest, [c.digest for c in parsed.children])
            if tag is not None:
                self.store.set_tag(route.upstream, route.repository, tag, digest, media_type)
        except (NoRoom, StoreError) as exc:  # verified bytes in hand: serve them uncached
            log.warning("manifest %s served without storing it: %s", digest, exc)
            self.on_passthrough("disk_full")
        self.on_manifest(route.upstream, route.repository, digest)
        return ManifestResult(body, media_type, digest, "miss")

    @contextlib.contextmanager
    def _tag_lock(self, route: Route, tag: str) -> Iterator[None]:
        """One revalidation of a tag at a time across all workers."""
        key = hashlib.sha256(f"{route.upstream}/{route.repository}:{tag}".encode()).hexdigest()
        with locks.held_lock(os.path.join(self.store.tmp_dir, f"tag-{key[:32]}.lock")):
            yield

    # -- blobs ----------------------------------------------------------------------------

    def blob(
        self, route: Route, digest: str, media_type: str | None = None, client: Credential | None = None
    ) -> BlobHit | BlobMiss | BlobPassthrough:
        """Open a stored blob, or start/join its fill, or (no room to store it) stream it
        through uncached; raises BlobUnknown, Upstream* errors."""
        for _ in range(3):
            with contextlib.suppress(BlobUnknown):
                fd, info = self.store.open(digest)
                return BlobHit(fd, info.size)
            try:
                fill = self.fills.join(
                    digest,
                    lambda: self.upstreams[route.upstream].open_blob(
                        route.repository, digest, self._fetch_as(route, client)
                    ),
                    media_type,
                )
            except NoRoom as exc:
                if not isinstance(exc.stream, BlobStream):
                    raise
                log.warning("streaming %s through uncached: %s", digest, exc)
                self.on_passthrough(exc.reason)
                return BlobPassthrough(digest, exc.stream, exc.reason)
            if fill is not None:
                return BlobMiss(digest, fill)
        raise BlobUnknown(f"blob {digest} vanished while being opened")  # evicted 3 times running

    def blob_size(self, route: Route, digest: str, client: Credential | None = None) -> int | None:
        """A blob's size without fetching it (HEAD)."""
        info = self.store.stat(digest)
        if info is not None:
            return info.size
        up = self.upstreams[route.upstream]
        return up.head_blob(route.repository, digest, self._fetch_as(route, client))

    def stream(self, miss: BlobMiss, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes of a blob being filled, as they land."""
        return self.fills.stream(miss.digest, miss.fill, start, end)

    # -- tags -----------------------------------------------------------------------------

    def tags(
        self, route: Route, params: dict[str, str], client: Credential | None = None
    ) -> tuple[dict[str, object], str | None]:
        """The upstream's tag list, or the cached tags when the upstream is unreachable."""
        try:
            up = self.upstreams[route.upstream]
            return up.tags(route.repository, params, self._fetch_as(route, client))
        except UpstreamUnavailable:
            cached = self.store.tags(route.upstream, route.repository)
            if not cached:
                raise
            return {"name": route.repository, "tags": [t.tag for t in cached]}, None
