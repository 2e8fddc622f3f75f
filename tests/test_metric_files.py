"""The workers' metric files are read even while one of them is being created (0 bytes):
prometheus/client_python#1199 made every scrape of the cache fail in that window."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from nic_cache.metrics import WorkerFiles

WRITE_COUNTER = """
from prometheus_client import Counter
Counter("nic_cache_probe", "a counter a worker wrote").inc(3)
"""


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    """A multiprocess directory holding one worker's real file (a counter at 3)."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", WRITE_COUNTER], env=env, check=True, timeout=60)
    assert list(tmp_path.glob("*.db")), "the worker wrote no metric file"
    return tmp_path


def probe_total(collector: WorkerFiles) -> float:
    samples = [s for m in collector.collect() for s in m.samples if s.name == "nic_cache_probe_total"]
    return sum(s.value for s in samples)


class TestWorkerFiles:
    def test_reads_what_workers_wrote(self, metrics_dir: Path) -> None:
        """The counter a worker process wrote is merged."""
        assert probe_total(WorkerFiles(None, path=str(metrics_dir))) == 3

    def test_a_file_being_created_is_skipped_not_fatal(self, metrics_dir: Path) -> None:
        """A 0-byte file (a worker between creating and sizing it) leaves the others readable."""
        (metrics_dir / "counter_4242.db").touch()
        assert probe_total(WorkerFiles(None, path=str(metrics_dir))) == 3

    def test_the_library_collector_fails_on_it(self, metrics_dir: Path) -> None:
        """The reason for WorkerFiles: the stock collector raises on the same directory (if a
        prometheus_client release fixes this, this test fails and WorkerFiles can go)."""
        from prometheus_client.multiprocess import MultiProcessCollector

        (metrics_dir / "counter_4242.db").touch()
        with pytest.raises(struct.error, match="unpack_from requires a buffer"):
            list(MultiProcessCollector(None, path=str(metrics_dir)).collect())
