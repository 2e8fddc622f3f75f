"""What `faas-cli deploy -f STACK [--read-template=false]` sends, for a machine without faas-cli.

Follows faas-cli 0.16's `commands/deploy.go` and `proxy/deploy.go`: every function of the
stack file (`${VAR}` expanded, as `--envsubst` does by default) becomes a FunctionDeployment;
unless `--read-template=false`, a function with a `lang` other than `dockerfile` and no
`fprocess` needs `template/<lang>/template.yml` next to the stack file or in the working
directory, else the command fails before sending anything with the error users see offline.
Each deployment is a PUT, then a POST if the PUT says 404, with the login's basic auth.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml

from faas_accel.gateway import deployment

TEMPLATE_ERROR = 'template directory may be missing or invalid, please run "faas-cli template pull"'
USER_AGENT = "faas-cli/0.16.37"


class FaasCliError(RuntimeError):
    """faas-cli exits 1 with this message."""


def stack_deployments(
    stack: Path,
    *,
    read_template: bool = True,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """(gateway URL, FunctionDeployment bodies) of `faas-cli deploy -f stack`."""
    env = dict(environ if environ is not None else os.environ)
    text = string.Template(stack.read_text()).safe_substitute(env)
    doc = yaml.safe_load(text)
    gateway = str((doc.get("provider") or {}).get("gateway") or "http://127.0.0.1:8080")
    bodies = []
    for name, fn in (doc.get("functions") or {}).items():
        lang = str(fn.get("lang") or "")
        fprocess = str(fn.get("fprocess") or "")
        if read_template and lang and lang.lower() != "dockerfile" and not fprocess:
            candidates = [stack.parent / "template" / lang / "template.yml",
                          (cwd or Path.cwd()) / "template" / lang / "template.yml"]  # fmt: skip
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                missing = f"stat {candidates[-1]}: no such file or directory"
                raise FaasCliError(f"{TEMPLATE_ERROR}\nError: {missing}")
            fprocess = str((yaml.safe_load(found.read_text()) or {}).get("fprocess") or "")
        extra: dict[str, Any] = {
            "envProcess": fprocess,
            "envVars": {str(k): str(v) for k, v in (fn.get("environment") or {}).items()},
            "labels": dict(fn.get("labels") or {}),
            "annotations": dict(fn.get("annotations") or {}),
            "secrets": list(fn.get("secrets") or []),
            "namespace": str(fn.get("namespace") or ""),
        }
        bodies.append(deployment(name, str(fn["image"]), **extra))
    return gateway, bodies


def deploy_stack(
    stack: Path, *, auth: tuple[str, str], gateway: str | None = None, read_template: bool = True,
    cwd: Path | None = None,
) -> dict[str, list[requests.Response]]:  # fmt: skip
    """Replay the command against `gateway` (default: the stack's); every function's answers."""
    url, bodies = stack_deployments(stack, read_template=read_template, cwd=cwd)
    url = (gateway or url).rstrip("/")
    answers: dict[str, list[requests.Response]] = {}
    with requests.Session() as http:
        http.trust_env = False
        http.auth = auth
        http.headers["User-Agent"] = USER_AGENT
        for body in bodies:
            got = [http.put(f"{url}/system/functions", json=body, timeout=120)]
            if got[0].status_code == 404:
                got.append(http.post(f"{url}/system/functions", json=body, timeout=120))
            answers[body["service"]] = got
    return answers
