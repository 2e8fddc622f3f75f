"""Pure parsing of repository names, tags, digests, image references and registry paths.

Nothing here does I/O. Grammar from the OCI distribution spec and the docker reference
package: a name is path components of lowercase alphanumerics joined by separators;
a tag is at most 128 word characters, dots and dashes; a digest is `algorithm:hex`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import DigestInvalid, NameInvalid, NameUnknown, TagInvalid, Unsupported

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")
HOST_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?"
)
MAX_NAME = 255

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def validate_name(name: str) -> str:
    """Return `name` if it is a valid repository name, else raise NameInvalid."""
    if len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name!r}", detail={"name": name})
    return name


def validate_digest(digest: str) -> str:
    """Return `digest` if it is a sha256 digest this cache can verify, else raise DigestInvalid."""
    if SHA256_RE.fullmatch(digest):
        return digest
    if digest.startswith("sha256:"):
        raise DigestInvalid(
            f"malformed digest {digest!r}: a sha256 digest is 'sha256:' and 64 lowercase hex digits",
            detail={"digest": digest},
        )
    if DIGEST_RE.fullmatch(digest):
        raise DigestInvalid(
            f"unsupported digest {digest!r}: only sha256 is verified", detail={"digest": digest}
        )
    raise DigestInvalid(f"invalid digest {digest!r}", detail={"digest": digest})


def is_digest(reference: str) -> bool:
    """True when a manifest reference is a digest rather than a tag."""
    return ":" in reference


def validate_reference(reference: str) -> str:
    """Validate a manifest reference (tag or digest)."""
    if is_digest(reference):
        return validate_digest(reference)
    if not TAG_RE.fullmatch(reference):
        raise TagInvalid(f"invalid tag {reference!r}", detail={"tag": reference})
    return reference


def display_reference(repository: str, reference: str) -> str:
    """`repo:tag` or `repo@sha256:...`, as references are written (for messages and logs)."""
    return f"{repository}@{reference}" if is_digest(reference) else f"{repository}:{reference}"


def digest_hex(digest: str) -> str:
    """The hex part of a validated sha256 digest."""
    return validate_digest(digest).split(":", 1)[1]


@dataclass(frozen=True)
class RegistryPath:
    """A parsed `/v2/...` path: what is asked for, of which repository name."""

    name: str  # as written in the path, possibly prefixed by an upstream host
    kind: str  # "manifests" | "blobs" | "tags"
    reference: str = ""  # tag or digest; empty for tags/list


def parse_registry_path(rest: str) -> RegistryPath:
    """Parse what follows `/v2/` in a registry request path.

    Raises Unsupported for the push API (uploads) and NameInvalid for anything unparsable.
    """
    if "/blobs/uploads" in f"/{rest}":
        raise Unsupported("this registry is a read-only mirror: pushes are not accepted")
    if rest.endswith("/tags/list"):
        return RegistryPath(rest[: -len("/tags/list")], "tags")
    for kind in ("manifests", "blobs"):
        name, sep, ref = rest.rpartition(f"/{kind}/")
        if sep and name and ref and "/" not in ref:
            return RegistryPath(name, kind, ref)
    raise NameInvalid(f"not a registry API path: /v2/{rest}", detail={"path": rest})


@dataclass(frozen=True)
class Route:
    """Which upstream a request goes to and the repository name there."""

    upstream: str
    repository: str


def resolve_route(
    name: str,
    *,
    ns: str | None,
    upstreams: frozenset[str] | set[str],
    default_upstream: str | None,
) -> Route:
    """Pick the upstream for a request.

    Order: containerd's `?ns=<host>`; then the rewritten form whose first path segment is a
    configured upstream (`docker.io/library/alpine`); then the default upstream (what
    Docker's `registry-mirrors` sends). Docker Hub's implicit `library/` is added.
    """
    if ns:
        upstream = canonical_host(ns, upstreams)
        if upstream not in upstreams:
            raise NameUnknown(f"no upstream configured for registry {ns!r}", detail={"ns": ns})
        repository = name
    else:
        first, sep, remainder = name.partition("/")
        host = canonical_host(first, upstreams)
        if sep and host in upstreams:
            upstream, repository = host, remainder
        elif default_upstream:
            upstream, repository = default_upstream, name
        else:
            raise NameUnknown(
                f"repository {name!r} names no configured upstream and there is no default",
                detail={"name": name},
            )
    validate_name(repository)
    if upstream in DOCKER_HUB_ALIASES and "/" not in repository:
        repository = f"library/{repository}"
    return Route(upstream, repository)


def canonical_host(host: str, upstreams: frozenset[str] | set[str]) -> str:
    """Map Docker Hub's many host names onto the configured one."""
    if host in DOCKER_HUB_ALIASES:
        for alias in DOCKER_HUB_ALIASES:
            if alias in upstreams:
                return alias
    return host


@dataclass(frozen=True)
class ImageRef:
    """A normalized image reference: registry host, repository, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask the manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def mirror_form(self, mirror: str) -> str:
        """The rewritten reference `<mirror>/<registry>/<repo>[:tag][@digest]`.

        Raises NameInvalid for a registry with a port: a path segment cannot hold `:`.
        """
        if ":" in self.registry:
            raise NameInvalid(f"registry {self.registry!r} has a port; it cannot be rewritten into a path")
        return f"{mirror}/{self}"


def parse_image(image: str) -> ImageRef:
    """Parse and normalize an image reference the way docker and faas-cli do.

    `python:3.12` -> docker.io/library/python:3.12; `ghcr.io/a/b@sha256:..` keeps its digest.
    Raises NameInvalid, TagInvalid or DigestInvalid with the offending part.
    """
    if not image or image != image.strip():
        raise NameInvalid(f"invalid image reference {image!r}")
    rest, _, digest = image.partition("@")
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not HOST_RE.fullmatch(first):
            raise NameInvalid(f"invalid registry host {first!r} in {image!r}")
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, rest
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    validate_name(repository)
    if tag is not None:
        validate_reference(tag)
        if is_digest(tag):
            raise TagInvalid(f"invalid tag {tag!r} in {image!r}")
    if "@" in image:
        validate_digest(digest)
    elif tag is None:
        tag = "latest"
    return ImageRef(registry, repository, tag, digest or None)
