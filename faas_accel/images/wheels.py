"""Python dependencies of a function: wheels for the image's interpreter, not the host's.

``Wheels.fetch`` runs ``pip download --no-deps`` for CPython 3.11 on manylinux x86_64
(the base image is Debian 12's python3.11, glibc 2.36), so every requirement must be
pinned, transitive ones included: the requirements file is the lock. What pip fetched
is remembered by the file's content, so a warm build never asks the index again.
``unpack_wheel`` installs a wheel the way pip would, minus everything that varies
between installs (``direct_url.json``, INSTALLER, timestamps, bytecode).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .errors import DownloadError
from .layer import Entry, file

PYTHON_VERSION = "3.11"
ABI = "cp311"
# Debian 12's glibc is 2.36: every manylinux tag from 2.17 up to it fits.
PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)))


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def pip_download_args(requirements: Path, dest: Path) -> list[str]:
    args = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        "--progress-bar", "off",
        "--python-version", PYTHON_VERSION, "--implementation", "cp",
        "--abi", ABI, "--abi", "abi3", "--abi", "none",
    ]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return [*args, "--dest", str(dest), "--requirement", str(requirements)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Wheels:
    """Download wheels into ``cache_dir/wheels`` and remember which ones a file needs."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = cache_dir / "wheels"
        self.locks = self.dir / "locks"

    def fetch(self, requirements: Path) -> list[tuple[Path, str]]:
        """``(wheel, sha256)`` for every requirement, in file-name order."""
        text = requirements.read_text()
        if not requirement_lines(text):
            return []
        key = hashlib.sha256(json.dumps([text, PYTHON_VERSION, ABI, PLATFORMS]).encode()).hexdigest()
        lock = self.locks / f"{key}.json"
        if lock.exists():
            recorded = json.loads(lock.read_text())
            found = [(self.dir / name, digest) for name, digest in recorded]
            if all(path.exists() for path, _ in found):
                return found
        self.dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pip-download-", dir=self.dir) as tmp:
            result = subprocess.run(
                pip_download_args(requirements, Path(tmp)), capture_output=True, text=True, check=False,
            )
            if result.returncode != 0:
                raise DownloadError(
                    f"pip download for {requirements} exited with {result.returncode}:\n"
                    + result.stderr.strip()
                )
            got = sorted(Path(tmp).glob("*.whl"))
            if len(got) != len(requirement_lines(text)):
                raise DownloadError(f"pip download for {requirements} gave {[p.name for p in got]}")
            found = []
            for wheel in got:
                target = self.dir / wheel.name
                if not target.exists():
                    shutil.move(wheel, target)
                found.append((target, sha256_file(target)))
        self.locks.mkdir(parents=True, exist_ok=True)
        lock.write_text(json.dumps([[path.name, digest] for path, digest in found]))
        return found


def unpack_wheel(wheel: Path, prefix: str) -> Iterator[tuple[str, Entry]]:
    """The files a wheel installs under ``prefix`` (a ``--target`` directory).

    ``.data/purelib`` and ``.data/platlib`` join the rest; scripts, headers and data
    files are left out: a function imports its dependencies, it does not run them.
    """
    with zipfile.ZipFile(wheel) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            parts = info.filename.split("/")
            if parts[0].endswith(".data") and len(parts) > 2:
                if parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            yield f"{prefix}/{'/'.join(parts)}", file(archive.read(info), mode)
