"""Pure planning for the hook: which deploys to accelerate and how images are rewritten.

A deploy's `image` becomes the mirror form `<mirror-host>/<registry>/<repo>:<tag>` and the
original is kept in an annotation, so list/describe responses can show the user exactly what
they deployed. That annotation is trusted only as far as the hook wrote it: one a user sends
is stripped on the way in, and on the way out the original is restored only when the running
image is exactly the mirror form of it (so a forged annotation never hides what runs).
Nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nic_cache.errors import RegistryError
from nic_cache.reference import ImageRef, parse_image

SKIP_ANNOTATION = "com.openfaas.accel/skip"
TRANSCODE_ANNOTATION = "com.openfaas.accel/transcode"  # "false": the NIC keeps the layers as pushed
ORIGINAL_ANNOTATION = "com.openfaas.accel/original-image"


@dataclass(frozen=True, kw_only=True)
class RewritePolicy:
    """What the hook rewrites."""

    mirror_host: str  # host[:port] written in front of rewritten images
    allow: frozenset[str] = frozenset()  # registries to accelerate (empty: all)
    deny: frozenset[str] = frozenset()  # registries never accelerated


@dataclass(frozen=True)
class DeployPlan:
    """The outcome of looking at a FunctionDeployment body."""

    function: str | None
    original: str | None  # the image as the user wrote it
    image: ImageRef | None  # normalized, when it will be accelerated
    reason: str  # why it is (not) accelerated, for the log
    doc: dict[str, Any] | None = field(default=None, repr=False)
    body: bytes = field(default=b"", repr=False)  # what to forward if not rewritten

    @property
    def namespace(self) -> str:
        """The namespace the deploy names ("" for the provider's default)."""
        value = (self.doc or {}).get("namespace")
        return value if isinstance(value, str) else ""

    @property
    def transcode(self) -> bool:
        """False when the function asked for its layers as pushed (TRANSCODE_ANNOTATION)."""
        annotations = (self.doc or {}).get("annotations")
        opted_out = (
            isinstance(annotations, dict)
            and str(annotations.get(TRANSCODE_ANNOTATION, "")).lower() == "false"
        )
        return not opted_out

    @property
    def accelerate(self) -> bool:
        return self.image is not None


def plan_deploy(body: bytes, policy: RewritePolicy) -> DeployPlan:
    """Decide whether a deploy body is accelerated. Never raises on bad input: a body the
    hook cannot read is forwarded unchanged so the provider's own error reaches the user.
    A user-supplied `ORIGINAL_ANNOTATION` is dropped from the body in every case."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return DeployPlan(None, None, None, "body is not JSON; forwarded unchanged", body=body)
    if not isinstance(doc, dict):
        return DeployPlan(None, None, None, "body is not a JSON object; forwarded unchanged", body=body)
    raw_annotations = doc.get("annotations")
    if isinstance(raw_annotations, dict) and ORIGINAL_ANNOTATION in raw_annotations:
        doc["annotations"] = {k: v for k, v in raw_annotations.items() if k != ORIGINAL_ANNOTATION}
        body = json.dumps(doc).encode()
    name = doc.get("service") if isinstance(doc.get("service"), str) else None

    def plan(original: str | None, reason: str, ref: ImageRef | None = None) -> DeployPlan:
        return DeployPlan(name, original, ref, reason, doc, body)

    original = doc.get("image")
    if not isinstance(original, str) or not original:
        return plan(None, "no image; forwarded unchanged")
    annotations: dict[str, Any] = doc["annotations"] if isinstance(doc.get("annotations"), dict) else {}
    if str(annotations.get(SKIP_ANNOTATION, "")).lower() == "true":
        return plan(original, f"annotation {SKIP_ANNOTATION}=true")
    if original.startswith(f"{policy.mirror_host}/"):
        return plan(original, "image already names the mirror")
    try:
        ref = parse_image(original)
    except RegistryError as exc:
        return plan(original, f"image not understood ({exc}); forwarded unchanged")
    if ":" in ref.registry:
        return plan(original, f"registry {ref.registry} has a port; the mirror form cannot name it")
    if ref.registry in policy.deny:
        return plan(original, f"registry {ref.registry} is denied")
    if policy.allow and ref.registry not in policy.allow:
        return plan(original, f"registry {ref.registry} is not in the allow list")
    if name is None:
        return plan(original, "no service name; forwarded unchanged")
    return plan(original, "accelerated", ref)


def rewritten_body(plan: DeployPlan, policy: RewritePolicy) -> bytes:
    """The deploy body with the mirror-form image and the original kept in an annotation."""
    assert plan.doc is not None and plan.image is not None and plan.original is not None
    doc = dict(plan.doc)
    doc["image"] = plan.image.mirror_form(policy.mirror_host)
    annotations = dict(doc.get("annotations") or {})
    annotations[ORIGINAL_ANNOTATION] = plan.original
    doc["annotations"] = annotations
    return json.dumps(doc).encode()


def restore_images(body: bytes, mirror_host: str) -> bytes | None:
    """Put the user's image back in a list/describe response; None if nothing changed.

    Only where the function runs exactly the mirror form (under `mirror_host`) of the
    annotated original, i.e. where the hook itself rewrote it."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    changed = False
    for fn in doc if isinstance(doc, list) else [doc]:
        if not isinstance(fn, dict):
            continue
        annotations = fn.get("annotations")
        if not isinstance(annotations, dict):
            continue
        original = annotations.get(ORIGINAL_ANNOTATION)
        if isinstance(original, str) and fn.get("image") == _mirror_form(original, mirror_host):
            fn["image"] = annotations.pop(ORIGINAL_ANNOTATION)
            changed = True
    return json.dumps(doc).encode() if changed else None


def _mirror_form(image: str, mirror_host: str) -> str | None:
    try:
        return parse_image(image).mirror_form(mirror_host)
    except RegistryError:
        return None
