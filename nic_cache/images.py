"""Image-level views of the store: what is cached per tag, and deleting an image."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ManifestUnknown
from .reference import ImageRef
from .store import Store, TagEntry


@dataclass(frozen=True)
class CachedImage:
    """One cached tag with what of it is stored."""

    image: str
    digest: str
    media_type: str
    fetched_at: float
    blobs_known: int
    blobs_stored: int
    bytes_stored: int
    pinned: bool

    @property
    def complete(self) -> bool:
        return self.blobs_known > 0 and self.blobs_known == self.blobs_stored


def describe(store: Store, entry: TagEntry) -> CachedImage:
    """Summarize a tag: how many of the blobs its manifest(s) reference are stored."""
    known = store.closure(entry.digest)
    stored = [info for d in known if (info := store.stat(d)) is not None]
    return CachedImage(
        image=f"{entry.upstream}/{entry.repository}:{entry.tag}",
        digest=entry.digest,
        media_type=entry.media_type,
        fetched_at=entry.fetched_at,
        blobs_known=len(known),
        blobs_stored=len(stored),
        bytes_stored=sum(i.size for i in stored),
        pinned=any(i.pinned for i in stored),
    )


def list_images(store: Store) -> list[CachedImage]:
    """Every cached tag, described."""
    return [describe(store, entry) for entry in store.tags()]


def delete_image(store: Store, ref: ImageRef) -> list[str]:
    """Forget an image's tag and delete the blobs no other cached tag needs.

    Raises ManifestUnknown when the tag is not cached. Returns the deleted digests.
    """
    tag = ref.tag or "latest"
    entry = store.get_tag(ref.registry, ref.repository, tag)
    if entry is None:
        raise ManifestUnknown(f"{ref} is not cached")
    owned = store.closure(entry.digest)
    keep = store.referenced_elsewhere(owned, {(ref.registry, ref.repository, tag)})
    store.delete_tag(ref.registry, ref.repository, tag)
    gone = [d for d in owned if d not in keep and store.delete_blob(d)]
    return gone
