"""The policy replay's workload, the same one `faas-accel bench policy` simulates.

A slice of an Azure-shaped trace (minutes `start` to `start + minutes`), each function one
image built by the simulator's model (faas_accel/bench/policy_sim.py: shared base layers plus
its own layer, the same seeded draws) with every size divided by `scale`, and the same cold
starts (a minute with invocations after more than `keepalive` idle minutes). Here each image
also becomes real OCI content: random layer bytes, a config and a manifest, pushed to an
upstream registry as `fn/f<i>:1` (bases once, mounted into every repository that uses them).

The simulator runs on the same slice and images, so its hit ratios compare one to one: its
`predictive-evict` is the service's predictive eviction alone, its `predictive` the service's
predictive eviction plus the predicted prewarm schedule.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from faas_accel.bench.policy_sim import ColdStart, ImageModel, Images, build_images, cold_starts, replay
from faas_accel.bench.policy_sim import policy_factory as sim_policy
from faas_accel.bench.trace import Trace

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
UPSTREAM = "registry.lab"  # how the cache names the replay's upstream


def slice_trace(trace: Trace, start: int, minutes: int) -> Trace:
    """Minutes [start, start + minutes) of `trace`, renumbered from 0, without the functions
    never invoked in them."""
    if not 0 <= start < start + minutes <= trace.minutes:
        raise ValueError(f"slice {start}+{minutes} is outside the trace's {trace.minutes} minutes")
    kept = [(name, tuple(m - start for m in active if start <= m < start + minutes))
            for name, active in zip(trace.functions, trace.active, strict=True)]  # fmt: skip
    kept = [(name, active) for name, active in kept if active]
    return Trace(f"{trace.source} minutes {start}-{start + minutes}", tuple(n for n, _ in kept),
                 tuple(a for _, a in kept), minutes, 0)  # fmt: skip


def scaled_model(model: ImageModel, scale: float) -> ImageModel:
    """The model with every size (and the prefetch link) divided by `scale`: the seeded draws
    are the same, so each size is the full-size one divided by `scale` (rounded)."""
    return replace(model, own_mb=model.own_mb / scale, base_mb=model.base_mb / scale,
                   prefetch_mbit=model.prefetch_mbit / scale)  # fmt: skip


@dataclass(frozen=True)
class Blob:
    """Content to push: its digest, bytes and media type."""

    digest: str
    data: bytes
    media_type: str


def _blob(data: bytes, media_type: str) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), data, media_type)


def layer_blob(name: str, size: int, seed: int) -> Blob:
    """Deterministic random bytes standing in for layer `name` (the cache never unpacks)."""
    rng = random.Random(f"{seed}:{name}")
    return _blob(rng.randbytes(size), LAYER)


def image_blobs(layers: list[Blob]) -> tuple[Blob, Blob]:
    """(config, manifest) of an image of `layers`."""
    rootfs = {"type": "layers", "diff_ids": [b.digest for b in layers]}
    config = _blob(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode(), CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config.digest, "size": len(config.data)},
        "layers": [{"mediaType": LAYER, "digest": b.digest, "size": len(b.data)} for b in layers],
    }
    return config, _blob(json.dumps(manifest, sort_keys=True).encode(), MANIFEST)


def repository(fn: int) -> str:
    """The upstream repository of function `fn`."""
    return f"fn/f{fn}"


def image_ref(fn: int) -> str:
    """The reference the cache logs a pull of function `fn` under."""
    return f"{UPSTREAM}/{repository(fn)}:1"


@dataclass(frozen=True)
class Workload:
    """The slice, the images (scaled sizes), its cold starts and the model as run."""

    trace: Trace
    model: ImageModel  # scaled
    images: Images
    events: tuple[ColdStart, ...]
    scale: float

    @classmethod
    def build(cls, trace: Trace, model: ImageModel, scale: float) -> Workload:
        """Images for every function of `trace`, its cold starts under `model.keepalive`."""
        scaled = scaled_model(model, scale)
        images = build_images(len(trace.functions), scaled)
        return cls(trace, scaled, images, tuple(cold_starts(trace, scaled.keepalive)), scale)

    def content(self) -> Iterator[tuple[int, list[tuple[str, Blob]], Blob, Blob]]:
        """Per function: (fn, [(layer name, blob)], config, manifest), bases first seen first."""
        made: dict[str, Blob] = {}
        for fn, keys in enumerate(self.images.keys):
            layers = []
            for key in keys:
                if key not in made:
                    made[key] = layer_blob(key, self.images.sizes[key], self.model.seed)
                layers.append((key, made[key]))
            config, manifest = image_blobs([b for _, b in layers])
            yield fn, layers, config, manifest

    def simulate(self, capacity: float, policies: list[str],
                 params: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:  # fmt: skip
        """The simulator's hit ratio (scored cold starts served with every layer stored) per
        policy on this workload, at `capacity` x the bytes of all layers."""
        nbytes = int(capacity * self.images.total)
        out = {}
        for name in policies:
            policy = sim_policy(name, self.images, list(self.events), nbytes, params or {})
            got = replay(policy, self.images, list(self.events), capacity=nbytes, model=self.model,
                         minutes=self.trace.minutes, names=self.trace.functions)  # fmt: skip
            out[name] = 1.0 - got.wan_served_share
        return out


def predictive_params(minute_seconds: float) -> dict[str, float]:
    """The predictive policy's time parameters with one trace minute lasting `minute_seconds`
    (its defaults are for real minutes: 60 s bins, a 120 s lead)."""
    factor = minute_seconds / 60.0
    return {"bin_seconds": 60.0 * factor, "lead": 120.0 * factor}


def offsets(events: tuple[ColdStart, ...], minute_seconds: float) -> list[float]:
    """When each cold start is replayed, in seconds from the start: its minute, spread evenly
    over that minute in the trace's (function) order."""
    per_minute: dict[int, int] = {}
    for ev in events:
        per_minute[ev.minute] = per_minute.get(ev.minute, 0) + 1
    seen: dict[int, int] = {}
    out = []
    for ev in events:
        k = seen.get(ev.minute, 0)
        seen[ev.minute] = k + 1
        out.append((ev.minute + k / per_minute[ev.minute]) * minute_seconds)
    return out
