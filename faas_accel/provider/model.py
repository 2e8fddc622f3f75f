"""The faas-provider API's documents, parsed and rendered; pure (no Flask, no runtime).

Field names follow faas-provider's `types.FunctionDeployment` and `types.FunctionStatus`.
Every parse error is an `InvalidRequest` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nic_cache.errors import RegistryError
from nic_cache.reference import ImageRef, parse_image

from .errors import InvalidRequest

NAMESPACE = "openfaas-fn"
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 63
PLAIN_HTTP_HOSTS = frozenset({"localhost", "127.0.0.1"})
SECRET_RE = re.compile(r"[A-Za-z0-9][-._A-Za-z0-9]*")
MAX_SECRET_NAME = 253

_BINARY_SUFFIX = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL_SUFFIX = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[kKMGTPEm]?)")


def check_namespace(namespace: str | None) -> str:
    """The namespace a request names ("" or None means the default); only openfaas-fn exists."""
    if namespace in (None, "", NAMESPACE):
        return NAMESPACE
    raise InvalidRequest(f"namespace not valid: {namespace}")


def check_name(name: Any, what: str = "service") -> str:
    """A function name must be a DNS-1123 label (what faas-netes and faasd accept)."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{what} is required")
    if len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"{what} {name!r} is not valid: lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {MAX_NAME} characters"
        )
    return name


def check_secret_name(name: Any) -> str:
    """A secret name is a file name: letters, digits, '-', '.', '_', no '..', at most 253."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("non-empty name is required")
    if len(name) > MAX_SECRET_NAME or not SECRET_RE.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"secret name {name!r} is not valid: letters, digits, '-', '.' and '_', "
            f"starting with a letter or digit, no '..', at most {MAX_SECRET_NAME} characters"
        )
    return name


def parse_memory(quantity: str) -> int:
    """A Kubernetes-style memory quantity ("128Mi", "1G", "5e8" is not accepted) in bytes."""
    match = _QUANTITY_RE.fullmatch(quantity.strip())
    if not match or match["suffix"] == "m":
        raise InvalidRequest(f"invalid memory quantity {quantity!r}")
    suffix = match["suffix"]
    scale = _BINARY_SUFFIX.get(suffix) or _DECIMAL_SUFFIX[suffix]
    return int(float(match["num"]) * scale)


def parse_cpus(quantity: str) -> float:
    """A Kubernetes-style CPU quantity ("500m", "1", "0.25") in CPUs."""
    match = _QUANTITY_RE.fullmatch(quantity.strip())
    if not match or match["suffix"] not in ("", "m"):
        raise InvalidRequest(f"invalid cpu quantity {quantity!r}")
    value = float(match["num"])
    return value / 1000 if match["suffix"] == "m" else value


def image_ref(image: str) -> ImageRef:
    """The normalized reference of `image` (docker.io/library/... for short names)."""
    try:
        return parse_image(image)
    except RegistryError as exc:
        raise InvalidRequest(f"image {image!r} is not valid: {exc}") from exc


def plain_http(ref: ImageRef) -> bool:
    """faasd pulls over plain HTTP only from localhost and 127.0.0.1 (any port)."""
    host = ref.registry.rsplit(":", 1)[0] if not ref.registry.startswith("[") else ref.registry
    return host in PLAIN_HTTP_HOSTS


def parse_time(text: str, what: str = "since") -> datetime:
    """An RFC 3339 timestamp (nanoseconds allowed, naive means UTC)."""
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest(f"{what} must be an RFC 3339 time, got {text!r}") from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def format_time(stamp: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`, as Go parses RFC3339Nano."""
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, kw_only=True)
class Resources:
    """faas-provider's `FunctionResources`: Kubernetes-style quantities, either may be absent."""

    memory: str | None = None
    cpu: str | None = None

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Resources | None:
        if doc is None:
            return None
        if not isinstance(doc, dict):
            raise InvalidRequest(f"{what} must be an object")
        memory, cpu = doc.get("memory") or None, doc.get("cpu") or None
        if memory is not None:
            parse_memory(_str(memory, f"{what}.memory"))
        if cpu is not None:
            parse_cpus(_str(cpu, f"{what}.cpu"))
        return cls(memory=memory, cpu=cpu)

    def to_json(self) -> dict[str, str]:
        out = {}
        if self.memory:
            out["memory"] = self.memory
        if self.cpu:
            out["cpu"] = self.cpu
        return out


