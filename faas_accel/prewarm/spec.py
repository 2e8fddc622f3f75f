"""Pure parsing of `prewarm.yml` into frozen dataclasses.

`parse_prewarm(text, environ, source=...)` reads the YAML, expands `${VAR}` and
`${VAR:-default}` in string values from `environ`, and validates every key. Every error is a
PrewarmConfigError whose message starts with `file:line:` and names the key and the reason.
No file other than the one given is read here (stack files and APScheduler's own checks of a
cron expression come later, in `loader.py`, with the locations recorded here).

Cron expressions are crontab's, read by `cron.py`.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from nic_cache.envvars import Path, expand_vars
from nic_cache.errors import NicCacheError
from nic_cache.prewarm.state import NAME_RE
from nic_cache.reference import parse_image
from nic_cache.units import parse_duration, parse_rate, parse_size

from .cron import Cron, parse_cron
from .errors import PrewarmConfigError
from .yamldoc import load_document

_PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")


@dataclass(frozen=True, kw_only=True)
class CacheTarget:
    """The cache a prewarm file fills (both overridable on the command line)."""

    url: str | None = None  # e.g. http://198.18.1.1:5000; required somewhere
    token: str | None = None  # the cache's admin_token


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The budget background fills share inside the cache; live misses are never limited."""

    concurrency: int = 2  # background blob fills at once, across every gunicorn worker
    bandwidth: int = 0  # bits/s for all background fills together (0: no cap; they still yield)


@dataclass(frozen=True, kw_only=True)
class PopularSource:
    """The top images by decayed use count, as the cache's /api/v1/popular ranks them."""

    top: int = 20  # how many images
    window: float = 7 * 86400.0  # only uses this recent count (7d)
    min_pulls: int = 1  # images with fewer pulls + deploys in the window are skipped
    half_life: float = 86400.0  # a use this old counts half (1d); 0 turns decay off


@dataclass(frozen=True, kw_only=True)
class ImagesSource:
    """A fixed list of images, normalized (`python:3.12` -> docker.io/library/python:3.12)."""

    images: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StackSource:
    """Every `image:` of an OpenFaaS stack file, read at each run."""

    path: str  # as written in prewarm.yml
    resolved: str  # relative paths are taken from the prewarm file's directory


@dataclass(frozen=True, kw_only=True)
class PredictedSource:
    """What the cache's eviction policy expects to be pulled within `horizon` and lacks, at
    most `budget` bytes of it (GET /api/v1/predicted; needs eviction: predictive)."""

    budget: int  # bytes fetched per run at most
    horizon: float = 1800.0  # seconds ahead a predicted use may be (30m)


Source = PopularSource | ImagesSource | StackSource | PredictedSource


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One named schedule: a trigger, a source of images, and what to do with them."""

    name: str
    cron: Cron | None = None
    interval: float | None = None  # seconds; intervals are counted from the Unix epoch
    timezone: str | None = None  # IANA name; None: the file's `timezone`, else local time
    jitter: float = 0.0  # each run starts up to this many seconds late, at random
    source: Source
    pin: bool = False  # pinned images are never evicted
    platforms: tuple[str, ...] | None = None  # None: the cache's configured platforms
    where: Mapping[str, str] = field(default_factory=dict, compare=False)  # key -> "file:line"

    def at(self, key: str = "") -> str:
        """`file:line` of one of this schedule's keys (or of the schedule itself)."""
        return self.where.get(key) or self.where.get("", "")

    @property
    def trigger_text(self) -> str:
        """`cron 0 3 * * * (UTC)`, `interval 15m`, with the jitter if any."""
        if self.cron is not None:
            text = f"cron {self.cron.expr}" + (f" ({self.timezone})" if self.timezone else "")
        else:
            text = f"interval {_seconds_text(self.interval or 0)}"
        return text + (f", jitter {_seconds_text(self.jitter)}" if self.jitter else "")

    def source_dict(self) -> dict[str, Any]:
        """The source as plain data (for the cache's schedule listing)."""
        src = self.source
        if isinstance(src, PopularSource):
            return {"popular": {"top": src.top, "window": src.window, "min_pulls": src.min_pulls,
                                "half_life": src.half_life}}  # fmt: skip
        if isinstance(src, ImagesSource):
            return {"images": list(src.images)}
        if isinstance(src, PredictedSource):
            return {"predicted": {"budget": src.budget, "horizon": src.horizon}}
        return {"stack": src.path}


@dataclass(frozen=True, kw_only=True)
class PrewarmSpec:
    """A whole prewarm file."""

    source: str  # the file it came from
    cache: CacheTarget = field(default_factory=CacheTarget)
    timezone: str | None = None  # default for schedules without one; None: local time
    limits: Limits = field(default_factory=Limits)
    schedules: tuple[Schedule, ...] = ()

    def schedule(self, name: str) -> Schedule:
        """The schedule called `name`; raises KeyError naming the known ones."""
        for s in self.schedules:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.schedules) or "none"
        raise KeyError(f"no schedule {name!r} in {self.source} (known: {known})")


