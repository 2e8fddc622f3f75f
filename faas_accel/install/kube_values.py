"""The values file of `faas-accel install kubernetes`: defaults, and a checked merge.

Every key has a default here (deploy/kubernetes/values.yaml shows them all, commented);
a key the defaults do not have, or a value of another type, is refused with its dotted
name. The values under `_OPAQUE` keys (resources, upstreams, schedules...) are passed
through as they are.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidValue

DEFAULTS: dict[str, Any] = {
    "namespace": "faas-accel",
    "image": "ghcr.io/faas-accel/faas-accel:0.1.0",
    "imagePullPolicy": "IfNotPresent",
    "adminTokenSecret": "faas-accel-admin",
    "cache": {
        "port": 5000,
        "dataDir": "/var/lib/nic-cache",
        "capacity": "20GiB",
        "upstreams": {"docker.io": "https://registry-1.docker.io"},
        "statusPage": "token",
        "workers": 2,
        "threads": 32,
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "nodeSelector": {},
        "tolerations": [],
    },
    "prewarm": {
        "enabled": True,
        "schedules": [
            {
                "name": "nightly-top",
                "cron": "0 3 * * *",
                "source": {"popular": {"top": 20, "window": "7d", "min_pulls": 3}},
            }
        ],
        "limits": {"concurrency": 2, "bandwidth": "400Mbit"},
        "resources": {
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"cpu": "200m", "memory": "256Mi"},
        },
    },
    "containerd": {"configPath": "/etc/containerd/certs.d"},
    "gateway": {
        "namespace": "openfaas",
        "providerPort": 8081,
        "hookPort": 8082,
        "resources": {
            "requests": {"cpu": "50m", "memory": "96Mi"},
            "limits": {"cpu": "1", "memory": "384Mi"},
        },
    },
}
# keys whose value is free-form (no default shape to check against)
_OPAQUE = {
    ("cache", "upstreams"),
    ("cache", "resources"),
    ("cache", "nodeSelector"),
    ("cache", "tolerations"),
    ("prewarm", "schedules"),
    ("prewarm", "limits"),
    ("prewarm", "resources"),
    ("gateway", "resources"),
}


def load_values(path: Path) -> dict[str, Any]:
    """The values file over the defaults; InvalidValue names an unknown or mistyped key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidValue(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidValue(f"{path}: invalid YAML: {exc}") from exc
    return merge_values(raw or {}, source=str(path))


def merge_values(raw: Any, *, source: str = "<values>") -> dict[str, Any]:
    """`raw` over DEFAULTS, each key checked against the default's type."""
    return _merge(copy.deepcopy(DEFAULTS), raw, (), source)


def _merge(base: dict[str, Any], raw: Any, path: tuple[str, ...], source: str) -> dict[str, Any]:
    where = ".".join(path) or "the top level"
    if not isinstance(raw, dict):
        raise InvalidValue(f"{source}: {where}: must be a mapping")
    for key, value in raw.items():
        here = (*path, str(key))
        name = ".".join(here)
        if key not in base:
            raise InvalidValue(f"{source}: {name}: unknown key (known: {', '.join(sorted(base))})")
        default = base[key]
        if isinstance(default, dict) and here not in _OPAQUE:
            base[key] = _merge(default, value, here, source)
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise InvalidValue(f"{source}: {name}: must be a {type(default).__name__}, got {value!r}")
        base[key] = value
    return base
