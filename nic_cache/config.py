"""Typed configuration for the NIC cache, parsed from `nic-cache.yml` plus the environment.

`load_config(stream, environ)` is pure: it reads the YAML text, expands `${VAR}` from
`environ`, applies `NIC_CACHE_<KEY>` overrides for top-level scalars and returns frozen
dataclasses. Every error names the key and, when it came from the file, its line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import IO, Any
from urllib.parse import urlsplit

import yaml

from .envvars import Path, expand_vars
from .errors import ConfigError
from .policy import PolicyError, make_policy
from .reference import HOST_RE
from .units import parse_duration, parse_size

ENV_PREFIX = "NIC_CACHE_"
_BOOLS = {"true": True, "false": False}  # strings come from ${VAR} expansion


@dataclass(frozen=True, kw_only=True)
class UpstreamConfig:
    """One upstream registry, keyed by the host written in image references."""

    url: str  # base URL, e.g. https://registry-1.docker.io or http://198.18.0.1:5000
    username: str | None = None  # basic credentials, also sent to the token endpoint
    password: str | None = None
    tls_verify: bool = True  # False accepts self-signed certificates
    public: bool = False  # true: every client may read all of it (no per-client access checks)
    realms: tuple[str, ...] = ()  # https token realms on other hosts that may get credentials
    transcode: bool = True  # False: never offer re-encoded layers of this upstream's images


@dataclass(frozen=True, kw_only=True)
class TranscodeConfig:
    """`transcode:`: re-encode stored gzip layers for faster unpacking in the VMs (transcoder.py)."""

    encoding: str = "zstd"  # zstd | tar | off
    level: int = 3  # zstd level (1-19); 3: load/bench_layers.py's numbers
    digest_pinned: bool = False  # True also offers variants to digest-pinned pulls
    mirror_form: bool = False  # True also offers them to ?ns= and registry-mirrors pulls
    wait: float = 600.0  # seconds a queued image waits for its blobs to be filled (10m)


@dataclass(frozen=True, kw_only=True)
class EvictionConfig:
    """`eviction:`: the policy (nic_cache/policy) that picks victims over `capacity`."""

    policy: str = "predictive"  # lru | lfu | gdsf | s3fifo | predictive (results/policy/)
    params: Mapping[str, Any] = field(default_factory=dict)  # the policy's parameters


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole cache configuration; each field's default is in its comment."""

    listen: str = "0.0.0.0:5000"  # host:port gunicorn binds
    data_dir: str = "/var/lib/nic-cache"  # blobs/, tmp/, index.sqlite
    capacity: int = 20 * 1024**3  # byte budget for the store (20GiB); 0 disables eviction
    low_watermark: float = 0.9  # eviction frees down to this fraction of capacity
    admin_token: str | None = None  # bearer token for /api/v1; None leaves the admin API closed
    default_upstream: str | None = None  # used when a request names none
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    tag_ttl: float = 300.0  # seconds a tag is trusted before a HEAD revalidation (5m)
    platforms: tuple[str, ...] = ("linux/amd64",)  # what prefetch fills from an index
    connect_timeout: float = 5.0  # seconds to connect to an upstream
    read_timeout: float = 60.0  # seconds without a byte from an upstream before giving up
    retries: int = 3  # retries of idempotent upstream requests, with backoff
    workers: int = 4  # gunicorn worker processes
    threads: int = 32  # threads per worker (each streaming client holds one)
    verify_on_start: str = "sizes"  # check stored blobs at start: sizes | digests | off
    pull_log_max_age: float = 30 * 86400.0  # pull-log rows older than this are pruned (30d)
    pull_log_max_rows: int = 100_000  # the pull log keeps at most this many rows (0: no bound)
    access_ttl: float = 60.0  # seconds a client's upstream access answer is reused (1m)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    eviction: EvictionConfig = field(default_factory=EvictionConfig)
    status_page: str = "token"  # /status: token (the admin token) | open (anyone) | off

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0] or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


_TOP_KEYS = {f.name for f in fields(Config)}
_UPSTREAM_KEYS = {f.name for f in fields(UpstreamConfig)}
_TRANSCODE_KEYS = {f.name for f in fields(TranscodeConfig)}


