"""Build images from the catalog into one OCI layout, reusing every layer it can.

A layer's cache key is the SHA-256 of its recipe's inputs (package versions, wheel
digests, file contents, the filler it gets) and of the builder's own source, so a
change anywhere that could change a layer's bytes gives a new key, and anything else
is reused. Cache layout (default ``$FAAS_ACCEL_CACHE``, else
``$XDG_CACHE_HOME/faas-accel``, else ``~/.cache/faas-accel``)::

    debs/            .deb files from apt-get download
    apt-resolved/    package sets apt chose, per set of roots and apt index state
    wheels/          wheels from pip download; wheels/locks/ what each requirements file got
    layers/<key>.json  a built layer: name, digest, diff_id, size
    blobs/sha256/    the built layers themselves
    rootfs/<key>/    the python3.11 base unpacked, for compiling bytecode with it
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import oci
from .catalog import ImageSpec, catalog, select, split_name
from .debian import Apt
from .layer import Filler, LayerBlob, Tree, write_layer
from .pycompile import Interpreter
from .recipes import DebianLayer, Recipe
from .wheels import Wheels

# The modules whose code decides a layer's bytes: part of every cache key.
LAYER_CODE = ("layer.py", "debian.py", "wheels.py", "pycompile.py", "recipes.py")
FILLER_DIR = "usr/share/faas-accel/filler"

Log = Callable[[str], None]


@functools.cache
def code_digest() -> str:
    digest = hashlib.sha256()
    for name in LAYER_CODE:
        digest.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    if os.environ.get("FAAS_ACCEL_CACHE"):
        return Path(os.environ["FAAS_ACCEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "faas-accel"


@dataclass(frozen=True)
class BuiltLayer:
    """A layer as built: what it is, its digests and compressed size."""

    name: str
    digest: str
    diff_id: str
    size: int


@dataclass(frozen=True)
class BuiltImage:
    """An image in the layout: ``name`` is also its tag there; ``size`` is the sum of
    its compressed layers (what a pull moves, config and manifest aside)."""

    name: str
    digest: str
    size: int
    layers: tuple[BuiltLayer, ...]
    config_digest: str
    description: str

    @property
    def repository(self) -> str:
        return split_name(self.name)[1]

    @property
    def tag(self) -> str:
        return split_name(self.name)[2]

    def reference(self, registry_host: str) -> str:
        """The name on another registry, e.g. ``127.0.0.1:5000/faas/hello:0.1.0``."""
        return f"{registry_host}/{self.repository}:{self.tag}"


class LayerStore:
    """Built layers by cache key, their blobs by digest."""

    def __init__(self, cache_dir: Path) -> None:
        self.index = cache_dir / "layers"
        self.blobs = cache_dir / "blobs" / "sha256"
        self.tmp = cache_dir / "blobs" / "tmp"

    def path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def lookup(self, key: str) -> BuiltLayer | None:
        record = self.index / f"{key}.json"
        if not record.exists():
            return None
        layer = BuiltLayer(**json.loads(record.read_text()))
        blob = self.path(layer.digest)
        return layer if blob.exists() and blob.stat().st_size == layer.size else None

    def write(self, key: str, name: str, writer: Callable[[BinaryIO], LayerBlob]) -> BuiltLayer:
        for folder in (self.index, self.blobs, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp / f"{key}.{os.getpid()}"
        with open(tmp, "wb") as out:
            blob = writer(out)
        tmp.replace(self.path(blob.digest))
        layer = BuiltLayer(name=name, digest=blob.digest, diff_id=blob.diff_id, size=blob.size)
        record = self.index / f"{key}.json"
        record.with_suffix(".tmp").write_text(json.dumps(dataclasses.asdict(layer)))
        record.with_suffix(".tmp").replace(record)
        return layer


class ImageBuilder:
    """Builds images; ``stats`` counts layers ``built`` and ``reused`` from the cache.

    With ``reuse=False`` every layer is built again (downloads are still reused): two
    such builds giving the same digests is what "deterministic" means here.
    """

    def __init__(self, cache_dir: Path | None = None, *, reuse: bool = True, log: Log | None = None) -> None:
        self.cache_dir = Path(cache_dir or default_cache_dir()).resolve()
        self.apt = Apt(self.cache_dir)
        self.wheels = Wheels(self.cache_dir)
        self.store = LayerStore(self.cache_dir)
        self.reuse = reuse
        self.log = log or (lambda line: None)
        self.stats: Counter[str] = Counter()
        self._keys: dict[Recipe, str] = {}  # recipes are frozen dataclasses: equal means same
        self._trees: dict[str, Tree] = {}
        self._layers: dict[str, BuiltLayer] = {}

    # -- what recipes may ask (recipes.Context) ------------------------------------------

    def key(self, recipe: Recipe) -> str:
        if recipe not in self._keys:
            inputs = {"code": code_digest(), "recipe": type(recipe).__name__, "name": recipe.name,
                      "inputs": recipe.inputs(self)}
            self._keys[recipe] = hashlib.sha256(oci.canonical_json(inputs)).hexdigest()
        return self._keys[recipe]

    def _rootfs(self, recipe: Recipe) -> tuple[Path, Path]:
        root = self.cache_dir / "rootfs" / self.key(recipe)
        return root, root.with_suffix(".done")

    def scratch_rootfs(self, recipe: Recipe) -> Path:
        root, done = self._rootfs(recipe)
        done.unlink(missing_ok=True)
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        return root

    def interpreter(self, recipe: DebianLayer) -> Interpreter:
        root, done = self._rootfs(recipe)
        if not done.exists():
            self._tree(recipe)
        return Interpreter(root)

    # -- building ---------------------------------------------------------------------------

    def _tree(self, recipe: Recipe) -> Tree:
        key = self.key(recipe)
        if key not in self._trees:
            self._trees[key] = recipe.tree(self)
            root, done = self._rootfs(recipe)
            if root.exists():
                done.touch()
        return self._trees[key]

    def layer(self, recipe: Recipe, filler: Filler | None = None) -> BuiltLayer:
        """Build (or find) one layer."""
        key = self.key(recipe)
        if filler is not None:
            padded = [key, filler.path, filler.target, filler.seed]
            key = hashlib.sha256(oci.canonical_json(padded)).hexdigest()
        if key in self._layers:
            return self._layers[key]
        found = self.store.lookup(key) if self.reuse else None
        if found is not None:
            self.stats["reused"] += 1
            self._layers[key] = found
            return found
        started = time.monotonic()
        tree = self._tree(recipe)
        built = self.store.write(key, recipe.name, lambda out: write_layer(tree, out, filler=filler))
        self.stats["built"] += 1
        self.log(f"built   {built.digest[:19]} {built.size / 1e6:8.2f} MB "
                 f"{time.monotonic() - started:6.1f}s  {recipe.name}")
        self._layers[key] = built
        return built

    def image(self, spec: ImageSpec, layout: oci.Layout) -> BuiltImage:
        """Build ``spec``'s layers and write the image into ``layout``."""
        layers: dict[int, BuiltLayer] = {}
        for index, recipe in enumerate(spec.layers):
            if spec.size is None or index != spec.padded:
                layers[index] = self.layer(recipe)
        if spec.size is not None:
            filler = Filler(
                path=f"{FILLER_DIR}/{spec.short}.bin",
                target=spec.size - sum(layer.size for layer in layers.values()),
                seed=spec.name,
            )
            layers[spec.padded] = self.layer(spec.layers[spec.padded], filler)
        ordered = [layers[i] for i in range(len(spec.layers))]
        for layer in ordered:
            layout.put_file(layer.digest, self.store.path(layer.digest))
        labels = {**spec.config.get("Labels", {}), oci.DESCRIPTION: spec.description}
        config = oci.image_config(
            {**spec.config, "Labels": labels},
            [layer.diff_id for layer in ordered],
            [f"faas-accel images: {layer.name}" for layer in ordered],
        )
        config_digest = layout.put(config)
        manifest = oci.image_manifest(
            config,
            [oci.descriptor(oci.OCI_LAYER_GZIP, layer.digest, layer.size) for layer in ordered],
            {oci.DESCRIPTION: spec.description},
        )
        layout.tag(spec.name, manifest)
        return BuiltImage(
            name=spec.name,
            digest=oci.sha256_digest(manifest),
            size=sum(layer.size for layer in ordered),
            layers=tuple(ordered),
            config_digest=config_digest,
            description=spec.description,
        )

    def build(self, out_dir: Path, specs: Sequence[ImageSpec]) -> dict[str, BuiltImage]:
        """Build ``specs`` into the OCI layout at ``out_dir``; keyed by full image name."""
        layout = oci.Layout(Path(out_dir).resolve())
        built = {}
        try:
            for spec in specs:
                started = time.monotonic()
                image = self.image(spec, layout)
                built[image.name] = image
                self.log(f"image   {image.digest[:19]} {image.size / 1e6:8.2f} MB "
                         f"{time.monotonic() - started:6.1f}s  {image.name}")
        finally:
            layout.save()
            self._trees.clear()
        return built


def build_all(
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    only: list[str] | None = None,
    stack: Path | None = None,
    log: Log | None = None,
) -> dict[str, BuiltImage]:
    """Build every image (or those ``only`` names: full name, repository such as
    ``faas/hello``, or last part such as ``hello``) into one OCI layout at ``out_dir``,
    each tagged with its full name. Returns them keyed by full name."""
    specs = select(catalog(stack), only)
    return ImageBuilder(cache_dir, log=log).build(out_dir, specs)


def summary(built: Mapping[str, BuiltImage]) -> list[dict[str, Any]]:
    """Rows for a table or JSON: name, digest, size, layers."""
    return [
        {"name": img.name, "digest": img.digest, "size": img.size, "layers": len(img.layers)}
        for img in built.values()
    ]
