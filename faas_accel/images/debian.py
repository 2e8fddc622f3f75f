"""Root filesystems from Debian packages, without debootstrap and without running
any package script.

``Apt.resolve`` asks apt to simulate installing the roots onto an empty system (an
empty dpkg status file) with no recommends, then drops what is only there for
packages we never need in an image (dpkg, which drags in tar and its libraries). The
answer is remembered per apt index state, so a warm build never runs apt. ``.debs``
are fetched once with ``apt-get download`` into the cache and read in-process
(``ar`` + ``data.tar.xz``), keeping each file's mode and owner as packaged.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DownloadError, LayerError, ResolveError
from .layer import Entry, Kind, Tree, directory, file, hardlink, normalize, symlink

APT_LISTS = Path("/var/lib/apt/lists")
ARCH = "amd64"
APT_OPTIONS = (
    "-o", "Debug::NoLocking=1",
    "-o", f"APT::Architecture={ARCH}",
    "-o", f"APT::Architectures={ARCH}",
    "-o", "APT::Install-Recommends=false",
    "-o", "APT::Install-Suggests=false",
)
DEPENDS_OPTIONS = (
    "--no-recommends", "--no-suggests", "--no-conflicts",
    "--no-breaks", "--no-replaces", "--no-enhances",
)

# What the slim Debian images leave out (their dpkg path-exclude list), copyrights kept.
EXCLUDED_PREFIXES = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/linda/",
    "usr/share/locale/",
)

_INST = re.compile(r"^Inst (?P<name>\S+) (?:\[[^]]*\] )?\((?P<version>\S+) .*\[(?P<arch>[^]]+)\]\)")
_DEP = re.compile(r"^  ?(?P<alt>\|)?(?:Pre)?Depends: <?(?P<name>[^>\s]+)>?$")
_PROVIDER = re.compile(r"^    (?P<name>\S+)$")


@dataclass(frozen=True, order=True)
class Package:
    """One binary package at one version, as apt chose it."""

    name: str
    version: str
    arch: str = ARCH

    @property
    def filename(self) -> str:
        """The name ``apt-get download`` gives the ``.deb`` (an epoch's ``:`` as ``%3a``)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    def __str__(self) -> str:
        return f"{self.name}={self.version}"


def parse_simulation(text: str) -> list[Package]:
    """The packages an ``apt-get -s install`` would unpack, in apt's order."""
    found = []
    for line in text.splitlines():
        match = _INST.match(line)
        if match:
            found.append(Package(match["name"], match["version"], match["arch"]))
    return found


def parse_depends(text: str) -> dict[str, list[list[str]]]:
    """``apt-cache depends`` output as package -> dependency groups (alternatives).

    A virtual package in a group is replaced by the packages apt lists as providing it.
    """
    deps: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    group: list[str] = []
    open_group = False
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = deps.setdefault(line.strip(), [])
            group, open_group = [], False
            continue
        if current is None:
            continue
        dep = _DEP.match(line)
        if dep:
            if not open_group:
                group = []
                current.append(group)
            if "<" not in line:  # a virtual package: its providers follow, indented
                group.append(dep["name"])
            open_group = dep["alt"] is not None
            continue
        provider = _PROVIDER.match(line)
        if provider and current:
            current[-1].append(provider["name"])
    return deps


def prune(
    roots: Sequence[str],
    packages: Sequence[Package],
    depends: Mapping[str, Sequence[Sequence[str]]],
    drop: Iterable[str],
) -> list[Package]:
    """Keep the packages reachable from ``roots`` without passing through ``drop``.

    Every member of an alternative group that apt chose is followed, so nothing it
    installed to satisfy a kept package goes missing.
    """
    chosen = {p.name for p in packages}
    dropped = set(drop)
    missing = [r for r in roots if r not in chosen]
    if missing:
        raise ResolveError(f"apt did not choose root package(s) {missing}")
    seen: set[str] = set()
    todo = [r for r in roots if r not in dropped]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for group in depends.get(name, ()):
            todo.extend(d for d in group if d in chosen and d not in dropped and d not in seen)
    return [p for p in packages if p.name in seen]


def excluded(path: str) -> bool:
    """True for documentation and translations the slim images leave out."""
    return path.startswith(EXCLUDED_PREFIXES) and not (
        path.startswith("usr/share/doc/") and path.endswith("/copyright")
    )


def _run(argv: Sequence[str], cwd: Path | None = None, timeout: float = 600) -> str:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ResolveError(f"{argv[0]} failed to run: {exc}") from exc
    if result.returncode != 0:
        raise ResolveError(f"{' '.join(argv)} exited with {result.returncode}:\n{result.stderr.strip()}")
    return result.stdout


def lists_fingerprint(lists: Path = APT_LISTS) -> str:
    """Changes whenever ``apt-get update`` brings new package indexes."""
    digest = hashlib.sha256()
    for path in sorted(lists.glob("*Release")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class Apt:
    """Resolve and download Debian packages, remembering both under ``cache_dir``."""

    def __init__(self, cache_dir: Path, *, lists: Path = APT_LISTS) -> None:
        self.debs = cache_dir / "debs"
        self.resolved = cache_dir / "apt-resolved"
        self.lists = lists

    def resolve(self, roots: Sequence[str], drop: Sequence[str] = ()) -> list[Package]:
        """The packages an image with ``roots`` needs, in unpack order."""
        key = hashlib.sha256(
            json.dumps([sorted(roots), sorted(drop), lists_fingerprint(self.lists)]).encode()
        ).hexdigest()
        remembered = self.resolved / f"{key}.json"
        if remembered.exists():
            return [Package(*p) for p in json.loads(remembered.read_text())]
        with tempfile.TemporaryDirectory(prefix="apt-status-") as tmp:
            status = Path(tmp) / "status"
            status.touch()
            simulated = _run(
                ["apt-get", "-s", *APT_OPTIONS, "-o", f"Dir::State::status={status}", "install", *roots]
            )
        packages = parse_simulation(simulated)
        if not packages:
            raise ResolveError(f"apt chose no packages for {list(roots)}")
        depends = parse_depends(_run(["apt-cache", *APT_OPTIONS, "depends", *DEPENDS_OPTIONS,
                                      *(p.name for p in packages)]))
        kept = prune(roots, packages, depends, drop)
        _write_atomic(remembered, json.dumps([[p.name, p.version, p.arch] for p in kept]).encode())
        return kept

    def download(self, packages: Sequence[Package]) -> list[Path]:
        """Paths of the ``.deb`` files, fetching the ones not cached yet."""
        self.debs.mkdir(parents=True, exist_ok=True)
        missing = [p for p in packages if not (self.debs / p.filename).exists()]
        if missing:
            with tempfile.TemporaryDirectory(prefix="apt-download-", dir=self.debs) as tmp:
                # apt drops to the _apt user for downloads; let it write here.
                os.chmod(tmp, 0o777)
                try:
                    _run(["apt-get", *APT_OPTIONS, "download", *(str(p) for p in missing)], cwd=Path(tmp))
                except ResolveError as exc:
                    hint = "\n(an old package index names versions the mirror no longer has: apt-get update)"
                    raise DownloadError(f"{exc}{hint}") from exc
                for p in missing:
                    got = Path(tmp) / p.filename
                    if not got.exists():
                        raise DownloadError(f"apt-get download left no {p.filename}")
                    os.chmod(got, 0o644)
                    got.replace(self.debs / p.filename)
        return [self.debs / p.filename for p in packages]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _ar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    if not data.startswith(b"!<arch>\n"):
        raise LayerError("not a Debian package (no ar magic)")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        offset += 60
        yield name, data[offset : offset + size]
        offset += size + (size & 1)


def data_tar(deb: Path) -> bytes:
    """The uncompressed ``data.tar`` of a ``.deb``."""
    for name, member in _ar_members(deb.read_bytes()):
        if name == "data.tar.xz":
            return lzma.decompress(member)
        if name == "data.tar":
            return member
        if name.startswith("data.tar"):
            # zstd and friends: let dpkg-deb do it rather than carry a decompressor.
            return subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
            ).stdout
    raise LayerError(f"{deb.name} has no data.tar member")


def read_deb(deb: Path) -> Iterator[tuple[str, Entry]]:
    """Every path a package would unpack, with the mode and owner it was packaged with."""
    with tarfile.open(fileobj=io.BytesIO(data_tar(deb)), mode="r:") as tar:
        for member in tar:
            path = normalize(member.name)
            if not path:
                continue
            owner = {"uid": member.uid, "gid": member.gid}
            if member.isdir():
                yield path, directory(member.mode, **owner)
            elif member.issym():
                yield path, symlink(member.linkname)
            elif member.islnk():
                yield path, hardlink(member.linkname)
            elif member.isreg():
                extracted = tar.extractfile(member)
                assert extracted is not None
                yield path, file(extracted.read(), member.mode, **owner)
            else:
                raise LayerError(f"{deb.name}: {member.name} is a device or fifo; not supported")


def unpack(debs: Iterable[Path], *, exclude: bool = True) -> Tree:
    """A tree holding every package's files, later packages winning a clash."""
    tree = Tree()
    for deb in debs:
        for path, entry in read_deb(deb):
            if not (exclude and excluded(path)):
                tree.add(path, entry)
    return tree


def materialize(tree: Tree, root: Path) -> None:
    """Write ``tree`` under ``root`` (for running the image's own programs at build time)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name, entry in tree.ordered():
        target = root / name
        if entry.kind is Kind.DIR:
            target.mkdir(exist_ok=True)
            target.chmod(0o755)
        elif entry.kind is Kind.SYMLINK:
            target.symlink_to(entry.link)
        elif entry.kind is Kind.HARDLINK:
            os.link(root / entry.link, target)
        else:
            target.write_bytes(entry.data)
            target.chmod(entry.mode & 0o777)
