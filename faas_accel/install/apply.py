"""Show a plan as an operator reviews it, and write it under a root directory.

New files are printed whole, changed ones as a unified diff, kept ones by name only; a
secret file's values are replaced by `<hidden>`. Writing keeps a backup of every file it
changes (`<file>.bak`, `.bak.N`) and replaces each one atomically with its planned mode.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..mirror_config.cli import backup_path, write_atomic
from .errors import InstallError
from .plan import Plan, Planned

_SECRET_RE = re.compile(r"^([A-Z_][A-Z0-9_]*=).+$", re.MULTILINE)


def under(root: Path, path: str) -> Path:
    """`path` (absolute on the target) inside `root`."""
    return root / path.lstrip("/")


def reader(root: Path) -> Callable[[str], str | None]:
    """A `read(path)` for plans: the file's text under `root`, None when missing."""

    def read(path: str) -> str | None:
        target = under(root, path)
        try:
            return target.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise InstallError(f"cannot read {target}: {exc}") from exc

    return read


def describe(plan: Plan, root: Path, *, dry_run: bool) -> Iterator[str]:
    """The plan as text lines."""
    where = "" if str(root) == "/" else f" under {root}"
    verb = "would write" if dry_run else "writes"
    changed = sum(f.changed for f in plan.files)
    tail = "nothing is written: --dry-run" if dry_run else "backups kept"
    total = len(plan.files)
    yield f"faas-accel install {plan.target}: plan{where} ({verb} {changed} of {total} files; {tail})"
    yield ""
    for f in plan.files:
        yield from _describe_file(f)


def next_steps(plan: Plan, *, dry_run: bool) -> Iterator[str]:
    """The notes and the commands to run once the files are written."""
    yield from (f"note: {note}" for note in plan.notes)
    yield "after writing, run:" if dry_run else "now run:"
    yield from (f"  {cmd}" for cmd in plan.then)


def _describe_file(f: Planned) -> Iterator[str]:
    mode = f"{f.mode:04o}"
    if not f.changed:
        state = "keep (exists; yours to edit)" if f.policy == "keep" and f.old != f.new else "unchanged"
        yield f"{state:<10} {f.path}"
        yield ""
        return
    head = "create" if f.old is None else "update"
    yield f"{head:<10} {f.path} (mode {mode}) — {f.why}"
    new = _hide(f.new) if f.secret else f.new
    if f.old is None:
        yield from (f"  | {line}" for line in new.splitlines())
    else:
        old = _hide(f.old) if f.secret else f.old
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), f.path, f.path, lineterm="")
        yield from (f"  {line}" for line in diff)
    yield ""


def _hide(text: str) -> str:
    return _SECRET_RE.sub(lambda m: m.group(1) + "<hidden>", text)


def write(plan: Plan, root: Path) -> list[str]:
    """Write every changed file under `root`; returns one line per file saying what happened."""
    done = []
    for f in plan.files:
        target = under(root, f.path)
        if not f.changed:
            done.append(f"unchanged {target}")
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            backup = None
            if f.old is not None:
                backup = backup_path(target, exists=os.path.lexists)
                shutil.copy2(target, backup)
            if f.old is None and f.mode != 0o644:
                # created with its final mode, so a secret is never readable by others
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
                os.close(fd)
            write_atomic(target, f.new)
            if f.old is None:
                target.chmod(f.mode)
        except OSError as exc:
            raise InstallError(f"cannot write {target}: {exc}") from exc
        done.append(f"updated {target} (previous kept as {backup.name})" if backup else f"created {target}")
    return done
