"""The provider's Prometheus metrics: how long deploys take, phase by phase.

One registry per app (tests build many apps in one process); the provider runs as one
gunicorn worker, so no multiprocess aggregation is needed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

# cold starts range from a prepulled 0.3 s to a remote pull of a large image
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


class DeployMetrics:
    """`faas_accel_provider_deploy_seconds` and `..._deploy_phase_seconds{phase}` histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.total = Histogram(
            "faas_accel_provider_deploy_seconds",
            "Deploy or update, request to healthy function",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.phase = Histogram(
            "faas_accel_provider_deploy_phase_seconds",
            "Time of each deploy phase: resolve, fetch, unpack, start, healthy, other",
            ["phase"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, phases: dict[str, float], total: float) -> None:
        """Record one deploy."""
        self.total.observe(total)
        for name, seconds in phases.items():
            self.phase.labels(phase=name).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