_TOP_KEYS = ("cache", "timezone", "limits", "schedules")
_CACHE_KEYS = ("url", "token")
_LIMIT_KEYS = ("concurrency", "bandwidth")
_SCHEDULE_KEYS = ("name", "cron", "interval", "timezone", "jitter", "source", "pin", "platforms")
_SOURCE_KEYS = ("popular", "images", "stack", "predicted")
_POPULAR_KEYS = ("top", "window", "min_pulls", "half_life")
_PREDICTED_KEYS = ("budget", "horizon")

class _Doc:
    """The parsed document with the line of every key and item, for error messages."""

    def __init__(self, source: str, lines: dict[Path, int]) -> None:
        self.source = source
        self.lines = lines

    def where(self, path: Path) -> str:
        for n in range(len(path), -1, -1):
            line = self.lines.get(path[:n])
            if line:
                return f"{self.source}:{line}"
        return self.source

    def fail(self, path: Path, reason: str) -> PrewarmConfigError:
        name = _dotted(path)
        return PrewarmConfigError(f"{self.where(path)}: {name + ': ' if name else ''}{reason}")

    def mapping(self, value: Any, path: Path, keys: tuple[str, ...], what: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping ({what})")
        for key in value:
            if str(key) not in keys:
                raise self.fail((*path, str(key)), f"unknown key {str(key)!r} (known: {', '.join(keys)})")
        return {str(k): v for k, v in value.items()}


def parse_prewarm(
    text: str, environ: Mapping[str, str], *, source: str = "<prewarm>", base_dir: str | None = None
) -> PrewarmSpec:
    """Parse and validate a prewarm document; see the module docstring."""
    node, raw = load_document(text, source, construct=True)
    doc = _Doc(source, _lines(node) if node is not None else {})
    top = doc.mapping(raw, (), _TOP_KEYS, "cache, timezone, limits, schedules")
    top = expand_vars(top, environ, lambda at, var: doc.fail(at, f"environment variable {var} is not set"))
    cache = doc.mapping(top.get("cache"), ("cache",), _CACHE_KEYS, "url and token")
    url = _opt_str(cache.get("url"), doc, ("cache", "url"))
    if url is not None and not re.fullmatch(r"https?://[^/\s]+/?", url):
        raise doc.fail(("cache", "url"), f"need http(s)://host[:port], got {url!r}")
    tz = _timezone(top.get("timezone"), doc, ("timezone",))
    limits_raw = doc.mapping(top.get("limits"), ("limits",), _LIMIT_KEYS, "concurrency, bandwidth")
    limits = Limits(
        concurrency=_int(limits_raw.get("concurrency", 2), doc, ("limits", "concurrency"), least=1),
        bandwidth=_conv(parse_rate, limits_raw.get("bandwidth", 0), doc, ("limits", "bandwidth")),
    )
    items = top.get("schedules")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise doc.fail(("schedules",), "must be a list of schedules")
    schedules: list[Schedule] = []
    for i, item in enumerate(items):
        sched = _schedule(item, doc, ("schedules", i), base_dir)
        if any(s.name == sched.name for s in schedules):
            raise doc.fail(("schedules", i, "name"), f"duplicate schedule name {sched.name!r}")
        schedules.append(sched)
    return PrewarmSpec(
        source=source,
        cache=CacheTarget(
            url=url.rstrip("/") if url else None,
            token=_opt_str(cache.get("token"), doc, ("cache", "token")),
        ),
        timezone=tz,
        limits=limits,
        schedules=tuple(schedules),
    )


def _schedule(item: Any, doc: _Doc, path: Path, base_dir: str | None) -> Schedule:
    raw = doc.mapping(item, path, _SCHEDULE_KEYS, "name, cron or interval, source, ...")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise doc.fail((*path, "name"), f"need a name of letters, digits, '.', '_', '-', got {name!r}")
    has_cron, has_interval = raw.get("cron") is not None, raw.get("interval") is not None
    if has_cron == has_interval:
        raise doc.fail(path, f"schedule {name!r} needs exactly one of cron or interval")
    cron = interval = None
    if has_cron:
        if not isinstance(raw["cron"], str):
            raise doc.fail((*path, "cron"), 'must be a string like "0 3 * * *"')
        cron = _conv(parse_cron, raw["cron"], doc, (*path, "cron"))
    else:
        interval = _conv(parse_duration, raw["interval"], doc, (*path, "interval"))
        if interval < 1:
            raise doc.fail((*path, "interval"), f"must be at least 1s, got {raw['interval']!r}")
    if "source" not in raw:
        raise doc.fail(path, f"schedule {name!r} needs a source (popular, images, stack or predicted)")
    pin = raw.get("pin", False)
    if not isinstance(pin, bool):
        raise doc.fail((*path, "pin"), f"must be true or false, got {pin!r}")
    keys = ("", *_SCHEDULE_KEYS)
    return Schedule(
        name=name,
        cron=cron,
        interval=interval,
        timezone=_timezone(raw.get("timezone"), doc, (*path, "timezone")),
        jitter=_conv(parse_duration, raw.get("jitter", 0), doc, (*path, "jitter")),
        source=_source(raw["source"], doc, (*path, "source"), base_dir),
        pin=pin,
        platforms=_platforms(raw.get("platforms"), doc, (*path, "platforms")),
        where={k: doc.where((*path, k) if k else path) for k in keys},
    )


def _source(value: Any, doc: _Doc, path: Path, base_dir: str | None) -> Source:
    raw = doc.mapping(value, path, _SOURCE_KEYS, "one of popular, images, stack, predicted")
    if len(raw) != 1:
        raise doc.fail(path, "needs exactly one of popular, images, stack or predicted")
    kind, spec = next(iter(raw.items()))
    at = (*path, kind)
    if kind == "popular":
        pop = doc.mapping(spec, at, _POPULAR_KEYS, "top, window, min_pulls, half_life")
        window = _conv(parse_duration, pop.get("window", "7d"), doc, (*at, "window"))
        if window <= 0:
            raise doc.fail((*at, "window"), "must be longer than 0s")
        return PopularSource(
            top=_int(pop.get("top", 20), doc, (*at, "top"), least=1),
            window=window,
            min_pulls=_int(pop.get("min_pulls", 1), doc, (*at, "min_pulls"), least=0),
            half_life=_conv(parse_duration, pop.get("half_life", "1d"), doc, (*at, "half_life")),
        )
    if kind == "predicted":
        return _predicted(doc.mapping(spec, at, _PREDICTED_KEYS, "budget, horizon"), doc, at)
    if kind == "images":
        if not isinstance(spec, list) or not spec:
            raise doc.fail(at, "must be a non-empty list of image references")
        images: list[str] = []
        for j, image in enumerate(spec):
            ref = _conv(_image, image, doc, (*at, j))
            if ref not in images:
                images.append(ref)
        return ImagesSource(images=tuple(images))
    if not isinstance(spec, str) or not spec:
        raise doc.fail(at, "must be the path of an OpenFaaS stack file")
    resolved = spec if os.path.isabs(spec) or base_dir is None else os.path.join(base_dir, spec)
    return StackSource(path=spec, resolved=os.path.normpath(resolved))


def _predicted(raw: dict[str, Any], doc: _Doc, at: Path) -> PredictedSource:
    budget = _conv(parse_size, raw.get("budget", 0), doc, (*at, "budget"))
    if budget <= 0:
        raise doc.fail((*at, "budget"), "need the bytes one run may fetch, more than 0 (e.g. 2GiB)")
    horizon = _conv(parse_duration, raw.get("horizon", "30m"), doc, (*at, "horizon"))
    if horizon > 7 * 86400:
        raise doc.fail((*at, "horizon"), f"must be at most 7d, got {raw['horizon']!r}")
    return PredictedSource(budget=budget, horizon=horizon)


def _image(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"need an image reference string, got {value!r}")
    try:
        return str(parse_image(value))
    except NicCacheError as exc:
        raise ValueError(str(exc)) from exc


def _platforms(value: Any, doc: _Doc, path: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise doc.fail(path, "need a list like [linux/amd64, linux/arm64/v8]")
    for j, item in enumerate(items):
        if not isinstance(item, str) or not _PLATFORM_RE.fullmatch(item):
            raise doc.fail((*path, j), f"need os/arch[/variant], got {item!r}")
    return tuple(items)


def _timezone(value: Any, doc: _Doc, path: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise doc.fail(path, f"need an IANA time zone name like Europe/Paris, got {value!r}")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise doc.fail(path, f"unknown time zone {value!r}") from None
    return value


def _conv(fn: Any, value: Any, doc: _Doc, path: Path) -> Any:
    try:
        return fn(value)
    except (ValueError, TypeError) as exc:
        raise doc.fail(path, str(exc)) from exc


def _int(value: Any, doc: _Doc, path: Path, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise doc.fail(path, f"need an integer >= {least}, got {value!r}")
    return value


def _opt_str(value: Any, doc: _Doc, path: Path) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | int):
        raise doc.fail(path, f"need a string, got {value!r}")
    return str(value)


def _lines(node: yaml.Node, path: Path = ()) -> dict[Path, int]:
    """The line of every mapping key and sequence item, by path."""
    out: dict[Path, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            out.update(_lines(value_node, key))
            out[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            out.update(_lines(item, (*path, i)))
    return out


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _seconds_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
