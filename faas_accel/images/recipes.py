"""Layer recipes: what goes into each kind of layer, and what its cache key depends on.

A recipe has a ``name`` (shown in image history), ``inputs(ctx)`` (everything its
bytes depend on, as JSON; the builder hashes it into the layer's cache key, together
with the builder's own source) and ``tree(ctx)`` (the content). Three kinds:

- ``DebianLayer``: packages from Debian, unpacked without running their scripts; a
  ``finish`` hook does the little the scripts would have done that matters in an image
  (``/etc/passwd``, a symlink, a certificate bundle). Stacked on ``below``, it holds
  only the packages the layers below do not.
- ``FilesLayer``: a few files written by the project (the function server, configs).
- ``FunctionLayer``: one function's folder plus its pinned wheels.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .debian import EXCLUDED_PREFIXES, Apt, Package, materialize, unpack
from .errors import CatalogError
from .layer import Entry, Kind, Tree, directory, file, symlink
from .pycompile import Interpreter, collect_bytecode, compile_tree
from .wheels import Wheels, unpack_wheel

APP_UID = 1000
FUNCTION_HOME = "home/app"
FUNCTION_DIR = f"{FUNCTION_HOME}/function"
FUNCTION_PACKAGES = f"{FUNCTION_HOME}/python"
SKIPPED_SOURCE_PARTS = ("__pycache__", ".pytest_cache", ".mypy_cache")


class Context(Protocol):
    """What a recipe may ask of the builder."""

    apt: Apt
    wheels: Wheels

    def key(self, recipe: Recipe) -> str:
        """The cache key of ``recipe`` (a hex digest)."""

    def scratch_rootfs(self, recipe: Recipe) -> Path:
        """An empty directory kept for ``recipe``'s rootfs (see ``interpreter``)."""

    def interpreter(self, recipe: DebianLayer) -> Interpreter:
        """The python3.11 of ``recipe``'s rootfs, materializing it if needed."""


class Recipe(Protocol):
    @property
    def name(self) -> str:
        """What the layer is, for image history and logs."""

    def inputs(self, ctx: Context) -> dict[str, Any]:
        """Everything the layer's bytes depend on, as JSON-able data."""

    def tree(self, ctx: Context) -> Tree:
        """The layer's content."""


def describe(tree: Tree) -> list[list[Any]]:
    """A tree as JSON-able rows, file contents by digest (for cache keys)."""
    return [
        [path, e.kind.value, e.mode, e.uid, e.gid, hashlib.sha256(e.data).hexdigest(), e.link]
        for path, e in sorted(tree.items())
    ]


@dataclass(frozen=True)
class DebianLayer:
    """Debian packages ``roots`` (and their dependencies) not already ``below``.

    ``drop`` names packages to leave out together with what only they pull in.
    ``bytecode`` lists folders to precompile with the layer's own python3.11 (only for
    a layer with nothing below, as its rootfs must hold the interpreter).
    """

    name: str
    roots: tuple[str, ...]
    below: DebianLayer | None = None
    drop: tuple[str, ...] = ()
    finish: Callable[[Tree], None] | None = None
    bytecode: tuple[str, ...] = ()

    def all_roots(self) -> tuple[str, ...]:
        return (self.below.all_roots() if self.below else ()) + self.roots

    def all_drop(self) -> tuple[str, ...]:
        return (self.below.all_drop() if self.below else ()) + self.drop

    def packages(self, ctx: Context) -> list[Package]:
        """The packages of this layer alone, in unpack order."""
        everything = ctx.apt.resolve(self.all_roots(), self.all_drop())
        lower = set(self.below.stack_packages(ctx)) if self.below else set()
        return [p for p in everything if p not in lower]

    def stack_packages(self, ctx: Context) -> list[Package]:
        """The packages of this layer and every layer below it."""
        return ctx.apt.resolve(self.all_roots(), self.all_drop())

    def inputs(self, ctx: Context) -> dict[str, Any]:
        return {
            "packages": [str(p) for p in self.packages(ctx)],
            "finish": self.finish.__qualname__ if self.finish else None,
            "bytecode": list(self.bytecode),
            "excluded": list(EXCLUDED_PREFIXES),
        }

    def tree(self, ctx: Context) -> Tree:
        tree = unpack(ctx.apt.download(self.packages(ctx)))
        if self.finish:
            self.finish(tree)
        if self.bytecode:
            if self.below is not None:
                raise CatalogError(f"{self.name}: bytecode needs the interpreter in the same layer")
            root = ctx.scratch_rootfs(self)
            materialize(tree, root)
            Interpreter(root).compile_under(root, self.bytecode)
            collect_bytecode(tree, root, self.bytecode)
        return tree


@dataclass(frozen=True)
class FilesLayer:
    """Files the project writes itself; ``.py`` files under ``bytecode`` are compiled
    by ``python``'s interpreter."""

    name: str
    make: Callable[[], Tree]
    python: DebianLayer | None = None
    bytecode: tuple[str, ...] = ()

    def inputs(self, ctx: Context) -> dict[str, Any]:
        return {
            "files": describe(self.make()),
            "python": ctx.key(self.python) if self.python and self.bytecode else None,
            "bytecode": list(self.bytecode),
        }

    def tree(self, ctx: Context) -> Tree:
        tree = self.make()
        if self.python and self.bytecode:
            compile_tree(tree, ctx.interpreter(self.python), self.bytecode)
        return tree


