"""Seed "the internet": build the lab's images and push them into the upstream's storage.

A throwaway registry on 127.0.0.1 serves the same storage directory the `inet` registry will
serve, so seeding never crosses the emulated WAN and never counts as WAN traffic.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

from .host import LabError
from .lab import registry_config
from .spec import REGISTRY_HOST


def build_images(out: Path, cache: Path, only: list[str] | None = None) -> dict[str, Any]:
    """Build (or reuse) the functions' and reference images as one OCI layout."""
    from faas_accel.images import build_all

    built: dict[str, Any] = build_all(out, cache_dir=cache, only=only)
    return built


def seed(storage: Path, layout: Path, built: dict[str, Any], *, log: Callable[[str], None] = print) -> int:
    """Push every built image not already in `storage`; returns how many were pushed."""
    from faas_accel.images import push_all

    with seed_registry(storage) as host:
        missing = {name: b for name, b in built.items() if not _has(f"http://{host}", name, b.digest)}
        if missing:
            log(f"seeding the upstream registry with {len(missing)} image(s)")
            push_all(layout, missing, host)
        return len(missing)


def ensure_stack_seeded(
    storage: Path, stack_file: Path, build_dir: Path, *, log: Callable[[str], None] = print
) -> list[str]:
    """Build (reusing `build_dir/cache`) and push each image `stack_file` names that `storage`
    holds under no digest at all; returns the images pushed. Progress goes to `log`."""
    from faas_accel.images import build_all, push_all

    wanted = sorted(set(stack_functions(stack_file).values()))
    with seed_registry(storage) as host:
        missing = [name for name in wanted if not _has(f"http://{host}", name, None)]
        if not missing:
            log(f"the lab's internet registry holds the {len(wanted)} image(s) of {stack_file.name}")
            return []
        log(f"building {len(missing)} image(s) of {stack_file.name} missing from the lab's internet registry "
            f"(layers cached in {build_dir / 'cache'}): {', '.join(missing)}")  # fmt: skip
        layout = build_dir / "images-stack"
        built = build_all(layout, cache_dir=build_dir / "cache", only=missing, stack=stack_file,
                          log=lambda line: log(f"  {line}"))  # fmt: skip
        for i, name in enumerate(sorted(built), 1):
            push_all(layout, {name: built[name]}, host)
            log(f"  [{i}/{len(built)}] pushed {name} ({built[name].size / 1e6:.1f} MB)")
        return sorted(built)


@contextlib.contextmanager
def seed_registry(storage: Path) -> Iterator[str]:
    """A throwaway registry on 127.0.0.1 serving `storage` (made if missing): its host:port."""
    storage.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cfg = storage.parent / "seed-registry.yml"
    cfg.write_text(yaml.safe_dump(registry_config(storage, f"127.0.0.1:{port}")))
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(lambda: answers(f"http://127.0.0.1:{port}/v2/"), 20)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _has(url: str, name: str, digest: str | None) -> bool:
    """Whether the registry at `url` holds `name` (at `digest`, unless None)."""
    repo, _, tag = name.removeprefix(f"{REGISTRY_HOST}/").rpartition(":")
    try:
        resp = requests.head(
            f"{url}/v2/{repo}/manifests/{tag}",
            timeout=5,
            headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.oci.image.index.v1+json"
            },
        )
        return resp.status_code == 200 and digest in (None, resp.headers.get("Docker-Content-Digest"))
    except requests.RequestException:
        return False


def answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2).close()
        return True
    except requests.RequestException:
        return False


def _wait(pred: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise LabError("the seeding registry (docker-registry on 127.0.0.1) did not start")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stack_functions(stack_file: Path) -> dict[str, str]:
    """function name -> image, from an OpenFaaS stack file."""
    doc = yaml.safe_load(stack_file.read_text())
    return {name: fn["image"] for name, fn in (doc.get("functions") or {}).items()}
