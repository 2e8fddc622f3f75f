"""The provider's core: deploy, update, scale, delete, describe and re-adopt functions.

No Flask here: views parse, call a `Provider` method, render. Operations on one function
are serialized by a per-function lock; different functions proceed in parallel.

Deploys are synchronous and better than faasd's: faasd answers once the task starts,
before the function listens, so a first invoke can fail. Here a deploy (and a scale from
zero) answers only when `GET http://127.0.0.1:<port>/_/health` returns 200, and fails
with the reason (the runtime's pull error, the container's exit status and last output,
or the health check's last answer) leaving no container behind.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import (
    FunctionExists,
    FunctionNotFound,
    InvalidRequest,
    NoEndpoints,
    NotReady,
    ProviderError,
    RuntimeFailed,
)
from .model import FunctionDeployment, function_status, parse_cpus, parse_memory, plain_http
from .phases import Mark, PhaseTimer, no_mark
from .runtime import ContainerSpec, LogLine, Runtime, TaskStatus
from .store import FunctionRecord, FunctionStore

log = logging.getLogger("faas_accel.provider")
HEALTH_PATH = "/_/health"
HEALTH_PATH_ANNOTATION = "com.openfaas.health.http.path"
ANNOTATION_LABEL_PREFIX = "com.openfaas.annotations."  # as faasd stores annotations on containers
POLL = 0.02  # seconds between readiness probes
LOG_LINES_IN_ERRORS = 10


def probe(port: int, path: str, timeout: float) -> int | str:
    """`GET http://127.0.0.1:<port><path>`: the status code, or why there was none."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "faas-accel-provider"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return str(exc) or type(exc).__name__
    finally:
        conn.close()


