"""Locust runs the bench starts (`load/coldstart.py`, `load/invoke.py`) and what they write."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .measure import BenchError


def run_locust(locustfile: Path, args: list[str], *, log: Path, timeout: float = 1800) -> int:
    """Run a locust file headless in a child process; returns its exit status (1 = some failures).
    Past `timeout` locust gets SIGTERM (it then writes its CSV/HTML and exits), SIGKILL 30 s later."""
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--only-summary", *args]
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise BenchError(
                f"locust {locustfile.name} {' '.join(args[:4])} ran over {timeout:.0f} s"
            ) from None
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): don't leave it running
                proc.kill()
                proc.wait()


def locust_stats(prefix: Path) -> list[dict[str, Any]]:
    """Rows of locust's `<prefix>_stats.csv` (without the Aggregated line); BenchError if none."""
    path = prefix.with_name(prefix.name + "_stats.csv")
    if not path.exists():
        raise BenchError(f"locust wrote no {path.name}: see locust.log beside it")
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get("Name") != "Aggregated"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
