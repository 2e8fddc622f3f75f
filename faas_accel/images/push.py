"""Copy built images from the OCI layout to a registry with skopeo, digests kept."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from .build import BuiltImage
from .errors import PushError


def push_args(layout_dir: Path, image: BuiltImage, registry_host: str) -> list[str]:
    """The skopeo command that copies ``image`` to ``registry_host`` over plain HTTP."""
    return [
        "skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
        f"oci:{Path(layout_dir).resolve()}:{image.name}",
        f"docker://{image.reference(registry_host)}",
    ]


def push_all(
    layout_dir: Path,
    built: Mapping[str, BuiltImage] | Iterable[BuiltImage],
    registry_host: str,
    *,
    timeout: float = 900,
) -> list[str]:
    """Push every image to ``registry_host`` (``127.0.0.1:5000``, ``198.18.0.1:5000``) as
    its name without ``registry.lab/``; returns the references pushed.

    Layers already on the registry are not sent again, so pushing images that share a
    base moves it once.
    """
    images = list(built.values()) if isinstance(built, Mapping) else list(built)
    pushed = []
    for image in sorted(images, key=lambda i: i.name):
        argv = push_args(layout_dir, image, registry_host)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PushError(f"skopeo could not push {image.name}: {exc}") from exc
        if result.returncode != 0:
            raise PushError(f"{' '.join(argv)} exited with {result.returncode}:\n{result.stderr.strip()}")
        pushed.append(image.reference(registry_host))
    return pushed
