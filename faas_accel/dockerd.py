"""The one command line of every dockerd the project starts (lab VMs, benchmarks, tests).

Every dockerd here runs beside other daemons on a shared machine, so it never makes its
default bridge or touches iptables (`--bridge=none --iptables=false --ip-masq=false`) and
keeps its data, exec root, pid file and socket where the caller says.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def dockerd_argv(
    *,
    data_root: str | os.PathLike[str],
    exec_root: str | os.PathLike[str],
    pidfile: str | os.PathLike[str],
    sock: str | os.PathLike[str],
    config: str | os.PathLike[str],
    containerd_namespace: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """`dockerd` with no bridge or iptables of its own and private roots; `containerd_namespace`
    keeps its containers apart from other dockerds sharing one containerd."""
    argv = [
        "dockerd",
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        f"--data-root={os.fspath(data_root)}",
        f"--exec-root={os.fspath(exec_root)}",
        f"--pidfile={os.fspath(pidfile)}",
        f"-H=unix://{os.fspath(sock)}",
        f"--config-file={os.fspath(config)}",
    ]
    if containerd_namespace:
        argv += [
            f"--containerd-namespace={containerd_namespace}",
            f"--containerd-plugins-namespace={containerd_namespace}-plugins",
        ]
    return [*argv, *extra]
