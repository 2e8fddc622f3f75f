"""Every image the lab uses: the functions of ``stack.yml`` and four reference images.

Function images share two layers and add their own:

    python3.11 base   Debian 12's python3.11-minimal + libpython3.11-stdlib and their
                      libraries (~30 packages, dpkg and tar left out), stdlib precompiled,
                      and libstdc++6, which manylinux wheels may expect of the system
    runtime           the function server (``faas_watchdog``), port ``$port`` or 8080
    function          /home/app/function (handler.py ...) + pinned wheels in /home/app/python

The reference images stand in for the four the AlphaBoot paper pulls from Docker Hub,
at the sizes it quotes (compressed, 1 MB = 10^6 bytes) and with the layer counts of
their upstream counterparts. Each is real and runnable; the difference between what
the Debian packages weigh and the quoted size is made up by a filler file of random
bytes (``/usr/share/faas-accel/filler/<name>.bin``) in the layer noted below:

    ref/alpine:paper   7.33 MB, 1 layer  alpine:3 -> busybox-static with applet links,
                                          filler in its only layer
    ref/ubuntu:paper   77.8 MB, 1 layer  ubuntu:22.04 -> a Debian 12 minbase rootfs
                                          (Priority: required), filler in its only layer
    ref/python:paper   128 MB, 4 layers  python:3.11-slim-bookworm -> Debian base,
                                          ca-certificates+netbase, python3 (filler), pip
    ref/nginx:paper    143 MB, 7 layers  nginx:1.25-bookworm -> Debian base, nginx
                                          (filler), then five small layers: entrypoint,
                                          port script, default site, log links, page

python and nginx share their Debian base layer, as their upstream images do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import watchdog
from .errors import CatalogError
from .layer import Tree, directory, file, symlink
from .recipes import (
    APP_UID,
    FUNCTION_HOME,
    FUNCTION_PACKAGES,
    DebianLayer,
    FilesLayer,
    FunctionLayer,
    Recipe,
    busybox_finish,
    certificates_finish,
    debian_finish,
    files,
    pip_links_finish,
    python_base_finish,
    python_links_finish,
)

REGISTRY = "registry.lab"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STACK = PROJECT_ROOT / "stack.yml"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNTIME_MODULE = "usr/local/lib/python3.11/dist-packages/faas_watchdog.py"

# What debootstrap --variant=minbase installs: Debian 12's Priority: required.
DEBIAN_REQUIRED = (
    "apt", "base-files", "base-passwd", "bash", "bsdutils", "coreutils", "dash", "debconf",
    "debianutils", "diffutils", "dpkg", "e2fsprogs", "findutils", "grep", "gzip", "hostname",
    "init-system-helpers", "libc-bin", "libpam-modules", "libpam-modules-bin", "libpam-runtime",
    "login", "mawk", "mount", "ncurses-base", "ncurses-bin", "passwd", "perl-base", "sed",
    "sysvinit-utils", "tar", "tzdata", "util-linux",
)


@dataclass(frozen=True)
class ImageSpec:
    """An image to build. With ``size``, the layer at ``padded`` gets a filler so the
    layers add up to ``size`` compressed bytes."""

    name: str
    layers: tuple[Recipe, ...]
    config: Mapping[str, Any]
    description: str
    size: int | None = None
    padded: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def repository(self) -> str:
        """``faas/hello`` for ``registry.lab/faas/hello:0.1.0``."""
        return split_name(self.name)[1]

    @property
    def short(self) -> str:
        return self.repository.rsplit("/", 1)[-1]


def split_name(name: str) -> tuple[str, str, str]:
    """``registry.lab/faas/hello:0.1.0`` -> ``("registry.lab", "faas/hello", "0.1.0")``."""
    host, sep, rest = name.partition("/")
    repository, colon, tag = rest.rpartition(":")
    if not sep or not colon or not ("." in host or ":" in host):
        raise CatalogError(f"image name {name!r} is not host/repository:tag")
    return host, repository, tag


# -- function images ------------------------------------------------------------------------

# libstdc++6: manylinux wheels may link it and expect the system to have it (pandas does).
PYTHON_BASE = DebianLayer(
    name="python3.11 base: Debian 12 python3.11-minimal + libpython3.11-stdlib, precompiled",
    roots=("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6"),
    drop=("dpkg",),
    finish=python_base_finish,
    bytecode=("usr/lib/python3.11",),
)


def _runtime_files() -> Tree:
    source = Path(watchdog.__file__).read_bytes()
    return Tree([(RUNTIME_MODULE, file(source))])


RUNTIME = FilesLayer(
    name="runtime: faas_watchdog function server",
    make=_runtime_files,
    python=PYTHON_BASE,
    bytecode=("usr/local/lib/python3.11",),
)


def function_config(name: str) -> dict[str, Any]:
    return {
        "Entrypoint": ["/usr/bin/python3.11", "-m", "faas_watchdog"],
        "Env": [
            PATH,
            f"PYTHONPATH=/{FUNCTION_PACKAGES}",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            "LANG=C.UTF-8",
            f"HOME=/{FUNCTION_HOME}",
        ],
        "WorkingDir": f"/{FUNCTION_HOME}",
        "User": f"{APP_UID}:{APP_UID}",
        "ExposedPorts": {f"{watchdog.DEFAULT_PORT}/tcp": {}},
        "StopSignal": "SIGTERM",
        "Labels": {"com.openfaas.function": name},
    }


@dataclass(frozen=True)
class StackFunction:
    """One entry of ``stack.yml``'s ``functions``."""

    name: str
    image: str
    handler: Path
    lang: str


