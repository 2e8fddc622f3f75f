"""`${VAR}` and `${VAR:-default}` in configuration values, from an explicit environ (pure).

The rules, one set for every YAML file the project reads (nic-cache.yml, prewarm.yml):

- `${VAR}` is VAR's value; VAR unset is an error the caller words (it knows the file and key);
- `${VAR:-default}` is the default when VAR is unset *or empty*, as in the shell and compose;
- `$VAR` without braces stays as written, and an expansion is never expanded again.

Stack files are the exception on purpose: faas-cli substitutes them with envsubst's rules
(faas_accel's prewarm `stack` module).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path = tuple[str | int, ...]  # keys and list indexes from the document's root to a value


def expand_vars(
    value: Any, environ: Mapping[str, str], unset: Callable[[Path, str], Exception], path: Path = ()
) -> Any:
    """`value` with every string in it (in mappings and lists, at any depth) expanded.

    An unset variable without a default raises `unset(path, name)`: `path` leads to the
    string that names it (list items by index).
    """
    if isinstance(value, dict):
        return {k: expand_vars(v, environ, unset, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_vars(v, environ, unset, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if default is not None and not environ.get(name):
                return default
            if name in environ:
                return environ[name]
            raise unset(path, name)

        return VAR_RE.sub(sub, value)
    return value