def source_tree(folder: Path, prefix: str) -> Tree:
    """A folder's files under ``prefix`` (root-owned, 0644 or 0755), caches left out."""
    if not folder.is_dir():
        raise CatalogError(f"function folder {folder} does not exist")
    tree = Tree()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_SOURCE_PARTS)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith(".pyc") or path.is_symlink():
                continue
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            tree.add(f"{prefix}/{path.relative_to(folder)}", file(path.read_bytes(), mode))
    return tree


@dataclass(frozen=True)
class FunctionLayer:
    """A function's folder at ``/home/app/function`` and the wheels its
    ``requirements.txt`` pins at ``/home/app/python``, all precompiled."""

    name: str
    source: Path
    python: DebianLayer

    def _wheels(self, ctx: Context) -> list[tuple[Path, str]]:
        requirements = self.source / "requirements.txt"
        return ctx.wheels.fetch(requirements) if requirements.exists() else []

    def inputs(self, ctx: Context) -> dict[str, Any]:
        return {
            "files": describe(source_tree(self.source, FUNCTION_DIR)),
            "wheels": [[path.name, digest] for path, digest in self._wheels(ctx)],
            "python": ctx.key(self.python),
        }

    def tree(self, ctx: Context) -> Tree:
        tree = source_tree(self.source, FUNCTION_DIR)
        for wheel, _ in self._wheels(ctx):
            for path, entry in unpack_wheel(wheel, FUNCTION_PACKAGES):
                tree.add(path, entry)
        compile_tree(tree, ctx.interpreter(self.python), [FUNCTION_DIR, FUNCTION_PACKAGES])
        return tree


# -- what package scripts would have done --------------------------------------------------


def _accounts(tree: Tree, passwd: str, group: str) -> None:
    tree.add("etc/passwd", file(passwd.encode()))
    tree.add("etc/group", file(group.encode()))


def python_base_finish(tree: Tree) -> None:
    """Accounts for root and the function user, /tmp, and the ``python3`` name."""
    _accounts(
        tree,
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"app:x:{APP_UID}:{APP_UID}:function:/{FUNCTION_HOME}:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        f"root:x:0:\napp:x:{APP_UID}:\nnogroup:x:65534:\n",
    )
    tree.add("tmp", directory(0o1777))
    tree.add("root", directory(0o700))
    tree.add(FUNCTION_HOME, directory())
    tree.add("usr/bin/python3", symlink("python3.11"))


def debian_finish(tree: Tree) -> None:
    """base-passwd's accounts and the ``awk`` alternative."""
    masters = [tree.get(f"usr/share/base-passwd/{n}.master") for n in ("passwd", "group")]
    if masters[0] is None or masters[1] is None:
        raise CatalogError("base-passwd's master files are missing")
    _accounts(tree, masters[0].data.decode(), masters[1].data.decode())
    tree.add("usr/bin/awk", symlink("mawk"))


def certificates_finish(tree: Tree) -> None:
    """The bundle ``update-ca-certificates`` would write: every Mozilla root, sorted."""
    certs = [
        e.data for path, e in sorted(tree.items())
        if path.startswith("usr/share/ca-certificates/mozilla/") and path.endswith(".crt")
    ]
    tree.add("etc/ssl/certs/ca-certificates.crt", file(b"".join(c if c.endswith(b"\n") else c + b"\n"
                                                               for c in certs)))


def python_links_finish(tree: Tree) -> None:
    """``python`` on PATH, as the official python images have it."""
    tree.add("usr/local/bin/python", symlink("/usr/bin/python3"))


def pip_links_finish(tree: Tree) -> None:
    tree.add("usr/local/bin/pip", symlink("/usr/bin/pip3"))


def busybox_finish(tree: Tree) -> None:
    """One symlink per applet, as ``busybox --install -s`` would make (not replacing
    anything the package ships)."""
    binary = tree.get("bin/busybox")
    if binary is None or binary.kind is not Kind.FILE:
        raise CatalogError("busybox-static ships no /bin/busybox")
    with tempfile.TemporaryDirectory(prefix="busybox-") as tmp:
        exe = Path(tmp) / "busybox"
        exe.write_bytes(binary.data)
        exe.chmod(0o755)
        listed = subprocess.run([str(exe), "--list-full"], capture_output=True, text=True, check=True)
    for applet in sorted(listed.stdout.split()):
        if applet not in tree:
            tree.add(applet, symlink("/bin/busybox"))
    _accounts(tree, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
              "root:x:0:\nnogroup:x:65534:\n")
    tree.add("tmp", directory(0o1777))
    tree.add("root", directory(0o700))


def files(entries: dict[str, Entry]) -> Callable[[], Tree]:
    """A ``FilesLayer.make`` for fixed content."""
    return lambda: Tree(entries.items())
