"""Prometheus metrics, in prometheus_client's multiprocess mode under gunicorn.

When `PROMETHEUS_MULTIPROC_DIR` is set (the `cache serve` command sets it before gunicorn
starts), every worker writes its samples to files there and `/metrics` aggregates them.
Without it (tests, a single process), metrics live in a per-app registry. Store usage is
read from the index at scrape time, so every worker reports the same truth, and so is the
hit ratio per upstream: computed from the hit and miss counters of all workers.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .derived import DerivedIndex

if TYPE_CHECKING:
    from .store import Store
    from .transcode import Recoded


class StoreCollector(Collector):
    """Store usage and capacity, read from the index on each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        used, count = self.store.usage()
        yield GaugeMetricFamily("nic_cache_store_bytes", "Bytes of verified content stored", value=used)
        yield GaugeMetricFamily("nic_cache_store_blobs", "Blobs and manifests stored", value=count)
        yield GaugeMetricFamily(
            "nic_cache_capacity_bytes", "Byte budget of the store (0: unlimited)",
            value=self.store.capacity,
        )
        derived, _ = DerivedIndex(self.store).usage()
        yield GaugeMetricFamily(
            "nic_cache_derived_bytes", "Bytes of re-encoded layers and variant manifests", value=derived
        )


class HitRatioCollector(Collector):
    """`nic_cache_hit_ratio{upstream}`: hits / (hits + misses) of registry requests (manifests
    and blobs) since the counters started, from whatever `sources` collect."""

    def __init__(self, sources: Iterable[Collector]) -> None:
        self.sources = tuple(sources)

    def collect(self) -> Iterator[Metric]:
        hits: dict[str, float] = {}
        total: dict[str, float] = {}
        for source in self.sources:
            for metric in source.collect():
                if metric.name not in ("nic_cache_hits", "nic_cache_misses"):
                    continue
                for sample in metric.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    upstream = sample.labels.get("upstream", "")
                    total[upstream] = total.get(upstream, 0.0) + sample.value
                    if metric.name == "nic_cache_hits":
                        hits[upstream] = hits.get(upstream, 0.0) + sample.value
        ratio = GaugeMetricFamily(
            "nic_cache_hit_ratio", "Share of registry requests served from the store, per upstream",
            labels=["upstream"],
        )
        for upstream in sorted(total):
            if total[upstream]:
                ratio.add_metric([upstream], hits.get(upstream, 0.0) / total[upstream])
        yield ratio


class Metrics:
    """The cache's metrics; one instance per process."""

    def __init__(self, store: Store) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        own = None if self.multiprocess else CollectorRegistry()
        self.store = store
        self._own = own
        self.requests = Counter(
            "nic_cache_requests", "Registry requests", ["kind", "method", "status"], registry=own
        )
        self.hits = Counter(
            "nic_cache_hits", "Requests served from the store", ["kind", "upstream"], registry=own
        )
        self.misses = Counter(
            "nic_cache_misses", "Requests that went upstream", ["kind", "upstream"], registry=own
        )
        self.bytes_served = Counter("nic_cache_served_bytes", "Bytes sent to clients", registry=own)
        self.bytes_upstream = Counter(
            "nic_cache_upstream_bytes", "Blob bytes fetched from upstreams", registry=own
        )
        self.fills_in_flight = Gauge(
            "nic_cache_fills_in_flight", "Blob fills in progress", registry=own,
            multiprocess_mode="livesum",
        )
        self.fills_failed = Counter("nic_cache_fills_failed", "Blob fills that failed", registry=own)
        self.passthrough = Counter(
            "nic_cache_passthrough", "Blobs and manifests served without storing them", ["reason"],
            registry=own,
        )
        self.index_write_errors = Counter(
            "nic_cache_index_write_errors", "Index writes that failed (the request was served)",
            registry=own,
        )
        self.evictions = Counter("nic_cache_evictions", "Eviction runs that dropped blobs", registry=own)
        self.eviction_seconds = Counter(
            "nic_cache_eviction_seconds", "Wall seconds eviction runs took (choosing and deleting)",
            registry=own,
        )
        self.eviction_policy_seconds = Counter(
            "nic_cache_eviction_policy_seconds",
            "Of those, seconds the policy took to relearn, choose and save its state", registry=own,
        )
        self.transcode_cpu = Counter(
            "nic_cache_transcode_cpu_seconds", "CPU seconds spent re-encoding layers", registry=own
        )
        self.transcoded = Counter(
            "nic_cache_transcoded_layers", "Layers re-encoded (verified or refused)", registry=own
        )
        self.variants_served = Counter(
            "nic_cache_variants_served", "Manifests answered with re-encoded layers", registry=own
        )

    def count_eviction(self, seconds: float, policy_seconds: float) -> None:
        """One eviction run that dropped blobs (store.py), and how long it and its policy took."""
        self.evictions.inc()
        self.eviction_seconds.inc(seconds)
        self.eviction_policy_seconds.inc(policy_seconds)

    def count_transcode(self, recoded: Recoded) -> None:
        """One layer re-encoded (transcoder.py), whatever its check said."""
        self.transcode_cpu.inc(recoded.cpu_s)
        self.transcoded.inc()

    def registry(self) -> CollectorRegistry:
        """A registry to scrape: this process's, or the aggregate of all workers."""
        if self._own is not None:
            reg = self._own
            if not getattr(reg, "_nic_store", False):
                reg.register(StoreCollector(self.store))
                reg.register(HitRatioCollector([self.hits, self.misses]))
                reg._nic_store = True  # type: ignore[attr-defined]
            return reg
        reg = CollectorRegistry()
        workers = WorkerFiles(None)  # type: ignore[no-untyped-call]
        reg.register(workers)
        reg.register(StoreCollector(self.store))
        reg.register(HitRatioCollector([workers]))
        return reg

    def exposition(self) -> bytes:
        """The text format for `/metrics`."""
        return generate_latest(self.registry())

    def snapshot(self) -> dict[str, float]:
        """Flat `{name{labels}: value}` of every sample, for `/api/v1/stats`."""
        out: dict[str, float] = {}
        for metric in self.registry().collect():
            for s in metric.samples:
                if s.name.endswith("_created"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pid")
                key = f"{s.name}{{{labels}}}" if labels else s.name
                out[key] = out.get(key, 0.0) + s.value
        return out


class WorkerFiles(multiprocess.MultiProcessCollector):
    """The workers' metric files merged, except one still 0 bytes long.

    prometheus_client creates a worker's file before it sizes it; a scrape that reads it in that
    window fails whole with struct.error (prometheus/client_python#1199), which made `/metrics`,
    `/api/v1/stats` and `/status` answer 500 while a worker booted, and a worker killed in the
    window would leave the empty file for good. Once sized, the file reads as valid (zeros).
    """

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            with contextlib.suppress(FileNotFoundError):
                if os.path.getsize(path) > 0:
                    files.append(path)
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return,no-untyped-call]
