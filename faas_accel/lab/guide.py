"""What `lab up` tells a user to do next: the faas-cli commands for a VM's gateway.

Pure: built from the status document (`lab.status`) and the stack file's path.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any


def next_steps(doc: dict[str, Any], stack_file: Path, functions: list[str]) -> list[str]:
    """Lines to print once the lab is up: where things are and the commands to deploy."""
    vms = doc["vms"]
    first = vms[0]
    gw, user, password = first["gateway_url"], first["auth"]["user"], first["auth"]["password"]
    nic = doc["nic"]
    through = "the hook in front of its faas-provider" if doc["accel"] else "its faas-provider"
    stack = shlex.quote(str(stack_file))
    lines = [
        f"lab is up: {len(vms)} VM(s); NIC cache {nic['cache_url']} "
        f"(status page {nic['cache_url']}/status, user any, password {nic['admin_token']})",
        "",
        f"Deploy {stack_file.name} through {first['name']}'s gateway ({through}):",
        f"  echo -n {shlex.quote(password)} | faas-cli login -g {gw} -u {user} --password-stdin",
        f"  faas-cli deploy -f {stack} -g {gw} --read-template=false",
    ]
    if functions:
        lines.append(f"  echo lab | faas-cli invoke {functions[0]} -g {gw}")
    lines += [
        "  (--read-template=false: the images are prebuilt and the lab is offline, so faas-cli",
        "   has no templates to read)",
    ]
    if len(vms) > 1:
        others = ", ".join(f"{vm['name']} {vm['gateway_url']}" for vm in vms[1:])
        lines.append(f"Other VMs (same credentials): {others}")
    lines += ["", "faas-accel lab status shows this again; faas-accel lab down removes the lab."]
    return lines
