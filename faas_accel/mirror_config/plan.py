"""Plan the files that make container runtimes pull through the NIC cache.

Pure: every function takes text and returns text (or raises), nothing here touches the file
system; `cli.py` reads, backs up and writes. Three runtimes:

- containerd reads `<config_path>/<registry>/hosts.toml`, one per upstream registry: the cache
  first (pull and resolve only), the registry itself as the fallback `server`. containerd adds
  `?ns=<registry>` to every request, which is how the cache picks the upstream.
- Docker reads `registry-mirrors` from `daemon.json`; it mirrors docker.io only.
- k3s reads `mirrors:` from `registries.yaml` and writes containerd's hosts.toml itself.

Merging keeps every key it does not own, never duplicates an entry, and returns the existing
text unchanged when it already says what we want: that is what makes a second run a no-op.
YAML comments do not survive a merge that changes something (the caller keeps a backup).

Errors:

    MirrorConfigError
    ├── InvalidArgument     a mirror URL, registry spec or timeout we cannot use
    └── UnsafeToEdit        an existing file we cannot parse, or of a shape we do not know
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

DOCKER_HUB = "docker.io"
DOCKER_HUB_SERVER = "https://registry-1.docker.io"
CAPABILITIES = ("pull", "resolve")  # never "push": the cache is read-only
# Linux retransmits an unanswered SYN after 1s; 2s lets one retransmit through before a busy
# (not dead) cache is skipped for the WAN.
DEFAULT_DIAL_TIMEOUT = 2.0

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?")
_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


class MirrorConfigError(Exception):
    """Base of every error raised while planning mirror configuration."""


class InvalidArgument(MirrorConfigError):
    """A mirror URL, registry spec or timeout cannot be used."""


class UnsafeToEdit(MirrorConfigError):
    """An existing file cannot be parsed or has a shape we would have to guess about."""


@dataclass(frozen=True, kw_only=True)
class Mirror:
    """The NIC cache as the runtimes reach it."""

    url: str  # scheme://host[:port][/path], lowercase scheme, no trailing slash

    @property
    def plain_http(self) -> bool:
        """Whether the runtimes must talk plain HTTP to the mirror."""
        return self.url.startswith("http://")

    @property
    def netloc(self) -> str:
        """`host:port` as Docker's `insecure-registries` wants it."""
        return urlsplit(self.url).netloc


@dataclass(frozen=True, kw_only=True)
class Registry:
    """One upstream registry to pull through the mirror."""

    host: str  # as written in image references: docker.io, registry.lab:5000
    server: str  # where it really answers: https://registry-1.docker.io, http://198.18.0.1:5000


@dataclass(frozen=True, kw_only=True)
class FileChange:
    """The planned contents of one file next to what it holds now."""

    path: str
    old: str | None  # None when the file does not exist yet
    new: str

    @property
    def changed(self) -> bool:
        """Whether writing `new` would change anything."""
        return self.old != self.new

    def diff(self) -> str:
        """A unified diff from `old` to `new`, empty when nothing changes."""
        return "".join(
            difflib.unified_diff(
                _diff_lines(self.old or ""),
                _diff_lines(self.new),
                fromfile="/dev/null" if self.old is None else self.path,
                tofile=self.path,
            )
        )


def parse_mirror(url: str | Mirror) -> Mirror:
    """Validate and normalise the mirror URL; raises InvalidArgument."""
    if isinstance(url, Mirror):
        return url
    return Mirror(url=_normalise_url(url, what="mirror URL"))


def default_server(host: str) -> str:
    """The URL a registry answers at when nobody says otherwise."""
    return DOCKER_HUB_SERVER if host == DOCKER_HUB else f"https://{host}"


def parse_registry(spec: str | Registry) -> Registry:
    """Parse `HOST` or `HOST=URL` (the upstream's real server); raises InvalidArgument."""
    if isinstance(spec, Registry):
        return spec
    host, sep, server = spec.strip().partition("=")
    host = host.strip()
    if not _REGISTRY_HOST_RE.fullmatch(host):
        raise InvalidArgument(
            f"registry {spec!r}: {host!r} is not a registry host (write HOST or HOST=URL,"
            " e.g. docker.io or registry.lab=http://198.18.0.1:5000)"
        )
    if not sep:
        return Registry(host=host, server=default_server(host))
    return Registry(host=host, server=_normalise_url(server.strip(), what=f"{host} server URL"))


def parse_registries(specs: Iterable[str | Registry]) -> tuple[Registry, ...]:
    """Parse every spec, dropping repeats; raises InvalidArgument on conflicting servers."""
    seen: dict[str, Registry] = {}
    for spec in specs:
        registry = parse_registry(spec)
        earlier = seen.setdefault(registry.host, registry)
        if earlier.server != registry.server:
            raise InvalidArgument(
                f"registry {registry.host} given twice with different servers:"
                f" {earlier.server} and {registry.server}"
            )
    if not seen:
        raise InvalidArgument("no registry given")
    return tuple(seen.values())


