"""Acting on a lab VM's runtime from the host (what a fresh VM would not have)."""

from __future__ import annotations

from pathlib import Path

from . import net
from .spec import VM, LabSpec


def image_names(spec: LabSpec, vm: VM) -> set[str]:
    """The image names a VM's runtime holds."""
    if spec.runtime == "containerd":
        sock = str(Path(spec.workdir) / "run" / vm.name / "containerd.sock")
        out = net.nsexec(vm.netns, "ctr", "--address", sock, "--namespace", vm.netns, "images", "ls", "-q")
        return set(out.stdout.split())
    import docker

    client = docker.DockerClient(base_url=f"unix://{Path(spec.workdir) / 'run' / vm.name / 'docker.sock'}")
    try:
        return {tag for img in client.images.list() for tag in img.tags}
    finally:
        client.close()


def forget_images(spec: LabSpec, vm: VM) -> None:
    """Make a VM forget every image (as a fresh VM would not have them)."""
    sock = str(Path(spec.workdir) / "run" / vm.name / "containerd.sock")
    if spec.runtime == "containerd":
        refs = net.nsexec(
            vm.netns, "ctr", "--address", sock, "--namespace", vm.netns, "images", "ls", "-q"
        ).stdout.split()
        if refs:
            net.nsexec(
                vm.netns, "ctr", "--address", sock, "--namespace", vm.netns, "images", "rm", "--sync", *refs
            )
    else:
        import docker

        client = docker.DockerClient(
            base_url=f"unix://{Path(spec.workdir) / 'run' / vm.name / 'docker.sock'}"
        )
        try:
            for img in client.images.list():
                client.images.remove(img.id, force=True)
        finally:
            client.close()
