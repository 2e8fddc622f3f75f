"""Pure reading of OCI / Docker manifests: what they reference, and platform selection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .errors import DigestInvalid, ManifestInvalid
from .reference import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ALL_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor inside a manifest."""

    digest: str
    media_type: str | None
    size: int | None
    platform: str | None = None  # "os/arch[/variant]" for index entries


@dataclass(frozen=True)
class ParsedManifest:
    """An index (children are manifests) or an image manifest (children are blobs)."""

    media_type: str
    is_index: bool
    children: tuple[Descriptor, ...] = field(default_factory=tuple)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The config and layers of an image manifest (empty for an index)."""
        return () if self.is_index else self.children


def parse_manifest(body: bytes, media_type: str | None = None) -> ParsedManifest:
    """Parse a manifest body; the media type comes from the body when the header lacks it.

    Raises ManifestInvalid for anything that is not a schema-2 image manifest or index.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    mt = doc.get("mediaType") or media_type or ""
    if mt not in INDEX_TYPES and mt not in IMAGE_TYPES:
        if "manifests" in doc:
            mt = OCI_INDEX
        elif "layers" in doc:
            mt = OCI_MANIFEST
        else:
            raise ManifestInvalid(f"unsupported manifest type {mt!r}")
    try:
        if mt in INDEX_TYPES:
            children = tuple(_descriptor(d, with_platform=True) for d in doc.get("manifests", []))
            return ParsedManifest(mt, True, children)
        blobs = [_descriptor(doc["config"])] if "config" in doc else []
        blobs += [_descriptor(d) for d in doc.get("layers", [])]
        return ParsedManifest(mt, False, tuple(blobs))
    except (KeyError, TypeError, AttributeError, DigestInvalid) as exc:
        raise ManifestInvalid(f"malformed descriptor in manifest: {exc}") from exc


def _descriptor(d: dict[str, object], *, with_platform: bool = False) -> Descriptor:
    digest = validate_digest(str(d["digest"]))
    size = d.get("size")
    platform = None
    if with_platform and isinstance(d.get("platform"), dict):
        p: dict[str, object] = d["platform"]  # type: ignore[assignment]
        platform = f"{p.get('os')}/{p.get('architecture')}"
        if p.get("variant"):
            platform += f"/{p['variant']}"
    mt = d.get("mediaType")
    return Descriptor(digest, str(mt) if mt else None, size if isinstance(size, int) else None, platform)


def platform_matches(have: str | None, want: str) -> bool:
    """`linux/arm64` matches `linux/arm64/v8`; a missing variant in `want` matches any."""
    if have is None:
        return False
    h, w = have.split("/"), want.split("/")
    return h[:2] == w[:2] and (len(w) < 3 or (len(h) > 2 and h[2] == w[2]))


def select_platforms(parsed: ParsedManifest, platforms: tuple[str, ...]) -> list[Descriptor]:
    """The index entries that match any wanted platform (all of them if none is wanted)."""
    if not platforms:
        return list(parsed.children)
    return [d for d in parsed.children if any(platform_matches(d.platform, p) for p in platforms)]


def accepts(accept_header: str | None, media_type: str) -> bool:
    """Whether a client's Accept header admits `media_type` (no header admits anything)."""
    if not accept_header:
        return True
    for part in accept_header.split(","):
        mt = part.split(";")[0].strip()
        if mt in ("*/*", media_type, "application/*"):
            return True
    return False
