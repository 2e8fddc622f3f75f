"""The example files under `deploy/`, rendered by the same code as `faas-accel install`.

`python -m faas_accel.install.examples [REPO]` rewrites them; a test fails when they differ
from what the renderers produce, so the committed examples never drift from the installer.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .kubernetes import load_values, render
from .plan import NicOptions, VmOptions, nic_plan, vm_plan

EXAMPLE_BIN = "/opt/faas-accel/bin/faas-accel"  # python3 -m venv /opt/faas-accel; pip install
EXAMPLE_NIC = NicOptions(bin=EXAMPLE_BIN, token="CHANGE-ME")
EXAMPLE_VM = VmOptions(
    bin=EXAMPLE_BIN, cache_url="http://198.18.1.1:5000", fanout_vm="198.18.1.11", token="CHANGE-ME"
)
_NAMES = {
    "/etc/sysusers.d/faas-accel.conf": "faas-accel.sysusers.conf",
    "/etc/tmpfiles.d/faas-accel.conf": "faas-accel.tmpfiles.conf",
    "/etc/faas-accel/nic.env": "nic.env.example",
    "/etc/faas-accel/vm.env": "vm.env.example",
    "/etc/faas-accel/nic-cache.yml": "nic-cache.yml",
    "/etc/faas-accel/prewarm.yml": "prewarm.yml",
}


def systemd_examples() -> dict[str, str]:
    """`deploy/systemd/<name>` -> text: the units and files of `install nic` and `install vm`
    with the example options (no faasd compose: that file is faasd's)."""
    out = {}
    for plan in (nic_plan(EXAMPLE_NIC, lambda _: None), vm_plan(EXAMPLE_VM, lambda _: None)):
        for f in plan.files:
            if f.path.startswith("/etc/systemd/system/"):
                out[f.path.rsplit("/", 1)[1]] = f.new
            elif f.path in _NAMES:
                out[_NAMES[f.path]] = f.new
    return out


def kubernetes_examples(repo: Path) -> dict[str, str]:
    """`deploy/kubernetes/rendered/<name>` -> text, from `deploy/kubernetes/values.yaml`."""
    return render(load_values(repo / "deploy" / "kubernetes" / "values.yaml"))


def write_examples(repo: Path) -> list[Path]:
    """Rewrite every example file under `repo/deploy`; returns the paths written."""
    written = []
    for folder, files in (
        (repo / "deploy" / "systemd", systemd_examples()),
        (repo / "deploy" / "kubernetes" / "rendered", kubernetes_examples(repo)),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
            written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write_examples(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