@dataclass(frozen=True, kw_only=True)
class FunctionDeployment:
    """What `POST|PUT /system/functions` carries (faas-provider `types.FunctionDeployment`)."""

    service: str
    image: str
    namespace: str = NAMESPACE
    env_process: str = ""
    env_vars: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    limits: Resources | None = None
    requests: Resources | None = None
    read_only_root_filesystem: bool = False

    @property
    def ref(self) -> ImageRef:
        return image_ref(self.image)

    @classmethod
    def from_json(cls, doc: Any) -> FunctionDeployment:
        """Validate a decoded body; raises InvalidRequest naming the first bad field."""
        if not isinstance(doc, dict):
            raise InvalidRequest("request body must be a JSON object")
        service = check_name(doc.get("service"))
        image = doc.get("image")
        if not isinstance(image, str) or not image:
            raise InvalidRequest("image is required")
        image_ref(image)
        secrets = _str_list(doc.get("secrets"), "secrets")
        for secret in secrets:
            check_secret_name(secret)
        return cls(
            service=service,
            image=image,
            namespace=check_namespace(_opt_str(doc.get("namespace"), "namespace")),
            env_process=_opt_str(doc.get("envProcess"), "envProcess") or "",
            env_vars=_str_map(doc.get("envVars"), "envVars"),
            labels=_str_map(doc.get("labels"), "labels"),
            annotations=_str_map(doc.get("annotations"), "annotations"),
            secrets=tuple(secrets),
            constraints=tuple(_str_list(doc.get("constraints"), "constraints")),
            limits=Resources.from_json(doc.get("limits"), "limits"),
            requests=Resources.from_json(doc.get("requests"), "requests"),
            read_only_root_filesystem=_bool(doc.get("readOnlyRootFilesystem"), "readOnlyRootFilesystem"),
        )

    def to_json(self) -> dict[str, Any]:
        """The camelCase document, as faas-cli sends it."""
        doc: dict[str, Any] = {
            "service": self.service,
            "image": self.image,
            "namespace": self.namespace,
            "envProcess": self.env_process,
            "envVars": dict(self.env_vars),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "secrets": list(self.secrets),
            "constraints": list(self.constraints),
            "readOnlyRootFilesystem": self.read_only_root_filesystem,
        }
        if self.limits:
            doc["limits"] = self.limits.to_json()
        if self.requests:
            doc["requests"] = self.requests.to_json()
        return doc


def parse_deployment(body: bytes) -> FunctionDeployment:
    """`POST|PUT /system/functions` body -> FunctionDeployment (InvalidRequest if bad)."""
    return FunctionDeployment.from_json(_decode(body))


def parse_delete(body: bytes) -> tuple[str, str]:
    """`DELETE /system/functions` body `{"functionName": ..., "namespace": ...}` -> (name, ns)."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise InvalidRequest("request body must be a JSON object")
    name = check_name(doc.get("functionName"), "functionName")
    return name, check_namespace(_opt_str(doc.get("namespace"), "namespace"))


def parse_scale(body: bytes) -> int:
    """`POST /system/scale-function/<name>` body `{"serviceName", "replicas"}` -> replicas."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise InvalidRequest("request body must be a JSON object")
    replicas = doc.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise InvalidRequest("replicas must be a non-negative integer")
    check_namespace(_opt_str(doc.get("namespace"), "namespace"))
    return replicas


def function_status(
    deployment: FunctionDeployment,
    *,
    replicas: int,
    available: int,
    invocations: int,
    created_at: datetime,
) -> dict[str, Any]:
    """faas-provider `types.FunctionStatus` for one function."""
    doc: dict[str, Any] = {
        "name": deployment.service,
        "image": deployment.image,
        "namespace": deployment.namespace,
        "envProcess": deployment.env_process,
        "envVars": dict(deployment.env_vars),
        "labels": dict(deployment.labels),
        "annotations": dict(deployment.annotations),
        "secrets": list(deployment.secrets),
        "constraints": list(deployment.constraints),
        "readOnlyRootFilesystem": deployment.read_only_root_filesystem,
        "invocationCount": invocations,
        "replicas": replicas,
        "availableReplicas": available,
        "createdAt": format_time(created_at),
    }
    if deployment.limits:
        doc["limits"] = deployment.limits.to_json()
    if deployment.requests:
        doc["requests"] = deployment.requests.to_json()
    return doc


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"unable to parse request body as JSON: {exc}") from exc


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _bool(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a boolean")
    return value


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidRequest(f"{what} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{what} must be a list of strings")
    return list(value)
