"""The services an app instance wires together, kept in `app.extensions["nic_cache"]`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .access import Access
from .config import Config
from .fill import Fills
from .metrics import Metrics
from .prefetch import Prefetcher
from .prewarm.state import PrewarmState
from .proxy import Mirror
from .store import Store
from .transcoder import Transcoder
from .upstream import Upstreams


@dataclass
class Services:
    """Everything a view needs; built once per process by `create_app`."""

    config: Config
    store: Store
    upstreams: Upstreams
    fills: Fills
    mirror: Mirror
    prefetcher: Prefetcher
    metrics: Metrics
    prewarm: PrewarmState
    access: Access
    transcoder: Transcoder


def services() -> Services:
    """The current app's services."""
    svc: Services = current_app.extensions["nic_cache"]
    return svc
