"""The one way faas-accel starts gunicorn: `exec_gunicorn(gunicorn_argv(...), env)` replaces
this process with it.

The cache takes its settings from `nic_cache/gunicorn_conf.py` (`config`); the hook and the
provider pass theirs as `options`. Workers are gthread workers everywhere: each client of a
streamed body holds a thread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

# The hook's and the provider's flags: deploys wait for pulls (no worker timeout), clients
# reuse connections, and several instances (lab, tests) share one host (no control socket).
THREADED = ("--worker-class", "gthread", "--timeout", "0", "--keep-alive", "75", "--no-control-socket")


def gunicorn_argv(
    app: str,
    *,
    binds: Sequence[str],
    workers: int,
    threads: int,
    config: str | None = None,
    options: Sequence[str] = (),
) -> list[str]:
    """The command line serving the WSGI `app` ("module:callable()") on every address of `binds`."""
    argv = [sys.executable, "-m", "gunicorn"]
    if config is not None:
        argv += ["-c", config]
    argv += [*options, "--workers", str(workers), "--threads", str(threads)]
    for bind in binds:
        argv += ["--bind", bind]
    return [*argv, app]


def exec_gunicorn(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with `argv` (a `gunicorn_argv`), in this process's environment
    plus `env`."""
    os.execvpe(argv[0], list(argv), {**os.environ, **env})
