"""The NIC re-encodes stored images off the critical path, and serves the variants.

`Transcoder.submit(manifest)` queues an image whose fill finished (a prefetch, a prewarm, a
tag pull that had no variant yet); one low-priority thread per process works the queue, one
process per image (an flock across gunicorn workers). For each gzip layer it writes the
zstd encoding to a temp file, **decompresses that file again** and checks the tar's sha256
against the diff_id the image config lists: only then is the derived blob renamed into the
store, linked to its source (derived.py). A layer whose diff_id does not match stays
gzip-only, with a log line, and is not tried again. Once every layer has been looked at, the
variant manifest (same config: same image ID) is stored and linked to the original.

`variant(result, ctx)` is the serving step the registry view composes after the mirror
answered a manifest: it swaps in the variant only when variants.offer_variant says so and
every blob the variant names is still stored; otherwise it returns the original unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from .blobs import new_temp
from .config import TranscodeConfig
from .derived import DerivedIndex
from .errors import BlobUnknown, NicCacheError, TranscodeError
from .manifest import INDEX_TYPES, parse_manifest
from .proxy import ManifestResult
from .store import Store
from .transcode import GZIP_TYPES, Recoded, recode
from .variants import PullContext, offer_variant, rewrite_children, rewrite_layers

log = logging.getLogger(__name__)
CHUNK = 1 << 20
POLL = 0.2  # seconds between looks for blobs still being filled


@dataclass
class TranscodeStats:
    """What this process's transcoder did (for /metrics and the demo's cost side)."""

    cpu_s: float = 0.0
    layers: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    refused: int = 0


Recode = Callable[[BinaryIO, BinaryIO, str, int], Recoded]


def _default_recode(src: BinaryIO, dst: BinaryIO, encoding: str, level: int) -> Recoded:
    return recode(src, dst, encoding=encoding, level=level)


def decoded_sha256(path: str, encoding: str) -> str:
    """sha256 of what a runtime will unpack from the file at `path` (TranscodeError if it
    cannot be decoded)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        try:
            if encoding == "zstd":
                reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
                while data := reader.read(CHUNK):
                    sha.update(data)
            else:
                while data := fh.read(CHUNK):
                    sha.update(data)
        except zstandard.ZstdError as exc:
            raise TranscodeError(f"derived blob does not decode: {exc}") from exc
    return "sha256:" + sha.hexdigest()


