"""Pure planning for the hook: which deploys to accelerate and how images are rewritten.

A deploy's `image` becomes the mirror form `<mirror-host>/<registry>/<repo>:<tag>` and the
original is kept in an annotation, so list/describe responses can show the user exactly what
they deployed. Nothing here does I/O.
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
    transcode: bool = True  # False: the function asked for its layers as pushed

    @property
    def accelerate(self) -> bool:
        return self.image is not None


def plan_deploy(body: bytes, policy: RewritePolicy) -> DeployPlan:
    """Decide whether a deploy body is accelerated. Never raises on bad input: a body the
    hook cannot read is forwarded unchanged so the provider's own error reaches the user."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return DeployPlan(None, None, None, "body is not JSON; forwarded unchanged")
    if not isinstance(doc, dict):
        return DeployPlan(None, None, None, "body is not a JSON object; forwarded unchanged")
    name = doc.get("service") if isinstance(doc.get("service"), str) else None
    original = doc.get("image")
    if not isinstance(original, str) or not original:
        return DeployPlan(name, None, None, "no image; forwarded unchanged")
    raw_annotations = doc.get("annotations")
    annotations: dict[str, Any] = raw_annotations if isinstance(raw_annotations, dict) else {}
    if str(annotations.get(SKIP_ANNOTATION, "")).lower() == "true":
        return DeployPlan(name, original, None, f"annotation {SKIP_ANNOTATION}=true")
    if original.startswith(f"{policy.mirror_host}/"):
        return DeployPlan(name, original, None, "image already names the mirror")
    try:
        ref = parse_image(original)
    except RegistryError as exc:
        return DeployPlan(name, original, None, f"image not understood ({exc}); forwarded unchanged")
    if ":" in ref.registry:
        reason = f"registry {ref.registry} has a port; the mirror form cannot name it"
        return DeployPlan(name, original, None, reason)
    if ref.registry in policy.deny:
        return DeployPlan(name, original, None, f"registry {ref.registry} is denied")
    if policy.allow and ref.registry not in policy.allow:
        return DeployPlan(name, original, None, f"registry {ref.registry} is not in the allow list")
    transcode = str(annotations.get(TRANSCODE_ANNOTATION, "")).lower() != "false"
    return DeployPlan(name, original, ref, "accelerated", doc, transcode)


def rewritten_body(plan: DeployPlan, policy: RewritePolicy) -> bytes:
    """The deploy body with the mirror-form image and the original kept in an annotation."""
    assert plan.doc is not None and plan.image is not None and plan.original is not None
    doc = dict(plan.doc)
    doc["image"] = plan.image.mirror_form(policy.mirror_host)
    annotations = dict(doc.get("annotations") or {})
    annotations[ORIGINAL_ANNOTATION] = plan.original
    doc["annotations"] = annotations
    return json.dumps(doc).encode()


def restore_images(body: bytes) -> bytes | None:
    """Put the user's image back in a list/describe response; None if nothing changed."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    changed = False
    for fn in doc if isinstance(doc, list) else [doc]:
        if not isinstance(fn, dict):
            continue
        annotations = fn.get("annotations")
        if isinstance(annotations, dict) and ORIGINAL_ANNOTATION in annotations:
            fn["image"] = annotations.pop(ORIGINAL_ANNOTATION)
            changed = True
    return json.dumps(doc).encode() if changed else None