def load_config_file(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return load_config(fh, os.environ if environ is None else environ, source=path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc


def load_config(stream: IO[str] | str, environ: Mapping[str, str], *, source: str = "<config>") -> Config:
    """Parse, expand and validate a config document into a Config."""
    text = stream if isinstance(stream, str) else stream.read()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    lines = _key_lines(node) if node is not None else {}

    def where(*path: str) -> str:
        line = lines.get(path)
        return f"{source}:{line}" if line else source

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values")

    def unset(path: Path, name: str) -> ConfigError:
        keys = tuple(str(p) for p in path if isinstance(p, str))  # a list item: its list's key
        return ConfigError(f"{where(*keys)}: {'.'.join(keys)}: environment variable {name} is not set")

    raw = expand_vars(raw, environ, unset)
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX) :].lower()
            if name in _TOP_KEYS and name not in ("upstreams", "platforms"):
                raw[name] = value
                lines.pop((name,), None)
    return _build(raw, where)


def _key_lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            out[key] = key_node.start_mark.line + 1
            out.update(_key_lines(value_node, key))
    return out


def _build(raw: dict[str, Any], where: Any) -> Config:
    unknown = sorted(set(map(str, raw)) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{where(unknown[0])}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    kwargs: dict[str, Any] = {}

    def conv(key: str, fn: Any) -> None:
        if key in raw and raw[key] is not None:
            try:
                kwargs[key] = fn(raw[key])
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{where(key)}: {key}: {exc}") from exc

    conv("listen", _listen)
    conv("data_dir", _nonempty_str)
    conv("capacity", parse_size)
    conv("low_watermark", _fraction)
    conv("admin_token", _nonempty_str)
    conv("default_upstream", _nonempty_str)
    conv("tag_ttl", parse_duration)
    conv("connect_timeout", parse_duration)
    conv("read_timeout", parse_duration)
    conv("retries", _count)
    conv("workers", _positive)
    conv("threads", _positive)
    conv("platforms", _platforms)
    conv("verify_on_start", _verify_mode)
    conv("pull_log_max_age", parse_duration)
    conv("pull_log_max_rows", _count)
    conv("access_ttl", parse_duration)
    conv("status_page", _status_page)
    ups = raw.get("upstreams") or {}
    if not isinstance(ups, dict):
        raise ConfigError(f"{where('upstreams')}: upstreams: must map registry hosts to {{url: ...}}")
    upstreams = {}
    for host, spec in ups.items():
        host = str(host)
        if not HOST_RE.fullmatch(host):
            raise ConfigError(f"{where('upstreams', host)}: upstreams: invalid registry host {host!r}")
        upstreams[host] = _upstream(host, spec, where)
    kwargs["upstreams"] = upstreams
    if raw.get("transcode") is not None:
        kwargs["transcode"] = _transcode(raw["transcode"], where)
    if raw.get("eviction") is not None:
        kwargs["eviction"] = _eviction(raw["eviction"], where)
    default = kwargs.get("default_upstream")
    if default is not None and default not in upstreams:
        raise ConfigError(
            f"{where('default_upstream')}: default_upstream: {default!r} is not one of the "
            f"upstreams ({', '.join(sorted(upstreams)) or 'none configured'})"
        )
    return Config(**kwargs)


def _upstream(host: str, spec: Any, where: Any) -> UpstreamConfig:
    loc = where("upstreams", host)
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{loc}: upstreams.{host}: must be a mapping with at least url")
    _refuse_unknown(spec, _UPSTREAM_KEYS, where, "upstreams", host)
    url = spec.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{loc}: upstreams.{host}.url: need an http(s) URL, got {url!r}")
    user, password = spec.get("username"), spec.get("password")
    if (user is None) != (password is None):
        raise ConfigError(f"{loc}: upstreams.{host}: username and password go together")
    flags = {}
    for key, default in (("tls_verify", True), ("public", False), ("transcode", True)):
        value = _as_bool(spec.get(key, default))
        if value is None:
            raise ConfigError(f"{loc}: upstreams.{host}.{key}: must be true or false")
        flags[key] = value
    realms = spec.get("realms") or []
    if isinstance(realms, str):
        realms = [realms]
    if not isinstance(realms, list) or not all(
        isinstance(r, str) and urlsplit(r).scheme == "https" and urlsplit(r).netloc for r in realms
    ):
        raise ConfigError(
            f"{where('upstreams', host, 'realms')}: upstreams.{host}.realms: need a list of https "
            "token URLs (credentials never go over plain http to another host)"
        )
    return UpstreamConfig(
        url=str(url).rstrip("/"),
        username=None if user is None else str(user),
        password=None if password is None else str(password),
        **flags,
        realms=tuple(realms),
    )


def _verify_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("sizes", "digests", "off"):
        raise ValueError(f"need sizes, digests or off, got {value!r}")
    return text


def _status_page(value: Any) -> str:
    text = "off" if value is False else str(value).strip().lower()  # YAML reads a bare `off` as false
    if text not in ("token", "open", "off"):
        raise ValueError(f"need token, open or off, got {value!r}")
    return text


def _transcode(spec: Any, where: Any) -> TranscodeConfig:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where('transcode')}: transcode: must be a mapping (encoding, level, ...)")
    _refuse_unknown(spec, _TRANSCODE_KEYS, where, "transcode")
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        loc = f"{where('transcode', key)}: transcode.{key}"
        if key == "encoding":
            if value is False:
                value = "off"  # YAML reads a bare `off` as false
            if value not in ("zstd", "tar", "off"):
                raise ConfigError(f"{loc}: must be zstd, tar or off, got {value!r}")
        elif key == "level":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 19:
                raise ConfigError(f"{loc}: must be an integer from 1 to 19, got {value!r}")
        elif key == "wait":
            try:
                value = parse_duration(value)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{loc}: {exc}") from exc
        else:
            value = _as_bool(value)
            if value is None:
                raise ConfigError(f"{loc}: must be true or false")
        kwargs[key] = value
    return TranscodeConfig(**kwargs)


