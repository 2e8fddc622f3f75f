"""Reading a YAML document for the prewarm files: the node tree (for line numbers) and,
when asked, its value; unparsable YAML is a PrewarmConfigError saying `file:line`."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import PrewarmConfigError


def load_document(text: str, source: str, *, construct: bool) -> tuple[yaml.Node | None, Any]:
    """(root node, value) of the single document in `text`; the value is None unless
    `construct` (a stack file is only walked as nodes: tags it uses need no constructor)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if construct and node is not None else None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise PrewarmConfigError(f"{source}:{line}: invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise PrewarmConfigError(f"{source}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return node, raw
