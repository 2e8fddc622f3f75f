"""Pure rules for manifest variants: when a client may get re-encoded layers, and the rewrite.

A variant of a manifest lists the same config (so the image ID does not change) and, for
each layer the NIC re-encoded, the derived blob's descriptor instead of the original one.
It is offered only where that is safe:

- the client reads the encoding (`client_reads`: containerd >= 1.5 and Docker >= 23 read
  zstd; Docker 20.10 takes a zstd layer for a plain tar and fails with "invalid tar header"
  (tests/test_transcode.py), so it and unknown clients get gzip);
- the pull names the image by tag through the hook's rewritten reference
  (`<cache>/<registry>/<repo>:<tag>`): a digest-pinned reference promises the upstream's
  bytes, and the plain mirror forms (`?ns=`, Docker's registry-mirrors) stand in for the
  upstream itself, so both get the original unless the operator opts in;
- neither the upstream nor the image (a function's annotation, reported by the hook) opted out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .reference import canonical_host

OPT_OUT_ANNOTATION = "com.openfaas.accel/transcode"  # "false": this function's image stays as pushed
_VERSION = re.compile(r"^(containerd|docker)/v?(\d+)\.(\d+)")
# the first version of each client that reads zstd layers
ZSTD_CLIENTS = {"containerd": (1, 5), "docker": (23, 0)}


@dataclass(frozen=True, kw_only=True)
class PullContext:
    """What the registry view knows about one manifest request."""

    by_digest: bool  # the reference is a digest (the client pinned it)
    rewritten: bool  # the path names the upstream (the hook's rewritten reference)
    user_agent: str | None
    upstream_opted_out: bool = False
    image_opted_out: bool = False


def is_rewritten(name: str, ns: str | None, upstreams: frozenset[str] | set[str]) -> bool:
    """Whether a request path is the rewritten form `<registry>/<repo>` (not `?ns=`, not bare)."""
    if ns:
        return False
    first, sep, _ = name.partition("/")
    return bool(sep) and canonical_host(first, upstreams) in upstreams


def client_reads(user_agent: str | None, encoding: str) -> bool:
    """Whether the client named by `user_agent` can unpack layers in `encoding`."""
    if encoding == "tar":
        return True  # every runtime reads uncompressed layers
    match = _VERSION.match(user_agent or "")
    if match is None:
        return False
    need = ZSTD_CLIENTS[match[1]]
    return (int(match[2]), int(match[3])) >= need


def offer_variant(
    ctx: PullContext, *, encoding: str, digest_pinned: bool = False, mirror_form: bool = False
) -> bool:
    """Whether this pull may get the `encoding` variant (operator opt-ins: `digest_pinned`,
    `mirror_form`)."""
    if encoding == "off" or ctx.upstream_opted_out or ctx.image_opted_out:
        return False
    if ctx.by_digest and not digest_pinned:
        return False
    if not ctx.rewritten and not mirror_form:
        return False
    return client_reads(ctx.user_agent, encoding)


def rewrite_layers(body: bytes, replacements: Mapping[str, Mapping[str, object]]) -> bytes:
    """An image manifest with each layer whose digest is in `replacements` replaced by that
    descriptor (mediaType, digest, size); every other field, the config included, unchanged."""
    doc = json.loads(body)
    layers = []
    for layer in doc.get("layers", []):
        new = replacements.get(layer["digest"])
        if new is None:
            layers.append(layer)
            continue
        kept = {k: v for k, v in layer.items() if k not in ("mediaType", "digest", "size", "urls")}
        layers.append({**kept, **new})
    doc["layers"] = layers
    return json.dumps(doc, separators=(",", ":")).encode()


def rewrite_children(body: bytes, replacements: Mapping[str, Mapping[str, object]]) -> bytes:
    """An index with child manifests replaced by their variants (digest, size; platform kept)."""
    doc = json.loads(body)
    doc["manifests"] = [{**m, **replacements.get(m["digest"], {})} for m in doc.get("manifests", [])]
    return json.dumps(doc, separators=(",", ":")).encode()