def _eviction(spec: Any, where: Any) -> EvictionConfig:
    """`eviction: gdsf`, or a mapping: `policy:` plus that policy's parameters."""
    short = isinstance(spec, str)
    if short:
        spec = {"policy": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where('eviction')}: eviction: a policy name or a mapping with policy: ...")
    params = {str(k): v for k, v in spec.items() if k != "policy"}
    name = spec.get("policy", EvictionConfig.policy)
    try:
        make_policy(name, **params)
    except PolicyError as exc:
        key = exc.param or "policy"
        loc = where("eviction") if short or key not in spec else where("eviction", key)
        raise ConfigError(f"{loc}: eviction.{key}: {exc}") from exc
    return EvictionConfig(policy=name, params=params)


def _refuse_unknown(spec: dict[str, Any], known: set[str], where: Any, *path: str) -> None:
    unknown = sorted(set(map(str, spec)) - known)
    if unknown:
        raise ConfigError(
            f"{where(*path, unknown[0])}: {'.'.join(path)}: unknown key {unknown[0]!r} "
            f"(known: {', '.join(sorted(known))})"
        )


def _as_bool(value: Any) -> bool | None:
    """A YAML boolean, or one of the words `_BOOLS` knows; None for anything else."""
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    return value if isinstance(value, bool) else None


def _listen(value: Any) -> str:
    text = str(value)
    _, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"need host:port, got {text!r}")
    return text


def _nonempty_str(value: Any) -> str:
    text = str(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _fraction(value: Any) -> float:
    f = float(value)
    if not 0 < f <= 1:
        raise ValueError(f"need a fraction in (0, 1], got {value!r}")
    return f


def _count(value: Any) -> int:
    if isinstance(value, bool) or int(value) < 0:
        raise ValueError(f"need a count >= 0, got {value!r}")
    return int(value)


def _positive(value: Any) -> int:
    if isinstance(value, bool) or int(value) < 1:
        raise ValueError(f"need an integer >= 1, got {value!r}")
    return int(value)


def _platforms(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError("need a list like [linux/amd64, linux/arm64]")
    out = []
    for item in items:
        parts = str(item).strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"need os/arch[/variant], got {item!r}")
        out.append("/".join(parts))
    return tuple(out)
