"""How big a cached image is and whether all of it is stored, read from the store alone."""

from __future__ import annotations

from ..errors import NicCacheError
from ..manifest import ParsedManifest, parse_manifest
from ..reference import parse_image
from ..store import Store


def footprint(store: Store, image: str) -> tuple[int | None, bool]:
    """(bytes, complete) of an image: its stored manifests and the blobs they list.

    For an index, only the platforms whose manifests are stored count. `(None, False)` when
    the cache has never resolved the image. Reads no access time and counts no hit.
    """
    try:
        ref = parse_image(image)
    except NicCacheError:
        return None, False
    digest = ref.digest
    if digest is None:
        entry = store.get_tag(ref.registry, ref.repository, ref.tag or "latest")
        digest = entry.digest if entry is not None else None
    top = _manifest(store, digest) if digest else None
    if top is None:
        return None, False
    size, parsed = top
    images = [parsed]
    if parsed.is_index:
        images = []
        for child in parsed.children:
            got = _manifest(store, child.digest)
            if got is not None:
                size += got[0]
                images.append(got[1])
    if not images:
        return None, False
    blobs = {b.digest: b.size or 0 for m in images for b in m.blobs}
    complete = all(store.stat(d) is not None for d in blobs)
    return size + sum(blobs.values()), complete


def _manifest(store: Store, digest: str) -> tuple[int, ParsedManifest] | None:
    if store.stat(digest) is None:
        return None
    try:
        with open(store.blob_path(digest), "rb") as fh:
            body = fh.read()
        return len(body), parse_manifest(body)
    except (OSError, NicCacheError):
        return None
