"""Policies by name, as `eviction:` in nic-cache.yml and `faas-accel bench policy` name them.

`make_policy(name, **params)` checks the name and every parameter (name, type, range) and
raises PolicyError saying which one is wrong and why. A policy's parameters are its
constructor's keyword-only arguments; their defaults give their types.
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import Policy
from .gdsf import GDSF
from .lfu import LFU
from .lru import LRU
from .predictive import Predictive
from .s3fifo import S3FIFO

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (LRU, LFU, GDSF, S3FIFO, Predictive)}


class PolicyError(ValueError):
    """A policy name or parameter is wrong; `param` names the parameter (None: the name)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parameters(name: str) -> dict[str, Any]:
    """The parameters `name` takes, with their defaults."""
    cls = _policy_class(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def make_policy(name: str, **params: Any) -> Policy:
    """A fresh policy `name` with `params`; raises PolicyError for a bad name or parameter."""
    known = parameters(name)
    for key, value in params.items():
        if key not in known:
            hint = f"known: {', '.join(sorted(known))}" if known else "it takes none"
            raise PolicyError(f"policy {name!r} has no parameter {key!r} ({hint})", key)
        params[key] = _typed(name, key, value, known[key])
    try:
        return _policy_class(name)(**params)
    except ValueError as exc:
        param = str(exc).partition(":")[0]
        raise PolicyError(f"policy {name!r}: {exc}", param if param in known else None) from exc


def _policy_class(name: str) -> type[Policy]:
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        raise PolicyError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None


def _typed(name: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    ok = (
        isinstance(value, kind)
        if kind in (bool, str)
        else isinstance(value, int | float) and not isinstance(value, bool)
        and (kind is float or isinstance(value, int) or float(value).is_integer())
    )  # fmt: skip
    if not ok:
        raise PolicyError(f"policy {name!r}: {key}: need {_KIND_NAMES[kind]}, got {value!r}", key)
    return kind(value)


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a word"}