class Provider:
    """Functions of one VM, each one container on the host network at its own port."""

    def __init__(
        self,
        runtime: Runtime,
        store: FunctionStore,
        *,
        secrets_dir: Path,
        ready_timeout: float = 60.0,
        probe_timeout: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_deployed: Callable[[dict[str, float], float], None] = lambda phases, total: None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.secrets_dir = secrets_dir
        self.ready_timeout = ready_timeout
        self.probe_timeout = probe_timeout
        self.clock = clock
        self.on_deployed = on_deployed  # (phases, total seconds) of each deploy or update
        self._phases: dict[str, tuple[dict[str, float], float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # reads

    def list(self) -> list[dict[str, Any]]:
        """FunctionStatus of every function, sorted by name."""
        statuses = self.runtime.statuses()
        return [self._status(r, statuses.get(r.name, TaskStatus.MISSING)) for r in self.store.all()]

    def describe(self, name: str) -> dict[str, Any]:
        """FunctionStatus of one function; FunctionNotFound if it is not deployed."""
        record = self._record(name)
        return self._status(record, self.runtime.status(name))

    def endpoint(self, name: str) -> int:
        """The port to proxy invocations of `name` to; NoEndpoints if unknown or scaled to 0."""
        record = self.store.get(name)
        if record is None or record.replicas == 0:
            raise NoEndpoints(f"No endpoints available for: {name}.")
        return record.port

    def count_invocation(self, name: str) -> None:
        self.store.count_invocation(name)

    def logs(
        self, name: str, *, since: datetime | None, tail: int | None, follow: bool
    ) -> Iterator[LogLine | None]:
        """The function's output (see `Runtime.logs`); FunctionNotFound at once if unknown."""
        self._record(name)
        return self.runtime.logs(name, since=since, tail=tail, follow=follow)

    # writes

    def deploy(self, deployment: FunctionDeployment) -> None:
        """Create a function (POST): pull, run, wait until healthy. FunctionExists if deployed."""
        name = deployment.service
        with self._lock(name):
            if self.store.get(name) is not None:
                raise FunctionExists(f"function {name} already exists; update it with PUT")
            timer = PhaseTimer()
            secrets = self._secrets(deployment)
            self._pull(deployment, timer.mark)
            self.runtime.remove(name)  # a container left by a deploy cut short by a crash
            self.store.put(self._start_new(deployment, secrets, timer.mark))
            self._timed(name, timer)
            log.info("deployed %s (%s)", name, deployment.image)

    def update(self, deployment: FunctionDeployment) -> None:
        """Replace a function (PUT): pull first (the old one keeps running if that fails),
        then recreate its container. FunctionNotFound if it is not deployed."""
        name = deployment.service
        with self._lock(name):
            if self.store.get(name) is None:
                raise FunctionNotFound(f"service {name} not found")
            timer = PhaseTimer()
            secrets = self._secrets(deployment)
            self._pull(deployment, timer.mark)
            self.runtime.remove(name, keep_logs=True)
            try:
                record = self._start_new(deployment, secrets, timer.mark)
            except ProviderError as exc:
                self.store.delete(name)
                raise type(exc)(f"{exc} (the previous version was removed first: {name} is gone)") from exc
            self.store.put(record)
            self._timed(name, timer)
            log.info("updated %s (%s)", name, deployment.image)

    def delete(self, name: str) -> None:
        """Remove the function's container, logs and record; FunctionNotFound if unknown."""
        with self._lock(name):
            self._record(name)
            self.runtime.remove(name)
            self.store.delete(name)
            log.info("deleted %s", name)

    def scale(self, name: str, replicas: int) -> None:
        """0 stops the task (the container stays); 1 or more starts it and waits until healthy."""
        with self._lock(name):
            record = self._record(name)
            if replicas == 0:
                self.runtime.stop(name)
                self.store.put(record.scaled(0))
                log.info("scaled %s to 0", name)
                return
            if self.runtime.status(name) is not TaskStatus.RUNNING:
                self._restart(record)
                try:
                    self._wait_ready(record)
                except NotReady:
                    self.runtime.stop(name)
                    raise
            self.store.put(record.scaled(1))
            log.info("scaled %s to 1%s", name, f" (asked for {replicas})" if replicas > 1 else "")

    def adopt(self) -> None:
        """After a restart: keep running containers, restart tasks that should run, recreate
        missing containers; forget a function only if its container cannot be recreated."""
        try:
            statuses = self.runtime.statuses()
        except RuntimeFailed as exc:
            log.error("cannot list containers to adopt them: %s", exc)
            return
        for record in self.store.all():
            status = statuses.get(record.name, TaskStatus.MISSING)
            if status is TaskStatus.RUNNING or (record.replicas == 0 and status is not TaskStatus.MISSING):
                continue
            try:
                with self._lock(record.name):
                    self._restart(record, run=record.replicas > 0)
                log.info("adopted %s: was %s, restarted", record.name, status.value)
            except (RuntimeFailed, InvalidRequest) as exc:
                log.warning("cannot re-adopt %s (%s); forgetting it: %s", record.name, status.value, exc)
                self.runtime.remove(record.name)
                self.store.delete(record.name)

    # helpers

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def _record(self, name: str) -> FunctionRecord:
        record = self.store.get(name)
        if record is None:
            raise FunctionNotFound(f"function {name} not found")
        return record

    def last_phases(self, name: str) -> tuple[dict[str, float], float] | None:
        """The phases (seconds) and total of the last deploy or update of `name`, if any."""
        return self._phases.get(name)

    def _timed(self, name: str, timer: PhaseTimer) -> None:
        phases = timer.finish()
        self._phases[name] = (phases, timer.total)
        self.on_deployed(phases, timer.total)
        log.info(
            "%s deploy phases: %s; total %.2fs",
            name,
            ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()),
            timer.total,
        )

    def _pull(self, deployment: FunctionDeployment, mark: Mark = no_mark) -> None:
        ref = deployment.ref
        started = time.monotonic()
        self.runtime.pull(str(ref), plain_http=plain_http(ref), mark=mark)
        mark("unpack")  # what the runtime did after its fetch
        log.info("pulled %s in %.2fs", ref, time.monotonic() - started)

    def _secrets(self, deployment: FunctionDeployment) -> dict[str, Path]:
        found = {}
        for secret in deployment.secrets:
            path = self.secrets_dir / secret
            if not path.is_file():
                raise InvalidRequest(f"unable to find secret: {secret} (looked for {path})")
            found[secret] = path
        return found

    def _spec(self, record: FunctionRecord, secrets: dict[str, Path]) -> ContainerSpec:
        dep = record.deployment
        env = dict(dep.env_vars)
        if dep.env_process:
            env["fprocess"] = dep.env_process
        env["port"] = env["PORT"] = str(record.port)
        labels = dict(dep.labels)
        labels.update({ANNOTATION_LABEL_PREFIX + k: v for k, v in dep.annotations.items()})
        limits = dep.limits
        return ContainerSpec(
            id=dep.service,
            image=str(dep.ref),
            env=env,
            labels=labels,
            memory_limit=parse_memory(limits.memory) if limits and limits.memory else None,
            cpus=parse_cpus(limits.cpu) if limits and limits.cpu else None,
            read_only=dep.read_only_root_filesystem,
            secrets=secrets,
        )

    def _start_new(
        self, deployment: FunctionDeployment, secrets: dict[str, Path], mark: Mark = no_mark
    ) -> FunctionRecord:
        """Run a new container on a fresh port and wait until it is healthy; on failure
        remove it and release the port."""
        port = self.store.reserve_port()
        record = FunctionRecord(deployment=deployment, port=port, created_at=self.clock())
        try:
            mark("other")  # the old container's removal and the port
            self.runtime.create(self._spec(record, secrets))
            mark("start")
            self._wait_ready(record)
            mark("healthy")
        except RuntimeFailed:
            self.runtime.remove(deployment.service)
            self.store.release_port(port)
            raise
        return record

    def _restart(self, record: FunctionRecord, *, run: bool = True) -> None:
        """Bring the container back: start its task, or recreate it (pulling only if the
        image is gone). With `run` False, only make sure the container exists."""
        name = record.name
        status = self.runtime.status(name)
        if status is TaskStatus.MISSING:
            spec = self._spec(record, self._secrets(record.deployment))
            try:
                self.runtime.create(spec)
            except RuntimeFailed:
                self.runtime.remove(name, keep_logs=True)
                self._pull(record.deployment)
                self.runtime.create(spec)
            if not run:
                self.runtime.stop(name)
        elif run:
            self.runtime.stop(name)  # a task that exited must be deleted before a new one starts
            self.runtime.start(name)

    def _wait_ready(self, record: FunctionRecord) -> None:
        """Poll the health check until 200; NotReady if the task exits or time runs out."""
        name, port = record.name, record.port
        path = record.deployment.annotations.get(HEALTH_PATH_ANNOTATION) or HEALTH_PATH
        started = time.monotonic()
        deadline = started + self.ready_timeout
        last: int | str = "no answer yet"
        while True:
            last = probe(port, path, min(self.probe_timeout, max(deadline - time.monotonic(), 0.05)))
            if last == 200:
                log.info("%s healthy on port %d after %.2fs", name, port, time.monotonic() - started)
                return
            if not self.runtime.alive(name):
                code = self.runtime.stop(name)
                status = "" if code is None else f" with status {code}"
                raise NotReady(
                    f"function {name} exited{status} before its health check passed{self._last_output(name)}"
                )
            if time.monotonic() >= deadline:
                raise NotReady(
                    f"function {name} did not become healthy within {self.ready_timeout:g}s: "
                    f"GET http://127.0.0.1:{port}{path} last gave {last}{self._last_output(name)}"
                )
            time.sleep(POLL)

    def _last_output(self, name: str) -> str:
        try:
            lines = [
                line.text
                for line in self.runtime.logs(name, since=None, tail=LOG_LINES_IN_ERRORS, follow=False)
                if line
            ]
        except RuntimeFailed:
            return ""
        return "; last output:\n" + "\n".join(lines) if lines else "; it wrote nothing"

    def _status(self, record: FunctionRecord, status: TaskStatus) -> dict[str, Any]:
        running = status is TaskStatus.RUNNING
        path = record.deployment.annotations.get(HEALTH_PATH_ANNOTATION) or HEALTH_PATH
        healthy = running and probe(record.port, path, self.probe_timeout) == 200
        return function_status(
            record.deployment,
            replicas=1 if running else 0,
            available=1 if healthy else 0,
            invocations=self.store.invocations(record.name),
            created_at=record.created_at,
        )
