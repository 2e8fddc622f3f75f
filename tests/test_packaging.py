"""What installing faas-accel brings: the cache, the hook and prepull without the bench's load
generator and plotting (the `bench` extra), which `dev` installs for the tests."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

PROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
BENCH_ONLY = ("locust", "matplotlib")


def names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements}


class TestExtras:
    def test_the_core_needs_no_bench_tools(self) -> None:
        """A NIC installs the cache without locust or matplotlib."""
        assert not names(PROJECT["dependencies"]) & set(BENCH_ONLY)
        assert names(PROJECT["optional-dependencies"]["bench"]) == set(BENCH_ONLY)

    def test_dev_brings_the_bench(self) -> None:
        """`pip install -e '.[dev]'` (scripts/setup, CI) still installs everything the tests run."""
        assert "faas-accel[bench]" in PROJECT["optional-dependencies"]["dev"]

    def test_the_command_line_loads_no_bench_tool(self) -> None:
        """Every faas-accel command group imports without loading locust or matplotlib."""
        code = (
            "import sys\n"
            "import faas_accel.cli, faas_accel.bench.cli, faas_accel.bench.paper, nic_cache.app\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BENCH_ONLY!r}))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"
