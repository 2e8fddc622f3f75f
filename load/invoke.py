"""Locust: steady invocation load on functions already deployed on the lab (the warm path).

Shows what the accelerator costs once a function runs: `--via hook` sends invocations to the
VM's gateway as faas-accel installs it (the hook in front of the provider), `--via provider`
straight to the provider, the path a VM without faas-accel has. Each user takes a VM (round
robin) and invokes one function as fast as it answers; locust's stats, `--csv` and `--html`
carry the latency per function. The functions must be deployed first (`--deploy` does it
through the chosen path and removes them at the end).

    locust -f load/invoke.py --via hook -u 4 -t 30s --deploy --csv out/hook
    locust -f load/invoke.py --via provider -u 4 -t 30s --deploy --csv out/provider
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import requests
from locust import FastHttpUser, events, task
from locust.exception import StopTest

from faas_accel.gateway import Gateway, GatewayError
from faas_accel.lab.lab import status
from faas_accel.lab.seed import stack_functions
from faas_accel.lab.spec import LabSpec

REPO = Path(__file__).resolve().parents[1]
_counter = itertools.count()
BODIES = {"transform": b"# hello\n\nfaas-accel", "heavy": b"x,y\n1,2\n3,4\n"}  # default: a name


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--via", choices=("hook", "provider"), default="hook", help="which gateway to call")
    parser.add_argument("--function", default="hello", help="function (from the stack file) to invoke")
    parser.add_argument("--stack", default=str(REPO / "stack.yml"), help="OpenFaaS stack file")
    parser.add_argument("--lab-workdir", default="/var/tmp/faas-accel-lab", help="the lab's workdir")
    parser.add_argument("--deploy", action="store_true", help="deploy the function first, delete it after")
    parser.add_argument("--web", action="store_true", help="run the web UI instead of headless")
    parser.set_defaults(headless=True, run_time="30s", users=1, spawn_rate=10)


def _vms(opts: Any) -> list[dict[str, Any]]:
    doc = status(LabSpec(workdir=opts.lab_workdir))
    if not doc["up"]:
        raise SystemExit("the lab is not up: run `faas-accel lab up --vms N` first")
    return list(doc["vms"])


def _gateways(opts: Any, vms: list[dict[str, Any]]) -> list[Gateway]:
    key = "hook_url" if opts.via == "hook" else "provider_url"
    return [Gateway(vm[key], vm["auth"]["user"], vm["auth"]["password"]) for vm in vms if vm[key]]


@events.init.add_listener
def _init(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    if opts.web:
        opts.headless = False
    if opts.deploy:  # before the run starts, so --run-time is all invocations
        _deploy(opts)


def _deploy(opts: Any) -> None:
    functions = stack_functions(Path(opts.stack))
    if opts.function not in functions:
        raise SystemExit(f"--function {opts.function}: not in {opts.stack} (has {', '.join(functions)})")
    image = functions[opts.function]
    vms = _vms(opts)[: max(opts.num_users or 1, 1)]
    for gw in _gateways(opts, vms):
        gw.deploy(opts.function, image)
        gw.wait_invocable(opts.function, deadline_s=300)
        gw.close()


@events.test_stop.add_listener
def _undeploy(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    if not opts.deploy:
        return
    vms = _vms(opts)[: max(opts.num_users or 1, 1)]
    for gw in _gateways(opts, vms):
        with contextlib.suppress(GatewayError, requests.RequestException):
            gw.delete(opts.function)
        gw.close()


class Invoke(FastHttpUser):
    """One client invoking one function on one VM, back to back."""

    host = "http://localhost"  # unused: each user calls its VM's gateway by absolute URL

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        vms = _vms(opts)
        vm = vms[next(_counter) % len(vms)]
        url = vm["hook_url"] if opts.via == "hook" else vm["provider_url"]
        if url is None:
            raise StopTest(f"{vm['name']} has no hook (a --no-accel lab): use --via provider")
        self.url = f"{url}/function/{opts.function}"
        self.body = BODIES.get(opts.function, b"hello")
        self.label = f"{opts.via} {opts.function}"

    @task
    def invoke(self) -> None:
        self.client.post(self.url, data=self.body, name=self.label)
