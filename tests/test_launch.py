"""The one gunicorn launcher: the command lines of `cache serve`, `hook serve` and `provider serve`."""

from __future__ import annotations

import sys

from faas_accel.launch import THREADED, gunicorn_argv


class TestGunicornArgv:
    def test_a_config_module_comes_first(self) -> None:
        """The cache's settings live in its config module; the command line only sizes and binds."""
        argv = gunicorn_argv("m:app()", binds=["127.0.0.1:5000"], workers=3, threads=7, config="python:c")
        assert argv == [
            sys.executable, "-m", "gunicorn", "-c", "python:c", "--workers", "3", "--threads", "7",
            "--bind", "127.0.0.1:5000", "m:app()",
        ]  # fmt: skip

    def test_options_and_every_bind(self) -> None:
        """Options precede the sizes; each address is its own --bind, in order, the app last."""
        argv = gunicorn_argv("m:app()", binds=["0.0.0.0:8080", "127.0.0.1:5000"], workers=1, threads=4,
                             options=THREADED)  # fmt: skip
        assert argv[3 : 3 + len(THREADED)] == list(THREADED)
        assert argv[-5:] == ["--bind", "0.0.0.0:8080", "--bind", "127.0.0.1:5000", "m:app()"]
        assert "-c" not in argv
