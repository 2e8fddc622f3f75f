"""Pure reading of OpenFaaS stack files: the image of every function.

faas-cli substitutes environment variables in the whole file before parsing it (drone's
envsubst): `$VAR`, `${VAR}`, `${VAR:-default}` (default when unset or empty),
`${VAR-default}` (default when unset), and the `=` forms, which read the same here. An unset
variable becomes the empty string, as it does for faas-cli.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml

from nic_cache.errors import NicCacheError
from nic_cache.reference import parse_image

from .errors import PrewarmConfigError
from .yamldoc import load_document

_SUBST_RE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-=])(?P<default>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """Expand variables the way faas-cli does (see the module docstring)."""

    def sub(m: re.Match[str]) -> str:
        if m.group("bare"):
            return environ.get(m.group("bare"), "")
        name, op, default = m.group("name"), m.group("op"), m.group("default")
        value = environ.get(name)
        if op is None:
            return value or ""
        if value is None or (op.startswith(":") and value == ""):
            return default
        return value

    return _SUBST_RE.sub(sub, text)


def stack_images(text: str, environ: Mapping[str, str], *, source: str = "<stack>") -> list[str]:
    """The normalized image of every function, in file order, each once.

    Raises PrewarmConfigError (`file:line: reason`) for unparsable YAML, a missing
    `functions` mapping, a function without an image, or an invalid image reference.
    """
    node, _ = load_document(substitute(text, environ), source, construct=False)
    functions = _child(node, "functions")
    if not isinstance(functions, yaml.MappingNode):
        line = functions.start_mark.line + 1 if functions is not None else 1
        raise PrewarmConfigError(f"{source}:{line}: functions: need a mapping of function names")
    images: list[str] = []
    for key, value in functions.value:
        at = f"{source}:{key.start_mark.line + 1}: functions.{key.value}"
        image = _child(value, "image")
        if not isinstance(image, yaml.ScalarNode) or not image.value:
            raise PrewarmConfigError(f"{at}: no image")
        try:
            ref = str(parse_image(str(image.value)))
        except NicCacheError as exc:
            line = image.start_mark.line + 1
            raise PrewarmConfigError(f"{source}:{line}: functions.{key.value}.image: {exc}") from exc
        if ref not in images:
            images.append(ref)
    return images


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v  # type: ignore[no-any-return]
    return None
