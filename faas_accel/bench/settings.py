"""What one `bench paper` run measures (its command line's options, validated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REF_IMAGES = ("alpine", "ubuntu", "python", "nginx")


@dataclass(frozen=True, kw_only=True)
class PaperSettings:
    """What one `bench paper` run measures and how much of it."""

    out: Path
    quick: bool = False
    vm_counts: tuple[int, ...] = (1, 2, 4, 8)
    pulls: int = 30  # retrieval samples per image per mode (Figure 4 asks for >= 30)
    tarball_pulls: int = 5
    ref_images: tuple[str, ...] = REF_IMAGES
    functions: tuple[str, ...] = ()  # () = every function of the stack file
    repeats: int = 3  # deploy section: runs per mode
    invoke_seconds: int = 20
    wan_rate: str = "1gbit"
    wan_rtt: str = "20ms"
    wan_setup: str = "20ms"
    workdir: str = "/var/tmp/faas-accel-lab"
    stack: Path = REPO / "stack.yml"
    build_dir: Path = REPO / "build"
    keep_lab: bool = False
    sections: tuple[str, ...] = ("retrieval", "deploy", "scale", "invoke")

    @classmethod
    def for_quick(cls, out: Path, **kw: Any) -> PaperSettings:
        """A smoke run on one VM: seconds per section, every file still written."""
        base: dict[str, Any] = {
            "quick": True,
            "vm_counts": (1,),
            "pulls": 2,
            "tarball_pulls": 1,
            "ref_images": ("alpine",),
            "functions": ("hello",),
            "repeats": 1,
            "invoke_seconds": 3,
        }
        return cls(out=out, **{**base, **kw})

    def validate(self) -> PaperSettings:
        if not self.vm_counts or min(self.vm_counts) < 1 or len(set(self.vm_counts)) != len(self.vm_counts):
            raise ValueError("--vms takes distinct positive VM counts like 1,2,4,8")
        if self.tarball_pulls > self.pulls:
            raise ValueError(f"--tarball-pulls ({self.tarball_pulls}) cannot exceed --pulls ({self.pulls})")
        if self.pulls < 1 or self.tarball_pulls < 0 or self.repeats < 1 or self.invoke_seconds < 1:
            raise ValueError(
                "--pulls, --repeats and --invoke-seconds must be at least 1, --tarball-pulls 0 or more"
            )
        unknown = set(self.ref_images) - set(REF_IMAGES)
        if unknown:
            raise ValueError(
                f"unknown reference image(s): {', '.join(sorted(unknown))} (have {', '.join(REF_IMAGES)})"
            )
        bad = set(self.sections) - {"retrieval", "deploy", "scale", "invoke"}
        if bad:
            raise ValueError(f"unknown section(s): {', '.join(sorted(bad))}")
        return self
