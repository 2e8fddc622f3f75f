"""`Runtime` over dockerd, through the docker SDK.

Containers run with `network_mode="host"`, labelled with `MANAGED_LABEL` so `statuses`
sees only ours. Logs are dockerd's own (json-file), read with timestamps; they go with the
container, so an update (which recreates it) starts a new history. Pulls follow the
daemon's configuration: `registry-mirrors` (docker.io only) and `insecure-registries`
(127.0.0.0/8 is insecure by default), so `plain_http` is not needed here.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests

from .errors import PullFailed, RuntimeFailed
from .logs import HEARTBEAT, filter_lines
from .phases import Mark, no_mark
from .runtime import SECRETS_MOUNT, ContainerSpec, LogLine, TaskStatus

MANAGED_LABEL = "io.faas-accel.function"
# pull events after which a layer's bytes are in the daemon (or were already)
FETCHED_STATUSES = frozenset({"Download complete", "Already exists", "Pull complete", "Extracting"})
_STATUS = {
    "created": TaskStatus.CREATED,
    "running": TaskStatus.RUNNING,
    "restarting": TaskStatus.RUNNING,
    "paused": TaskStatus.PAUSED,
    "exited": TaskStatus.STOPPED,
    "dead": TaskStatus.STOPPED,
    "removing": TaskStatus.STOPPED,
}
T = TypeVar("T")
_END = object()


def _reason(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _mapped(what: str, call: Callable[[], T], error: type[RuntimeFailed] = RuntimeFailed) -> T:
    """Run a docker SDK call, mapping its exceptions to `error` (docker.errors.NotFound passes)."""
    try:
        return call()
    except docker.errors.NotFound:
        raise
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise error(f"{what} failed: {_reason(exc)}") from exc


def parse_log_line(raw: bytes, instance: str) -> LogLine:
    """`<RFC 3339 nano> <text>` as dockerd writes it with timestamps=True."""
    text = raw.decode("utf-8", "replace")
    stamp, _, rest = text.partition(" ")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return LogLine(datetime.now(UTC), text, instance)
    return LogLine(when if when.tzinfo else when.replace(tzinfo=UTC), rest, instance)


class DockerRuntime:
    """Functions as containers of one dockerd (whose base URL is `address`)."""

    name = "docker"

    def __init__(
        self,
        address: str,
        *,
        pull_timeout: float = 600.0,
        stop_grace: float = 2.0,
        client: Any | None = None,
    ) -> None:
        self.address = address
        self.stop_grace = stop_grace
        self.client = client or docker.DockerClient(base_url=address, timeout=int(pull_timeout))
        self._follow_client: Any | None = None

    def close(self) -> None:
        self.client.close()
        if self._follow_client is not None:
            self._follow_client.close()

    def pull(self, image: str, *, plain_http: bool, mark: Mark = no_mark) -> None:
        """Pull through the daemon's event stream: the first layer event ends the resolve,
        the moment every layer is downloaded ends the fetch (dockerd extracts layer by
        layer while later ones still download), the stream's end ends the unpack."""
        repo, tag = docker.utils.parse_repository_tag(image)
        layers: set[str] = set()
        fetched: set[str] = set()
        resolved = done = False

        def follow() -> None:
            nonlocal resolved, done
            for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if event.get("error"):
                    raise PullFailed(f"pull of {image} failed: {event['error']}")
                layer, status = event.get("id"), str(event.get("status", ""))
                if not layer or status.startswith(("Pulling from", "Digest:", "Status:")):
                    continue
                if not resolved:
                    resolved = True
                    mark("resolve")
                layers.add(layer)
                if status in FETCHED_STATUSES:
                    fetched.add(layer)
                if not done and fetched >= layers:
                    done = True
                    mark("fetch")

        try:
            _mapped(f"pull of {image}", follow, PullFailed)
        except docker.errors.NotFound as exc:
            raise PullFailed(f"pull of {image} failed: {_reason(exc)}") from exc

    def create(self, spec: ContainerSpec) -> None:
        kwargs: dict[str, Any] = {
            "name": spec.id,
            "detach": True,
            "network_mode": "host",
            "environment": [f"{k}={v}" for k, v in spec.env.items()],
            "labels": {**spec.labels, MANAGED_LABEL: spec.id},
        }
        if spec.memory_limit:
            kwargs["mem_limit"] = spec.memory_limit
        if spec.cpus:
            kwargs["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.read_only:
            kwargs["read_only"] = True
            kwargs["tmpfs"] = {"/tmp": "rw,nosuid,nodev"}
        if spec.secrets:
            kwargs["volumes"] = {
                str(path): {"bind": f"{SECRETS_MOUNT}/{name}", "mode": "ro"}
                for name, path in spec.secrets.items()
            }
        try:
            _mapped(f"docker run {spec.id}", lambda: self.client.containers.run(spec.image, **kwargs))
        except docker.errors.NotFound as exc:
            raise RuntimeFailed(f"docker run {spec.id} failed: {_reason(exc)}") from exc

    def start(self, cid: str) -> None:
        try:
            _mapped(f"docker start {cid}", lambda: self.client.api.start(cid))
        except docker.errors.NotFound as exc:
            raise RuntimeFailed(f"docker start {cid} failed: {_reason(exc)}") from exc

    def stop(self, cid: str) -> int | None:
        state = self._state(cid)
        if state is None:
            return None
        if state.get("Running"):
            try:
                _mapped(
                    f"docker stop {cid}",
                    lambda: self.client.api.stop(cid, timeout=math.ceil(self.stop_grace)),
                )
            except docker.errors.NotFound:
                return None
            state = self._state(cid) or {}
        elif state.get("Status") == "created":
            return None
        code = state.get("ExitCode")
        return int(code) if isinstance(code, int) else None

    def remove(self, cid: str, *, keep_logs: bool = False) -> int | None:
        code = self.stop(cid)
        with contextlib.suppress(docker.errors.NotFound):
            _mapped(f"docker rm {cid}", lambda: self.client.api.remove_container(cid, force=True))
        return code

    def status(self, cid: str) -> TaskStatus:
        state = self._state(cid)
        if state is None:
            return TaskStatus.MISSING
        return _STATUS.get(str(state.get("Status")), TaskStatus.UNKNOWN)

    def statuses(self) -> dict[str, TaskStatus]:
        found = _mapped(
            "docker ps",
            lambda: self.client.api.containers(all=True, filters={"label": MANAGED_LABEL}),
        )
        out = {}
        for container in found:
            name = (container.get("Names") or ["/"])[0].lstrip("/")
            out[name] = _STATUS.get(str(container.get("State")), TaskStatus.UNKNOWN)
        return out

    def alive(self, cid: str) -> bool:
        state = self._state(cid)
        return bool(state and state.get("Running"))

    def logs(
        self, cid: str, *, since: datetime | None, tail: int | None, follow: bool
    ) -> Iterator[LogLine | None]:
        if self._state(cid) is None:
            return iter(())
        client = self._client_for_follow() if follow else self.client
        stream = _mapped(
            f"docker logs {cid}",
            lambda: client.api.logs(
                cid,
                stdout=True,
                stderr=True,
                stream=True,
                follow=follow,
                timestamps=True,
                tail="all" if tail is None else max(tail, 0),
                since=since.timestamp() if since else None,
            ),
        )
        return self._lines(stream, cid, since)

    def _lines(self, stream: Any, cid: str, since: datetime | None) -> Iterator[LogLine | None]:
        """Lines from a log stream, read by a helper thread so that an idle follow can
        yield None; closing the generator closes the stream, which ends the thread."""
        pending: queue.Queue[Any] = queue.Queue()

        def pump() -> None:
            buffer = b""
            try:
                for chunk in stream:
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for raw in lines:
                        pending.put(parse_log_line(raw, cid))
                if buffer:
                    pending.put(parse_log_line(buffer, cid))
            except Exception:  # a closed stream ends the pump, however the read fails
                pass
            finally:
                pending.put(_END)

        threading.Thread(target=pump, name=f"docker-logs-{cid}", daemon=True).start()
        try:
            while True:
                try:
                    item = pending.get(timeout=HEARTBEAT)
                except queue.Empty:
                    yield None
                    continue
                if item is _END:
                    return
                yield from filter_lines([item], since, None)
        finally:
            stream.close()

    def _state(self, cid: str) -> dict[str, Any] | None:
        try:
            info = _mapped(f"docker inspect {cid}", lambda: self.client.api.inspect_container(cid))
        except docker.errors.NotFound:
            return None
        state: dict[str, Any] = info.get("State") or {}
        return state

    def _client_for_follow(self) -> Any:
        # followed streams stay open while idle: this client has no read timeout
        if self._follow_client is None:
            self._follow_client = docker.DockerClient(base_url=self.address, timeout=None)
        return self._follow_client

    def __repr__(self) -> str:
        return f"<DockerRuntime {self.address}>"
