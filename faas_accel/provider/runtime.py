"""The contract between the provider and a container runtime, and the values it passes.

A runtime runs each function as one container on the VM's host network, named by the
function (`ContainerSpec.id`), and keeps its stdout/stderr for `logs`. Implementations:
`containerd.ContainerdRuntime` (ctr) and `docker_runtime.DockerRuntime` (the docker SDK).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from .phases import Mark, no_mark

SECRETS_MOUNT = "/var/openfaas/secrets"


class TaskStatus(enum.Enum):
    """What a container's task is doing; MISSING means there is no container at all."""

    MISSING = "missing"
    CREATED = "created"  # a container without a running task (never started, or scaled to 0)
    RUNNING = "running"
    STOPPED = "stopped"  # the task exited and was not deleted yet
    PAUSED = "paused"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """One function's container, as the provider wants it run."""

    id: str
    image: str  # normalized reference, already pulled
    env: Mapping[str, str]  # on top of the image's environment
    labels: Mapping[str, str] = field(default_factory=dict)
    memory_limit: int | None = None  # bytes
    cpus: float | None = None
    read_only: bool = False  # read-only root filesystem; /tmp is then a tmpfs
    secrets: Mapping[str, Path] = field(default_factory=dict)  # name -> host file, read-only


@dataclass(frozen=True)
class LogLine:
    """One line a function wrote (without its newline)."""

    time: datetime
    text: str
    instance: str
    stream: str = "stdout"


class Runtime(Protocol):
    """A container runtime driven for one VM.

    Every method raises `errors.RuntimeFailed` (or a subclass) quoting the runtime's reason
    when the runtime refuses or cannot be reached; removing what does not exist is no error.
    """

    name: str  # "containerd" or "docker", reported in /system/info

    def pull(self, image: str, *, plain_http: bool, mark: Mark = no_mark) -> None:
        """Pull `image` (normalized) even if present; PullFailed with the runtime's reason.
        Calls `mark("resolve")` and `mark("fetch")` as those phases end (see phases.py)."""

    def create(self, spec: ContainerSpec) -> None:
        """Create the container and start its task, detached; RuntimeFailed if either fails."""

    def start(self, cid: str) -> None:
        """Start a task for an existing container that has none; RuntimeFailed otherwise."""

    def stop(self, cid: str) -> int | None:
        """Stop and delete the task, keeping the container; return its exit status if known."""

    def remove(self, cid: str, *, keep_logs: bool = False) -> int | None:
        """Stop the task and delete the container (and its logs unless `keep_logs`);
        return the task's exit status if known."""

    def status(self, cid: str) -> TaskStatus:
        """The container's task status (MISSING if there is no container)."""

    def statuses(self) -> dict[str, TaskStatus]:
        """Every container of this runtime's namespace, id -> status (one round trip)."""

    def alive(self, cid: str) -> bool:
        """Cheap check, polled while waiting for readiness: is the task still running?"""

    def logs(
        self, cid: str, *, since: datetime | None, tail: int | None, follow: bool
    ) -> Iterator[LogLine | None]:
        """The container's output, oldest first: lines at or after `since`, the last `tail`
        of them (all if None); with `follow`, then new lines as they come, yielding None
        when idle for a while (so a server can notice a client that went away) and ending
        when the container's logs are removed."""
