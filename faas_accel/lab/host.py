"""What the lab needs of this machine (root, the programs it drives) and where it keeps its files."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .spec import LabSpec

NEEDED = {  # program -> Debian package that provides it
    "ip": "iproute2",
    "tc": "iproute2",
    "nsenter": "util-linux",
    "taskset": "util-linux",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
}
NEEDED_DOCKER = {"dockerd": "docker.io"}


class LabError(RuntimeError):
    """The lab cannot be brought up (or down) as asked; the message says what to do."""


def check_host(
    spec: LabSpec, which: Callable[[str], str | None] = shutil.which, euid: int | None = None
) -> None:
    """Refuse clearly when not root or a needed program is missing."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise LabError(
            "the lab needs root (it creates network namespaces, veths and containers): run it with sudo"
        )
    needed = {**NEEDED, **(NEEDED_DOCKER if spec.runtime == "docker" else {})}
    missing = sorted({pkg for prog, pkg in needed.items() if which(prog) is None})
    if missing:
        progs = ", ".join(p for p, pkg in needed.items() if pkg in missing and which(p) is None)
        raise LabError(f"missing program(s): {progs}; install with: apt-get install {' '.join(missing)}")


def paths(spec: LabSpec) -> dict[str, Path]:
    root = Path(spec.workdir)
    return {"root": root, "seed": root / "seed", "run": root / "run", "state": root / "run" / "state.json"}