def toml_string(value: str) -> str:
    """`value` as a TOML basic string."""
    out = []
    for char in value:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def go_duration(seconds: float) -> str:
    """`seconds` as a Go duration string (`2s`, `500ms`); raises InvalidArgument below 1ms."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise InvalidArgument(f"timeout {seconds}s is shorter than 1ms")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def hosts_toml(
    mirror: str | Mirror,
    registry: str | Registry,
    *,
    skip_verify: bool = False,
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
) -> str:
    """containerd's hosts.toml sending `registry` through `mirror`, the registry as fallback.

    `skip_verify` accepts a self-signed certificate on an https mirror (InvalidArgument on a
    plain-http one, where it would mean nothing); `dial_timeout` 0 leaves the key out. A
    mirror that is the registry's own server makes a file that only says where it answers
    (how the lab's VMs reach plain-http registries).
    """
    mirror = parse_mirror(mirror)
    registry = parse_registry(registry)
    if skip_verify and mirror.plain_http:
        raise InvalidArgument(f"skip_verify applies to an https mirror, not {mirror.url}")
    if mirror.url == registry.server:
        header = [f"# Written by faas-accel: pull {registry.host} from {registry.server}."]
    else:
        header = [
            f"# Written by faas-accel mirror-config: pull {registry.host} through the NIC cache,",
            "# and from the registry itself when the cache cannot answer.",
        ]
    lines = [
        *header,
        f"server = {toml_string(registry.server)}",
        "",
        f"[host.{toml_string(mirror.url)}]",
        f"  capabilities = [{', '.join(toml_string(c) for c in CAPABILITIES)}]",
    ]
    if skip_verify:
        lines.append("  skip_verify = true")
    if dial_timeout:
        lines += [
            "  # containerd >= 1.7 gives up connecting to the cache after dial_timeout. containerd",
            "  # 1.6 ignores the key and waits up to its built-in 30s when the cache host drops",
            "  # packets; a refused or unreachable cache fails over at once on every version.",
            f"  dial_timeout = {toml_string(go_duration(dial_timeout))}",
        ]
    return "\n".join(lines) + "\n"


def containerd_hosts(
    mirror_url: str | Mirror,
    registries: Iterable[str | Registry],
    *,
    skip_verify: bool = False,
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
) -> dict[str, str]:
    """Map `<registry>/hosts.toml` (relative to containerd's config_path) to its text."""
    mirror = parse_mirror(mirror_url)
    return {
        f"{registry.host}/hosts.toml": hosts_toml(
            mirror, registry, skip_verify=skip_verify, dial_timeout=dial_timeout
        )
        for registry in parse_registries(registries)
    }


def check_hosts_toml(text: str) -> None:
    """Raise UnsafeToEdit unless `text` is valid TOML (we replace it, never merge into it)."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UnsafeToEdit(f"it is not valid TOML ({exc})") from None


def merge_daemon_json(existing: str | None, mirror_url: str | Mirror) -> str:
    """Docker's daemon.json with the mirror first in `registry-mirrors`.

    A plain-http mirror's `host:port` also goes into `insecure-registries`. Every other key
    and entry is kept; an empty or missing file counts as `{}`.
    """
    mirror = parse_mirror(mirror_url)
    config = _load_json_object(existing)
    changed = _add_entry(config, "registry-mirrors", mirror.url, first=True)
    if mirror.plain_http:
        changed |= _add_entry(config, "insecure-registries", mirror.netloc, first=False)
    if existing is not None and not changed:
        return existing
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def merge_registries_yaml(
    existing: str | None, mirror_url: str | Mirror, registries: Iterable[str | Registry]
) -> str:
    """k3s's registries.yaml with the mirror first in each registry's `endpoint` list.

    A registry whose server is not its default (https://<host>, or Docker Hub's) also gets
    that server as a later endpoint, since k3s would otherwise fall back to the default.
    `configs:` and every other key are kept; an empty or missing file counts as `{}`.
    """
    mirror = parse_mirror(mirror_url)
    config = _load_yaml_mapping(existing)
    mirrors = config.get("mirrors")
    if mirrors is None:
        mirrors = config["mirrors"] = {}
    elif not isinstance(mirrors, dict):
        raise UnsafeToEdit("'mirrors' is not a mapping")
    changed = False
    for registry in parse_registries(registries):
        entry = mirrors.get(registry.host)
        if entry is None:
            entry = mirrors[registry.host] = {}
        elif not isinstance(entry, dict):
            raise UnsafeToEdit(f"'mirrors.{registry.host}' is not a mapping")
        where = f"mirrors.{registry.host}."
        changed |= _add_entry(entry, "endpoint", mirror.url, first=True, where=where)
        if registry.server != default_server(registry.host):
            changed |= _add_entry(entry, "endpoint", registry.server, first=False, where=where)
    if existing is not None and not changed:
        return existing
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _normalise_url(url: str, *, what: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(f"{what} {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise InvalidArgument(f"{what} {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(f"{what} {url!r} must not carry credentials")
    if parts.query or parts.fragment:
        raise InvalidArgument(f"{what} {url!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily, on access
    except ValueError:
        raise InvalidArgument(f"{what} {url!r} has an invalid port") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _add_entry(config: dict[Any, Any], key: str, value: str, *, first: bool, where: str = "") -> bool:
    """Put `value` into the string list `config[key]` unless it is there; True if added."""
    current = config.get(key)
    if current is None:
        current = []
    elif not isinstance(current, list) or not all(isinstance(v, str) for v in current):
        raise UnsafeToEdit(f"'{where}{key}' is not a list of strings")
    # Docker and containerd both ignore a trailing slash on a URL.
    if any(v.rstrip("/") == value.rstrip("/") for v in current):
        return False
    config[key] = [value, *current] if first else [*current, value]
    return True


def _load_json_object(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnsafeToEdit(
            f"it is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(config, dict):
        raise UnsafeToEdit(f"it holds a JSON {type(config).__name__}, not an object")
    return config


def _load_yaml_mapping(text: str | None) -> dict[Any, Any]:
    if text is None:
        return {}
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UnsafeToEdit(f"it is not valid YAML ({_yaml_problem(exc)})") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UnsafeToEdit(f"it holds a YAML {type(config).__name__}, not a mapping")
    return config


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return str(exc)


def _diff_lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines
