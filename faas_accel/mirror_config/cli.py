"""`faas-accel mirror-config`: point containerd, Docker or k3s at the NIC cache.

Each command reads the files it would change, asks `plan.py` for their new text, then
either prints a unified diff (`--dry-run`, nothing written) or writes every changed file
atomically (temp file, fsync, rename) after copying the old one to `<file>.bak` (`.bak.1`,
`.bak.2`, ... when that exists, so the first original is never lost). Every file is planned
before any is written: one that cannot be parsed stops the run with nothing changed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from nic_cache.diskio import fsync_dir

from .plan import (
    DEFAULT_DIAL_TIMEOUT,
    DOCKER_HUB,
    FileChange,
    InvalidArgument,
    Mirror,
    Registry,
    UnsafeToEdit,
    check_hosts_toml,
    containerd_hosts,
    merge_daemon_json,
    merge_registries_yaml,
    parse_mirror,
    parse_registries,
)

NEW_FILE_MODE = 0o644


def _mirror_callback(ctx: click.Context, param: click.Parameter, value: str) -> Mirror:
    try:
        return parse_mirror(value)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _registries_callback(
    ctx: click.Context, param: click.Parameter, value: Sequence[str]
) -> tuple[Registry, ...]:
    try:
        return parse_registries(value)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


mirror_option = click.option(
    "--mirror",
    required=True,
    metavar="URL",
    callback=_mirror_callback,
    help="The NIC cache as the VM reaches it, e.g. http://198.18.1.1:5000.",
)
registry_option = click.option(
    "--registry",
    "registries",
    multiple=True,
    default=(DOCKER_HUB,),
    show_default=True,
    metavar="HOST[=URL]",
    callback=_registries_callback,
    help="An upstream registry to pull through the mirror, with its real server URL when "
    "that is not https://HOST (docker.io's is https://registry-1.docker.io). Repeatable.",
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print a unified diff of what would change; write nothing."
)


@click.group("mirror-config")
def mirror_config() -> None:
    """Configure a container runtime to pull images through the NIC cache."""


@mirror_config.command()
@mirror_option
@registry_option
@click.option(
    "--config-path",
    default="/etc/containerd/certs.d",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="containerd's registry config_path (`ctr --hosts-dir` for ctr).",
)
@click.option("--skip-verify", is_flag=True, help="Accept a self-signed certificate on an https mirror.")
@click.option(
    "--dial-timeout",
    default=DEFAULT_DIAL_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How long containerd >= 1.7 tries to connect to the mirror before falling back to "
    "the registry (1.6 ignores it); 0 leaves it out.",
)
@dry_run_option
def containerd(
    mirror: Mirror,
    registries: tuple[Registry, ...],
    config_path: Path,
    skip_verify: bool,
    dial_timeout: float,
    dry_run: bool,
) -> None:
    """Write CONFIG_PATH/<registry>/hosts.toml for every registry.

    containerd reads them only when its CRI registry `config_path` names CONFIG_PATH; it
    rereads them on every pull, so no restart is needed. An existing hosts.toml is replaced
    (after a backup), never merged into.
    """
    try:
        planned = containerd_hosts(mirror, registries, skip_verify=skip_verify, dial_timeout=dial_timeout)
    except InvalidArgument as exc:
        raise click.UsageError(str(exc)) from None
    changes = [
        _plan(config_path / relative, functools.partial(_replace_toml, new=text))
        for relative, text in planned.items()
    ]
    _apply(changes, dry_run=dry_run)


@mirror_config.command()
@mirror_option
@click.option(
    "--daemon-json",
    default="/etc/docker/daemon.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="dockerd's configuration file.",
)
@dry_run_option
def docker(mirror: Mirror, daemon_json: Path, dry_run: bool) -> None:
    """Add the mirror to daemon.json's registry-mirrors (docker.io images only).

    A plain-http mirror is also listed in insecure-registries. Other keys are kept.
    dockerd reads the file at start: restart it afterwards.
    """
    _apply([_plan(daemon_json, lambda old: merge_daemon_json(old, mirror))], dry_run=dry_run)


@mirror_config.command()
@mirror_option
@registry_option
@click.option(
    "--registries-yaml",
    default="/etc/rancher/k3s/registries.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="k3s's registry configuration file.",
)
@dry_run_option
def k3s(mirror: Mirror, registries: tuple[Registry, ...], registries_yaml: Path, dry_run: bool) -> None:
    """Put the mirror first in each registry's endpoint list in registries.yaml.

    `configs:` and other keys are kept; YAML comments are not (the backup has them). k3s
    reads the file at start: restart it afterwards.
    """
    _apply(
        [_plan(registries_yaml, lambda old: merge_registries_yaml(old, mirror, registries))],
        dry_run=dry_run,
    )


def _replace_toml(old: str | None, new: str) -> str:
    if old is not None:
        check_hosts_toml(old)
    return new


def _plan(path: Path, merge: Callable[[str | None], str]) -> FileChange:
    """Read `path` and compute its new text, refusing (with the path named) to guess."""
    old = _read(path)
    try:
        new = merge(old)
    except UnsafeToEdit as exc:
        raise click.ClickException(f"refusing to change {path}: {exc}; left it untouched") from None
    return FileChange(path=str(path), old=old, new=new)


def _read(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"refusing to change {path}: it is not UTF-8 text (byte {exc.start}); left it untouched"
        ) from None


def _apply(changes: Sequence[FileChange], *, dry_run: bool) -> None:
    pending = [change for change in changes if change.changed]
    if dry_run:
        for change in pending:
            click.echo(change.diff(), nl=False)
        for change in changes:
            if not change.changed:
                click.echo(f"unchanged {change.path}", err=True)
        click.echo(
            f"dry run: {len(pending)} of {len(changes)} file(s) would change; nothing written",
            err=True,
        )
        return
    for change in changes:
        if not change.changed:
            click.echo(f"unchanged {change.path}")
            continue
        backup = _write(change)
        if backup is None:
            click.echo(f"created {change.path}")
        else:
            click.echo(f"updated {change.path} (previous version kept as {backup})")
    if not pending:
        click.echo("nothing to change: already configured for this mirror")


def _write(change: FileChange) -> Path | None:
    """Back up the old file, if any, then write the new text atomically; returns the backup."""
    path = Path(change.path)
    # Write through a symlink (a managed /etc/docker/daemon.json) instead of replacing it.
    target = path.resolve() if path.is_symlink() else path
    backup = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if change.old is not None:
            backup = backup_path(target, exists=os.path.lexists)
            shutil.copy2(target, backup)
        write_atomic(target, change.new)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc}") from None
    return backup


def backup_path(path: Path, *, exists: Callable[[Path], bool]) -> Path:
    """`<path>.bak`, or the first free `<path>.bak.N` when that is taken."""
    candidate = path.with_name(f"{path.name}.bak")
    number = 0
    while exists(candidate):
        number += 1
        candidate = path.with_name(f"{path.name}.bak.{number}")
    return candidate


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old file or the new, never half.

    The new file keeps the old one's mode and, where allowed, its owner.
    """
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp_file:
            tmp_file.write(text)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        tmp.chmod(NEW_FILE_MODE if old is None else stat.S_IMODE(old.st_mode))
        if old is not None:
            with contextlib.suppress(PermissionError):
                os.chown(tmp, old.st_uid, old.st_gid)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fsync_dir(str(directory))