class Transcoder:
    """Derives re-encoded layers and variant manifests in the background."""

    def __init__(
        self,
        store: Store,
        settings: TranscodeConfig,
        *,
        recode_fn: Recode = _default_recode,
        on_layer: Callable[[Recoded], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.index = DerivedIndex(store)
        self.recode_fn = recode_fn
        self.on_layer = on_layer
        self.stats = TranscodeStats()
        self._queue: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    @property
    def enabled(self) -> bool:
        return self.settings.encoding != "off"

    # -- background work ------------------------------------------------------------------

    def submit(self, manifest: str) -> None:
        """Queue a stored manifest (image or index) for re-encoding; returns at once."""
        if not self.enabled:
            return
        with self._guard:
            if manifest in self._queued:
                return
            self._queued.add(manifest)
            self._idle.clear()
            self._queue.put(manifest)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="transcoder", daemon=True)
                self._thread.start()

    def wait_idle(self, timeout: float) -> bool:
        """Until the queue is empty and nothing runs (tests, the demo's cost report)."""
        return self._idle.wait(timeout)

    def _work(self) -> None:
        with contextlib.suppress(OSError):  # a NIC's serving threads come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            try:
                manifest = self._queue.get(timeout=5)
            except queue.Empty:
                with self._guard:
                    if self._queue.empty():
                        self._thread = None
                        self._idle.set()
                        return
                continue
            try:
                self.derive(manifest)
            except Exception:  # one image failing must not stop the others
                log.exception("transcode of %s failed", manifest)
            finally:
                with self._guard:
                    self._queued.discard(manifest)
                    if self._queue.empty():
                        self._idle.set()

    # -- one image ------------------------------------------------------------------------

    def derive(self, manifest: str) -> str | None:
        """Make (or find) the variant of a stored manifest; its digest, or None if there is
        none (nothing to re-encode, blobs never arrived, every layer refused)."""
        encoding = self.settings.encoding
        done = self.index.get(manifest, encoding)
        if done is not None:
            return done.digest
        with self._locked(manifest):
            done = self.index.get(manifest, encoding)
            if done is not None:
                return done.digest
            try:
                body, info = self.store.read_bytes(manifest)
            except BlobUnknown:
                return None
            media_type = info.media_type or ""
            parsed = parse_manifest(body, media_type)
            if parsed.is_index or media_type in INDEX_TYPES:
                return self._derive_index(manifest, body, media_type, [c.digest for c in parsed.children])
            return self._derive_image(manifest, body, media_type)

    def _derive_index(self, manifest: str, body: bytes, media_type: str, children: list[str]) -> str | None:
        replacements: dict[str, dict[str, object]] = {}
        for child in children:
            variant = self.derive(child) if self.store.stat(child) is not None else None
            info = self.store.stat(variant) if variant is not None else None
            if info is not None:
                replacements[child] = {"digest": info.digest, "size": info.size}
        if not replacements:
            return self._refuse(manifest, "no child manifest re-encoded")
        kept = [str(r["digest"]) for r in replacements.values()] + [
            c for c in children if c not in replacements
        ]
        return self._store_variant(manifest, rewrite_children(body, replacements), media_type, kept)

    def _derive_image(self, manifest: str, body: bytes, media_type: str) -> str | None:
        doc = json.loads(body)
        config_digest = doc["config"]["digest"]
        layers = doc.get("layers", [])
        if not self._wait_for([config_digest, *(layer["digest"] for layer in layers)]):
            log.info("transcode of %s: blobs not all stored after %.0fs", manifest, self.settings.wait)
            return None
        config, _ = self.store.read_bytes(config_digest)
        diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(layers):
            return self._refuse(manifest, "the config's diff_ids do not match the layers")
        replacements = {}
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            derived = self._derive_layer(layer, diff_id)
            if derived is not None:
                replacements[layer["digest"]] = derived
        if not replacements:
            return self._refuse(manifest, "no layer re-encoded")
        kept = [config_digest] + [str(replacements.get(x["digest"], x)["digest"]) for x in layers]
        return self._store_variant(manifest, rewrite_layers(body, replacements), media_type, kept)

    def _refuse(self, manifest: str, reason: str) -> str | None:
        """Remember that `manifest` has no variant, and why; None."""
        self.index.record(manifest, self.settings.encoding, None, reason=reason)
        log.info("no %s variant of %s: %s", self.settings.encoding, manifest, reason)
        return None

    def _store_variant(self, manifest: str, body: bytes, media_type: str, children: list[str]) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.store.put_bytes(digest, body, media_type)
        self.store.link_manifest(digest, children)
        self.index.record(manifest, self.settings.encoding, digest)
        log.info("%s variant of %s: %s", self.settings.encoding, manifest, digest)
        return digest

    def _derive_layer(self, layer: dict[str, object], diff_id: str) -> dict[str, object] | None:
        """The derived layer's descriptor, making it if needed; None if it stays as it is."""
        source, encoding = str(layer["digest"]), self.settings.encoding
        known = self.index.get(source, encoding)
        if known is not None:
            if known.digest is None:
                return None
            info = self.store.stat(known.digest)
            if info is not None:
                return {"mediaType": info.media_type, "digest": known.digest, "size": info.size}
        if layer.get("mediaType") not in GZIP_TYPES:
            return None  # already zstd, or plain tar, or foreign: nothing to gain
        try:
            fd, info = self.store.open(source)
        except BlobUnknown:
            return None
        tmp_fd, tmp_path = new_temp(self.store.tmp_dir, f"derive-{source[7:]}")
        try:
            with os.fdopen(fd, "rb") as src, os.fdopen(tmp_fd, "wb") as dst:
                result = self.recode_fn(src, dst, encoding, self.settings.level)
            self._count(result)
            if not result.verified(diff_id):
                raise TranscodeError(f"the gzip layer's tar is {result.diff_id}, the config says {diff_id}")
            decoded = decoded_sha256(tmp_path, encoding)
            if decoded != diff_id:
                raise TranscodeError(f"the {encoding} blob decodes to {decoded}, the config says {diff_id}")
            sha_hex = result.digest.removeprefix("sha256:")
            stored = self.store.commit_verified(
                tmp_path, result.digest, result.size, result.media_type, sha_hex, os.path.getsize(tmp_path)
            )
        except TranscodeError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            log.warning("layer %s left as it is (no %s variant): %s", source, encoding, exc)
            self.stats.refused += 1
            self.index.record(source, encoding, None, reason=str(exc))
            return None
        except (OSError, NicCacheError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        self.index.record(source, encoding, stored.digest, diff_id=diff_id)
        return {"mediaType": stored.media_type, "digest": stored.digest, "size": stored.size}

    def _count(self, result: Recoded) -> None:
        self.stats.cpu_s += result.cpu_s
        self.stats.layers += 1
        self.stats.bytes_in += result.source_size
        self.stats.bytes_out += result.size
        if self.on_layer is not None:
            self.on_layer(result)

    def _wait_for(self, digests: list[str]) -> bool:
        deadline = time.monotonic() + self.settings.wait
        while True:
            if all(self.store.stat(d) is not None for d in digests):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)

    @contextlib.contextmanager
    def _locked(self, manifest: str) -> Iterator[None]:
        path = os.path.join(self.store.tmp_dir, f"transcode-{manifest[7:39]}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- serving --------------------------------------------------------------------------

    def variant(self, result: ManifestResult, ctx: PullContext) -> ManifestResult:
        """`result`, or its variant when this pull may have it and all of it is stored. A
        pull that may have one but finds none queues the image, so later pulls get it."""
        s = self.settings
        if not self.enabled or not offer_variant(
            ctx, encoding=s.encoding, digest_pinned=s.digest_pinned, mirror_form=s.mirror_form
        ):
            return result
        if self.index.get(result.digest, s.encoding) is None:
            self.submit(result.digest)
            return result
        variant = self.stored_variant(result.digest)
        if variant is None:
            return result
        try:
            body, info = self.store.read_bytes(variant)
        except BlobUnknown:
            return result
        return ManifestResult(body, info.media_type or result.media_type, variant, result.source)

    def variant_state(self, manifest: str) -> str:
        """`ready` (a variant is stored whole), `none` (there will be none: transcoding off or
        refused) or `pending` (not made yet)."""
        if not self.enabled:
            return "none"
        if self.stored_variant(manifest) is not None:
            return "ready"
        known = self.index.get(manifest, self.settings.encoding)
        return "none" if known is not None and known.digest is None else "pending"

    def stored_variant(self, manifest: str) -> str | None:
        """The digest of `manifest`'s variant if it and every blob it names are stored."""
        known = self.index.get(manifest, self.settings.encoding) if self.enabled else None
        if known is None or known.digest is None or self.store.stat(known.digest) is None:
            return None
        if any(self.store.stat(child) is None for child in self.store.children(known.digest)):
            return None  # a derived layer was evicted: the original still works
        return known.digest
