"""Deterministic OCI images built in memory, written as OCI layouts, pushed with skopeo.

The same inputs always give the same bytes, so a test knows every digest
before anything is pushed and can assert that a client received exactly
those bytes::

    base = busybox_layer()
    img = image([base, layer({"etc/motd": b"hi\\n"})], cmd=["cat", "/etc/motd"])
    publish(img, f"{registry.host}/lab/motd:1")
    assert img.layer_digests[0] == base.digest
"""

from __future__ import annotations

import builtins
import functools
import gzip
import hashlib
import io
import json
import random
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .procs import run

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_CANDIDATES = ("/bin/busybox-static", "/bin/busybox", "/usr/bin/busybox")
BUSYBOX_APPLETS = ("sh", "echo", "cat", "sleep", "ls", "env", "true", "wc", "sha256sum", "httpd")


def canonical_json(obj: Any) -> builtins.bytes:
    """Serialise ``obj`` the one way this module always does (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: builtins.bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Blob:
    """Content addressed by its sha256: a layer, a config, a manifest or an index."""

    def __init__(self, data: builtins.bytes, media_type: str) -> None:
        self.bytes = data
        self.media_type = media_type
        self.digest = sha256_digest(data)
        self.size = len(data)

    @property
    def hex(self) -> str:
        """The digest without its ``sha256:`` prefix, as used in blob paths."""
        return self.digest.split(":", 1)[1]

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The OCI descriptor pointing at this blob."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    def blobs(self) -> Iterator[Blob]:
        """This blob and every blob it references, each referenced one first."""
        yield self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.media_type} {self.digest[:19]} {self.size}B>"


class Layer(Blob):
    """A gzip-compressed tar layer; ``diff_id`` is the digest of the uncompressed tar."""

    def __init__(self, data: builtins.bytes, diff_id: str) -> None:
        super().__init__(data, OCI_LAYER_GZIP)
        self.diff_id = diff_id


class Image(Blob):
    """An OCI image manifest together with the config and layers it references."""

    def __init__(
        self,
        data: builtins.bytes,
        config: Blob,
        layers: Sequence[Layer],
        platform: Mapping[str, str],
    ) -> None:
        super().__init__(data, OCI_MANIFEST)
        self.config = config
        self.layers = tuple(layers)
        self.platform = dict(platform)

    @property
    def config_digest(self) -> str:
        return self.config.digest

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def blob_digests(self) -> list[str]:
        """Digests a client fetches from ``/blobs/``: the config, then every layer."""
        return [self.config.digest, *self.layer_digests]

    @property
    def config_json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.config.bytes)
        return parsed

    def blobs(self) -> Iterator[Blob]:
        yield self.config
        yield from self.layers
        yield self


class Index(Blob):
    """An OCI image index together with the images it lists."""

    def __init__(self, data: builtins.bytes, images: Sequence[Image]) -> None:
        super().__init__(data, OCI_INDEX)
        self.images = tuple(images)

    @property
    def manifest_digests(self) -> list[str]:
        return [img.digest for img in self.images]

    def image_for(self, os: str = "linux", arch: str = "amd64") -> Image:
        """The listed image for a platform; KeyError if there is none."""
        for img in self.images:
            if img.platform.get("os") == os and img.platform.get("architecture") == arch:
                return img
        raise KeyError(f"no {os}/{arch} image in {self.digest}")

    def blobs(self) -> Iterator[Blob]:
        for img in self.images:
            yield from img.blobs()
        yield self


@dataclass(frozen=True)
class Symlink:
    """A symbolic link entry for ``layer``."""

    target: str


@dataclass(frozen=True)
class Dir:
    """An explicit directory entry for ``layer`` (parents are added as 0755 anyway)."""

    mode: int = 0o755


FileSpec = builtins.bytes | tuple[builtins.bytes, int] | Symlink | Dir


def _tar_info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer(files: Mapping[str, FileSpec], *, compresslevel: int = 6) -> Layer:
    """Build a gzip tar layer from ``{path: content}``.

    A value is file bytes (mode 0644), ``(bytes, mode)``, ``Symlink(target)``
    or ``Dir(mode)``. Entries are sorted by path, every parent directory gets a
    0755 entry, and times, owners and the gzip header are fixed, so the same
    files always give the same digest.
    """
    entries: dict[str, FileSpec] = {}
    for raw, spec in files.items():
        path = PurePosixPath(raw.lstrip("/"))
        if not path.parts or ".." in path.parts:
            raise ValueError(f"bad layer path {raw!r}")
        for parent in reversed(path.parents[:-1]):
            entries.setdefault(str(parent), Dir())
        entries[str(path)] = spec

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            spec = entries[name]
            if isinstance(spec, Dir):
                tar.addfile(_tar_info(name, tarfile.DIRTYPE, spec.mode))
            elif isinstance(spec, Symlink):
                info = _tar_info(name, tarfile.SYMTYPE, 0o777)
                info.linkname = spec.target
                tar.addfile(info)
            else:
                data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
                info = _tar_info(name, tarfile.REGTYPE, mode)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tar_bytes = buf.getvalue()
    compressed = gzip.compress(tar_bytes, compresslevel=compresslevel, mtime=0)
    return Layer(compressed, sha256_digest(tar_bytes))


def random_bytes(size: int, seed: int) -> builtins.bytes:
    """``size`` incompressible bytes, the same for the same ``seed``."""
    return random.Random(seed).randbytes(size)


def random_layer(size: int, seed: int, path: str | None = None) -> Layer:
    """A layer holding one file of ``size`` random bytes.

    The gzip stream uses stored blocks (random data does not compress), so
    the blob is ``size`` plus about 1.5 KB and a 100 MB layer builds in well
    under a second.
    """
    name = path or f"data/random-{seed}-{size}.bin"
    return layer({name: random_bytes(size, seed)}, compresslevel=0)


def image(
    layers: Sequence[Layer],
    *,
    os: str = "linux",
    arch: str = "amd64",
    variant: str | None = None,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] = (DEFAULT_PATH,),
    workdir: str | None = None,
    labels: Mapping[str, str] | None = None,
    config_extra: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """Build an image manifest and its config over ``layers``.

    ``config_extra`` is merged into the config's ``config`` section (for
    example ``{"ExposedPorts": {"8080/tcp": {}}}``).
    """
    run_config: dict[str, Any] = {"Env": list(env)}
    if entrypoint is not None:
        run_config["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        run_config["Cmd"] = list(cmd)
    if workdir is not None:
        run_config["WorkingDir"] = workdir
    if labels:
        run_config["Labels"] = dict(labels)
    run_config.update(config_extra or {})

    platform = {"architecture": arch, "os": os}
    if variant:
        platform["variant"] = variant
    config_doc = {
        **platform,
        "created": "1970-01-01T00:00:00Z",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": [ly.diff_id for ly in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests.support.oci"}] * len(layers),
    }
    config = Blob(canonical_json(config_doc), OCI_CONFIG)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [ly.descriptor() for ly in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return Image(canonical_json(manifest), config, layers, platform)


def index(images: Sequence[Image], *, annotations: Mapping[str, str] | None = None) -> Index:
    """Build an image index listing ``images``, each under its own platform."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [img.descriptor(platform=img.platform) for img in images],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return Index(canonical_json(doc), images)


