"""Which layer encoding starts fastest in the VM, and what it costs the NIC.

    python -m load.bench_layers [--image registry.lab/faas/heavy:0.1.0] [--runs 3]
        [--levels 1,3,9,19] [--layout build/images] [--nic-cpu 0]

Re-encodes the image's gzip layers with `nic_cache.transcode.recode` (zstd at each level,
and plain tar) in a child pinned to one core (`taskset -c N`, a NIC's weak core), timing its
CPU seconds; pushes every variant (same config, so the same image ID) to a CNCF registry on
127.0.0.1; then a private containerd 1.6 whose root is a tmpfs (as the lab's VM stores are)
pulls each variant `--runs` times: `ctr content fetch` (resolve + fetch) and then `ctr images
pull` of the fetched content (the unpack), and a plain `ctr images pull` for the total.
gzip is pulled twice: with containerd's `unpigz` helper (the default when it is on PATH) and
with `CONTAINERD_DISABLE_PIGZ=1` (Go's inflate). Prints medians and the ratio against gzip
measured in the same run; `--json FILE` writes every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faas_accel.testbed.procs import run
from faas_accel.testbed.registry import Registry
from faas_accel.testbed.runtimes import Containerd

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TMPFS_SIZE = "4g"


@dataclass(frozen=True)
class Variant:
    name: str
    encoding: str  # gzip | zstd | tar
    level: int | None
    pigz: bool
    bytes: int  # layer bytes sent to the VM
    nic_cpu_s: float  # CPU seconds of the recode on one NIC core (0 for the original)
    nic_wall_s: float


@dataclass(frozen=True)
class Sample:
    variant: str
    run: int
    fetch_s: float
    unpack_s: float
    pull_s: float


def load_image(layout: Path, name: str) -> tuple[dict[str, Any], Path]:
    """The image manifest tagged `name` in an OCI layout, and the layout's blob folder."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_bytes())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
            manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_bytes())
            return manifest, blobs
    raise SystemExit(f"{name} is not in {layout} (build it: faas-accel images build --only {name})")


def recode_pinned(src: Path, dst: Path, encoding: str, level: int, cpu: int) -> dict[str, Any]:
    """Run one recode in a child pinned to `cpu`; its CPU seconds come from the child's rusage."""
    code = (
        "import json,sys;from nic_cache import transcode as t\n"
        "r=t.recode(open(sys.argv[1],'rb'),open(sys.argv[2],'wb'),encoding=sys.argv[3],level=int(sys.argv[4]))\n"
        "print(json.dumps({'digest':r.digest,'size':r.size,'diff_id':r.diff_id,'media_type':r.media_type}))"
    )
    before = os.times()
    started = time.monotonic()
    out = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-c", code, str(src), str(dst), encoding, str(level)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    wall = time.monotonic() - started
    after = os.times()
    result: dict[str, Any] = json.loads(out.stdout)
    result["cpu_s"] = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    result["wall_s"] = wall
    return result


def push_variant(
    registry: Registry, repo: str, tag: str, manifest: dict[str, Any], blobs: dict[str, Path]
) -> None:
    """Push one variant: the blobs the registry lacks (variants share the config), then the manifest."""
    for descriptor in [manifest["config"], *manifest["layers"]]:
        if not registry.has_blob(repo, descriptor["digest"]):
            registry.push_blob(repo, descriptor["digest"], blobs[descriptor["digest"]])
    registry.push_manifest(repo, tag, json.dumps(manifest).encode(), OCI_MANIFEST)


def build_variants(
    manifest: dict[str, Any], blobs: Path, work: Path, levels: list[int], cpu: int
) -> tuple[list[Variant], dict[str, dict[str, Any]], dict[str, Path]]:
    """Every encoding of the image's layers: manifests by variant name, blob files by digest."""
    files: dict[str, Path] = {manifest["config"]["digest"]: blobs / manifest["config"]["digest"][7:]}
    config = json.loads(files[manifest["config"]["digest"]].read_bytes())
    diff_ids = config["rootfs"]["diff_ids"]
    for layer in manifest["layers"]:
        files[layer["digest"]] = blobs / layer["digest"][7:]
    gz_bytes = sum(layer["size"] for layer in manifest["layers"])
    variants = [
        Variant("gzip+unpigz", "gzip", None, True, gz_bytes, 0.0, 0.0),
        Variant("gzip", "gzip", None, False, gz_bytes, 0.0, 0.0),
    ]
    manifests = {"gzip+unpigz": manifest, "gzip": manifest}
    for encoding, level in [("zstd", lvl) for lvl in levels] + [("tar", 0)]:
        name = f"zstd-{level}" if encoding == "zstd" else "tar"
        layers, cpu_s, wall_s = [], 0.0, 0.0
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            dst = work / f"{name}-{layer['digest'][7:19]}"
            r = recode_pinned(files[layer["digest"]], dst, encoding, level, cpu)
            if r["diff_id"] != diff_id:
                raise SystemExit(f"{name}: diff_id mismatch for {layer['digest']}")
            files[r["digest"]] = dst
            layers.append({"mediaType": r["media_type"], "digest": r["digest"], "size": r["size"]})
            cpu_s += r["cpu_s"]
            wall_s += r["wall_s"]
        manifests[name] = {**manifest, "layers": layers}
        variants.append(
            Variant(name, encoding, level or None, False, sum(x["size"] for x in layers), cpu_s, wall_s)
        )
        print(
            f"  {name:12} {variants[-1].bytes / 1e6:8.1f} MB  NIC CPU {cpu_s:6.2f} s (wall {wall_s:6.2f} s)",
            flush=True,
        )
    return variants, manifests, files


