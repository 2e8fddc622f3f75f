"""gunicorn settings for `faas-accel cache serve` (loaded with `-c python:nic_cache.gunicorn_conf`).

Restart safety (a master killed with -9 leaves its workers running as orphans):
- an orphaned worker stops listening at once (`post_worker_init` watches its parent), so a
  new master can bind the port while the orphan finishes the streams it serves;
- the store is checked and crashed fills collected in `when_ready`, after the bind and
  before any worker starts, and never a fill an orphan still runs (nic_cache/scrub.py);
- a worker that exits first lets its running fills finish (`worker_exit`), up to
  `graceful_timeout`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

worker_class = "gthread"
sendfile = True
keepalive = 75  # registry clients reuse connections across many blob requests
timeout = 120  # heartbeat only: gthread keeps long streams alive in other threads
graceful_timeout = 30
accesslog = os.environ.get("NIC_CACHE_ACCESS_LOG") or None
control_socket_disable = True  # several caches (lab, tests) may run on one host
log = logging.getLogger("nic_cache.gunicorn")


def when_ready(server: Any) -> None:
    """Check the store against the index and collect crashed fills before workers start."""
    from nic_cache.config import load_config_file
    from nic_cache.scrub import startup

    config = load_config_file(os.environ.get("NIC_CACHE_CONFIG", "nic-cache.yml"))
    server.log.info("store: %s", startup(config))


def post_worker_init(worker: Any) -> None:
    """Watch for the master's death; see the module docstring."""
    threading.Thread(target=_release_listeners_when_orphaned, args=(worker,),
                     name="orphan-watch", daemon=True).start()  # fmt: skip


def _release_listeners_when_orphaned(worker: Any) -> None:
    while worker.alive and os.getppid() == worker.ppid:
        time.sleep(0.2)
    if os.getppid() == worker.ppid:
        return
    # Point the listening descriptors at /dev/null: the socket closes (once every orphan
    # did so) and the port is free, while the accepted connections keep being served.
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        for sock in worker.sockets:
            os.dup2(devnull, sock.fileno())
    finally:
        os.close(devnull)


def worker_exit(server: Any, worker: Any) -> None:
    """In a worker about to exit: let its fills land (a prefetch has no client to wait on)."""
    app = getattr(worker, "wsgi", None)
    svc = getattr(app, "extensions", {}).get("nic_cache") if app is not None else None
    if svc is not None:
        svc.fills.wait(graceful_timeout)


def child_exit(server: Any, worker: Any) -> None:
    """Let prometheus_client drop the live gauges of a worker that exited."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