def _is_static_elf(path: Path) -> bool:
    """True if ``path`` is a 64-bit little-endian ELF with no program interpreter."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return False
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def find_busybox() -> Path:
    """The host's statically linked busybox (Debian's busybox-static puts it at /bin/busybox)."""
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    raise FileNotFoundError(
        f"no statically linked busybox at any of {BUSYBOX_CANDIDATES}; install busybox-static"
    )


@functools.cache
def busybox_layer() -> Layer:
    """A layer with /bin/busybox and symlinks for the common applets (built once)."""
    files: dict[str, FileSpec] = {"bin/busybox": (find_busybox().read_bytes(), 0o755)}
    for applet in BUSYBOX_APPLETS:
        files[f"bin/{applet}"] = Symlink("busybox")
    files["tmp"] = Dir(0o1777)
    return layer(files)


def busybox_image(
    extra_files: Mapping[str, FileSpec] | None = None,
    *,
    extra_layers: Sequence[Layer] = (),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = ("/bin/sh",),
    **image_kwargs: Any,
) -> Image:
    """A runnable linux/amd64 image: the busybox layer, ``extra_files`` as a
    second layer (if any), then ``extra_layers``.

    For example ``busybox_image(cmd=["echo", "hi"])`` or
    ``busybox_image(entrypoint=["/bin/busybox", "sh", "-c"], cmd=["echo hi"])``.
    """
    layers = [busybox_layer()]
    if extra_files:
        layers.append(layer(extra_files))
    layers.extend(extra_layers)
    return image(layers, entrypoint=entrypoint, cmd=cmd, **image_kwargs)


def write_layout(directory: Path, tag: str, obj: Blob) -> Path:
    """Write ``obj`` and everything it references as an OCI image layout.

    ``index.json`` gains (or has replaced) an entry named ``tag``, so several
    tags can share one layout directory. Returns the directory.
    """
    directory = Path(directory)
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    for blob in obj.blobs():
        target = blob_dir / blob.hex
        if not target.exists():
            target.write_bytes(blob.bytes)

    index_path = directory / "index.json"
    entries: list[dict[str, Any]] = []
    if index_path.exists():
        entries = [
            entry
            for entry in json.loads(index_path.read_bytes()).get("manifests", [])
            if entry.get("annotations", {}).get(REF_NAME) != tag
        ]
    entries.append(obj.descriptor(annotations={REF_NAME: tag}))
    index_path.write_bytes(canonical_json({"schemaVersion": 2, "manifests": entries}))
    return directory


def push(layout_dir: Path, tag: str, dest: str, creds: str | None = None) -> None:
    """Copy ``tag`` from an OCI layout to ``dest`` ("127.0.0.1:PORT/repo:tag") over
    plain HTTP, keeping every digest (skopeo fails rather than re-encode); ``creds`` is
    "user:password" for a registry with auth."""
    source, target = f"oci:{layout_dir}:{tag}", f"docker://{dest}"
    copy = ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"]
    if creds:
        copy.append(f"--dest-creds={creds}")
    run([*copy, source, target], timeout=300)


def publish(obj: Blob, dest: str, creds: str | None = None) -> None:
    """Push ``obj`` to ``dest`` through a throwaway OCI layout."""
    with tempfile.TemporaryDirectory(prefix="oci-layout-") as tmp:
        push(write_layout(Path(tmp), "push", obj), "push", dest, creds)


def skopeo_copy(src: str, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`skopeo copy docker://SRC dir:DEST` over plain HTTP (exit status not checked)."""
    return run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", *extra,
                f"docker://{src}", f"dir:{dest}"], timeout=300, check=False)  # fmt: skip


def assert_dir_matches(out: Path, image: Image) -> None:
    """A `skopeo copy ... dir:` result holds exactly the image's manifest and blobs."""
    manifest = (out / "manifest.json").read_bytes()
    assert sha256_digest(manifest) == image.digest
    for digest in image.blob_digests:
        assert sha256_digest((out / digest.split(":")[1]).read_bytes()) == digest