def timed(ctrd: Containerd, *args: str) -> float:
    started = time.monotonic()
    ctrd.ctr(*args, timeout=600)
    return time.monotonic() - started


def forget(ctrd: Containerd, ref: str) -> None:
    ctrd.ctr("images", "rm", "--sync", ref, check=False)
    left = ctrd.ctr("content", "ls", "-q", check=False).stdout.split()
    if left:
        ctrd.ctr("content", "rm", *left, check=False)


def measure(ctrd: Containerd, ref: str, variant: str, i: int) -> Sample:
    """One fetch-then-unpack and one plain pull of `ref`, each from an empty store."""
    forget(ctrd, ref)
    fetch = timed(ctrd, "content", "fetch", "--plain-http", ref)
    unpack = timed(ctrd, "images", "pull", "--plain-http", ref)
    forget(ctrd, ref)
    pull = timed(ctrd, "images", "pull", "--plain-http", ref)
    forget(ctrd, ref)
    print(
        f"  {variant:12} run {i}: fetch {fetch:5.2f} s + unpack {unpack:5.2f} s; pull {pull:5.2f} s",
        flush=True,
    )
    return Sample(variant, i, fetch, unpack, pull)


def tmpfs_containerd(env: dict[str, str] | None) -> Containerd:
    ctrd = Containerd(env=env)
    ctrd.root.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(ctrd.root)])
    return ctrd.start()


def table(variants: list[Variant], samples: list[Sample]) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(getattr(s, key + "_s") for s in samples if s.variant == name)

    base = med("gzip", "pull")
    lines = [
        f"{'variant':<12} {'MB':>7} {'NIC CPU s':>10} {'fetch s':>8} {'unpack s':>9} {'pull s':>7} "
        f"{'vs gzip':>8}"
    ]
    for v in variants:
        pull = med(v.name, "pull")
        lines.append(
            f"{v.name:<12} {v.bytes / 1e6:>7.1f} {v.nic_cpu_s:>10.2f} {med(v.name, 'fetch'):>8.2f} "
            f"{med(v.name, 'unpack'):>9.2f} {pull:>7.2f} {pull / base:>7.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="registry.lab/faas/heavy:0.1.0")
    parser.add_argument("--layout", type=Path, default=Path("build/images"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--levels", default="1,3,9,19")
    parser.add_argument("--nic-cpu", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    manifest, blobs = load_image(args.layout, args.image)
    levels = [int(x) for x in args.levels.split(",") if x]
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as tmp:
        work = Path(tmp)
        print(f"re-encoding {args.image} on CPU {args.nic_cpu}", flush=True)
        variants, manifests, files = build_variants(manifest, blobs, work, levels, args.nic_cpu)
        registry = Registry().start()
        plain = pigz = None
        try:
            for name, m in manifests.items():
                push_variant(registry, "bench/heavy", name.replace("+", "-"), m, files)
            pigz = tmpfs_containerd(None)
            plain = tmpfs_containerd({"CONTAINERD_DISABLE_PIGZ": "1"})
            for i in range(args.runs):  # round robin: a noisy neighbour hits every variant alike
                for v in variants:
                    ctrd = pigz if v.pigz else plain
                    samples.append(
                        measure(ctrd, f"{registry.host}/bench/heavy:{v.name.replace('+', '-')}", v.name, i)
                    )
        finally:
            for c in (pigz, plain):
                if c is not None:
                    c.stop()
            registry.close()
    print()
    print(table(variants, samples))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"variants": [asdict(v) for v in variants], "samples": [asdict(s) for s in samples]}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
