"""Bytecode for an image, compiled by the image's own interpreter.

Package scripts never run, so nothing compiles the standard library or a function's
dependencies at install time; and a layer's files all have mtime 0, which would make
timestamp-checked ``.pyc`` files stale or, worse, wrongly fresh. We compile
``unchecked-hash`` ``.pyc`` files with the python3.11 of the base rootfs, started
through that rootfs's own dynamic loader (no chroot, no root needed).

Marshal output depends on what the compiling process did before (reference counts
decide which objects are shared), so one process compiles every file in a fixed
order with a fixed hash seed: the same sources always give the same bytes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .debian import materialize
from .errors import LayerError
from .layer import Kind, Tree, file

LOADER = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
LIBRARY_PATH = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
INTERPRETER = "usr/bin/python3.11"

# Run by the image's interpreter: compile every .py under the given tops in sorted
# order, recording the path the file will have in the image.
COMPILE_SCRIPT = """
import os, py_compile, sys
root, tops = sys.argv[1], sys.argv[2:]
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
for top in tops:
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                source = os.path.join(dirpath, name)
                shown = "/" + os.path.relpath(source, root)
                try:
                    py_compile.compile(source, dfile=shown, doraise=True, invalidation_mode=mode)
                except py_compile.PyCompileError:
                    pass  # Python 2 sources shipped as test data
"""


class Interpreter:
    """The python3.11 of a rootfs on disk, runnable from the host."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        for needed in (LOADER, INTERPRETER):
            if not (rootfs / needed).exists():
                raise LayerError(f"{rootfs} has no {needed}")

    def argv(self, *args: str) -> list[str]:
        return [
            str(self.rootfs / LOADER),
            "--library-path",
            ":".join(str(self.rootfs / d) for d in LIBRARY_PATH),
            str(self.rootfs / INTERPRETER),
            *args,
        ]

    def run(self, *args: str, timeout: float = 600) -> str:
        env = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8"}
        result = subprocess.run(
            self.argv(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise LayerError(f"the image's python3.11 exited with {result.returncode}:\n{result.stderr}")
        return result.stdout

    def compile_under(self, root: Path, tops: Sequence[str]) -> None:
        """Write a ``__pycache__/*.pyc`` beside every ``.py`` below ``root/top``."""
        self.run("-c", COMPILE_SCRIPT, str(root), *tops)


def collect_bytecode(tree: Tree, root: Path, tops: Sequence[str]) -> None:
    """Add every ``.pyc`` below ``root/top`` to ``tree`` at the same relative path."""
    for top in tops:
        for dirpath, _, filenames in os.walk(root / top):
            for name in filenames:
                if name.endswith(".pyc"):
                    path = Path(dirpath, name)
                    tree.add(str(path.relative_to(root)), file(path.read_bytes()))


def compile_tree(tree: Tree, interpreter: Interpreter, tops: Sequence[str]) -> None:
    """Add bytecode for the ``.py`` files of ``tree`` below ``tops``, compiled by
    ``interpreter`` (the base image's python) in a scratch copy of the files."""
    with tempfile.TemporaryDirectory(prefix="pycompile-") as tmp:
        scratch = Tree((p, e) for p, e in tree.items() if e.kind is Kind.FILE and p.endswith(".py"))
        root = Path(tmp) / "root"
        materialize(scratch, root)
        present = [top for top in tops if (root / top).is_dir()]
        if present:
            interpreter.compile_under(root, present)
            collect_bytecode(tree, root, present)