def load_stack(path: Path) -> list[StackFunction]:
    """The functions of an OpenFaaS stack file, handler folders resolved against it."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc
    functions = doc.get("functions") if isinstance(doc, dict) else None
    if not isinstance(functions, dict) or not functions:
        raise CatalogError(f"{path}: no `functions` mapping")
    found = []
    for name, entry in functions.items():
        if not isinstance(entry, dict) or not entry.get("image") or not entry.get("handler"):
            raise CatalogError(f"{path}: function {name!r} needs `image` and `handler`")
        split_name(str(entry["image"]))
        found.append(StackFunction(
            name=str(name),
            image=str(entry["image"]),
            handler=(path.parent / str(entry["handler"])).resolve(),
            lang=str(entry.get("lang", "")),
        ))
    return found


def function_image(fn: StackFunction) -> ImageSpec:
    return ImageSpec(
        name=fn.image,
        layers=(PYTHON_BASE, RUNTIME, FunctionLayer(f"function: {fn.name}", fn.handler, PYTHON_BASE)),
        config=function_config(fn.name),
        description=f"OpenFaaS python3-http style function {fn.name!r} served by faas_watchdog",
    )


# -- reference images -----------------------------------------------------------------------

DEBIAN_BASE = DebianLayer(
    name="debian 12 base: Priority required packages (minbase)",
    roots=DEBIAN_REQUIRED,
    finish=debian_finish,
)
BUSYBOX = DebianLayer(name="busybox-static with applet links", roots=("busybox-static",),
                      finish=busybox_finish)
CERTIFICATES = DebianLayer(name="ca-certificates, netbase", roots=("ca-certificates", "netbase"),
                           below=DEBIAN_BASE, finish=certificates_finish)
PYTHON3 = DebianLayer(name="python3 (Debian 12)", roots=("python3",), below=CERTIFICATES,
                      finish=python_links_finish)
PIP = DebianLayer(name="python3-pip, setuptools, wheel", roots=("python3-pip",), below=PYTHON3,
                  finish=pip_links_finish)
NGINX = DebianLayer(name="nginx (Debian 12)", roots=("nginx",), below=DEBIAN_BASE)

NGINX_ENTRYPOINT = b"""#!/bin/sh
# Run every /docker-entrypoint.d/*.sh, then the command (as the official image does).
set -e
if [ "$1" = nginx ]; then
    for script in /docker-entrypoint.d/*.sh; do
        [ -x "$script" ] && "$script"
    done
fi
exec "$@"
"""
NGINX_PORT_SCRIPT = b"""#!/bin/sh
# Listen on $NGINX_PORT instead of 80: functions and nginx share the VM's network.
set -e
if [ -n "$NGINX_PORT" ]; then
    sed -i -E "s/listen (\\[::\\]:)?[0-9]+ default_server/listen \\1$NGINX_PORT default_server/" \\
        /etc/nginx/sites-available/default
fi
"""
NGINX_PAGE = b"""<!DOCTYPE html>
<html><head><title>nginx stand-in</title></head>
<body><h1>nginx from Debian packages</h1>
<p>registry.lab/ref/nginx:paper stands in for Docker Hub's nginx in the faas-accel lab.</p>
</body></html>
"""
NGINX_SMALL_LAYERS = (
    FilesLayer("nginx: docker-entrypoint.sh",
               files({"docker-entrypoint.sh": file(NGINX_ENTRYPOINT, 0o755),
                      "docker-entrypoint.d": directory()})),
    FilesLayer("nginx: listen on $NGINX_PORT",
               files({"docker-entrypoint.d/10-listen-port.sh": file(NGINX_PORT_SCRIPT, 0o755)})),
    FilesLayer("nginx: enable the default site",
               files({"etc/nginx/sites-enabled/default": symlink("/etc/nginx/sites-available/default")})),
    FilesLayer("nginx: logs to stdout and stderr",
               files({"var/log/nginx/access.log": symlink("/dev/stdout"),
                      "var/log/nginx/error.log": symlink("/dev/stderr")})),
    FilesLayer("nginx: index page", files({"var/www/html/index.html": file(NGINX_PAGE)})),
)

REFERENCE_IMAGES = (
    ImageSpec(
        name=f"{REGISTRY}/ref/alpine:paper",
        layers=(BUSYBOX,),
        config={"Cmd": ["/bin/sh"], "Env": [PATH]},
        description="stands in for alpine (7.33 MB, 1 layer): busybox-static from Debian",
        size=7_330_000,
    ),
    ImageSpec(
        name=f"{REGISTRY}/ref/ubuntu:paper",
        layers=(DEBIAN_BASE,),
        config={"Cmd": ["/bin/bash"], "Env": [PATH]},
        description="stands in for ubuntu (77.8 MB, 1 layer): a Debian 12 minbase rootfs",
        size=77_800_000,
    ),
    ImageSpec(
        name=f"{REGISTRY}/ref/python:paper",
        layers=(DEBIAN_BASE, CERTIFICATES, PYTHON3, PIP),
        config={"Cmd": ["python3"], "Env": [PATH, "LANG=C.UTF-8"]},
        description="stands in for python (128 MB, 4 layers like python:3.11-slim): Debian 12 python3 + pip",
        size=128_000_000,
        padded=2,
    ),
    ImageSpec(
        name=f"{REGISTRY}/ref/nginx:paper",
        layers=(DEBIAN_BASE, NGINX, *NGINX_SMALL_LAYERS),
        config={
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "Env": [PATH],
            "ExposedPorts": {"80/tcp": {}},
            "StopSignal": "SIGQUIT",
        },
        description="stands in for nginx (143 MB, 7 layers like nginx:1.25): Debian 12 nginx",
        size=143_000_000,
        padded=1,
    ),
)


def catalog(stack: Path | None = None) -> list[ImageSpec]:
    """Every image: the stack's functions first, then the reference images."""
    functions = [function_image(fn) for fn in load_stack(stack or DEFAULT_STACK)]
    return [*functions, *REFERENCE_IMAGES]


def select(specs: Sequence[ImageSpec], only: Sequence[str] | None) -> list[ImageSpec]:
    """The images ``only`` names, each by full name, repository or last path part."""
    if not only:
        return list(specs)
    chosen: list[ImageSpec] = []
    for wanted in only:
        matches = [s for s in specs if wanted in (s.name, s.repository, s.short)]
        if len(matches) != 1:
            known = ", ".join(s.repository for s in specs)
            what = "is ambiguous" if matches else "is unknown"
            raise CatalogError(f"image {wanted!r} {what}; known: {known}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen
