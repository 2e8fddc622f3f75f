"""gunicorn settings for `faas-accel cache serve` (loaded with `-c python:nic_cache.gunicorn_conf`)."""

from __future__ import annotations

import os
from typing import Any

worker_class = "gthread"
sendfile = True
keepalive = 75  # registry clients reuse connections across many blob requests
timeout = 120  # heartbeat only: gthread keeps long streams alive in other threads
graceful_timeout = 30
accesslog = os.environ.get("NIC_CACHE_ACCESS_LOG") or None


def child_exit(server: Any, worker: Any) -> None:
    """Let prometheus_client drop the live gauges of a worker that exited."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
control_socket_disable = True  # several caches (lab, tests) may run on one host
