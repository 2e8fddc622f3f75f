"""Locust: cold-start latency of OpenFaaS functions on the lab, deployed as faas-cli does.

Each user takes a VM (round robin), deploys every function of stack.yml through that VM's
gateway (PUT /system/functions, POST on 404, basic auth), polls /function/<name> until the
first 200, reports `deploy` (sent -> 2xx) and `first-invoke` (deploy sent -> first 200) as
locust request events named by image, deletes the function, and stops. When every user is
done the run ends, so a headless run is bounded by the work, not only by --run-time.

Modes (`--mode`): direct (the VM pulls from the internet), cached (through the hook and the
NIC cache, emptied first), prewarmed (the NIC cache prefetched from stack.yml first),
prepulled (prewarmed, and every VM's runtime holding the images, pulled from the NIC by
`faas-accel prepull`), peer (CNCF distribution's proxy mode in the NIC's place).

    locust -f load/coldstart.py --mode cached -u 4 -r 4            # headless, 4 VMs at once
    locust -f load/coldstart.py --mode direct --csv out/direct --html out/direct.html
    locust -f load/coldstart.py --web                              # the web UI instead
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import requests
from locust import User, events, task
from locust.exception import StopUser
from locust.stats import CSV_STATS_INTERVAL_SEC

from faas_accel.cacheapi import CacheAPI, CacheAPIError, NotFound
from faas_accel.gateway import Gateway, GatewayError
from faas_accel.lab.lab import reset_peer, status
from faas_accel.lab.seed import stack_functions
from faas_accel.lab.spec import REGISTRY_HOST, LabSpec
from faas_accel.lab.vm import mirror_host, runtime_args
from faas_accel.lab.vmctl import forget_images
from faas_accel.provider.phases import HEADER as PHASES_HEADER
from faas_accel.provider.phases import parse_server_timing

MODES = ("direct", "cached", "prewarmed", "prepulled", "peer")
REPO = Path(__file__).resolve().parents[1]
_counter = itertools.count()
_done = itertools.count(1)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--mode", choices=MODES, default="cached", help="where VMs get images from")
    parser.add_argument("--stack", default=str(REPO / "stack.yml"), help="OpenFaaS stack file")
    parser.add_argument("--lab-workdir", default="/var/tmp/faas-accel-lab", help="the lab's workdir")
    parser.add_argument("--only", default="", help="comma-separated function names (default: all)")
    parser.add_argument("--keep-state", action="store_true", help="do not reset VMs and the NIC cache first")
    parser.add_argument(
        "--keep-nic", action="store_true", help="reset the VMs only: what the NIC (or the peer) holds stays"
    )
    parser.add_argument("--web", action="store_true", help="run the web UI instead of headless")
    parser.add_argument("--samples", default="", help="also append every sample to this JSON-lines file")
    # headless and bounded by default; --web (or locust's own --autostart) brings the UI back
    parser.set_defaults(headless=True, run_time="10m", users=1, spawn_rate=1)


@events.init.add_listener
def _init(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is not None and opts.web:
        opts.headless = False


def _lab(opts: Any) -> tuple[LabSpec, dict[str, Any]]:
    doc = status(LabSpec(workdir=opts.lab_workdir))
    if not doc["up"]:
        raise SystemExit("the lab is not up: run `faas-accel lab up --vms N` first")
    spec = LabSpec(vms=len(doc["vms"]), workdir=opts.lab_workdir, runtime=doc["runtime"])
    return spec, doc


def _functions(opts: Any) -> dict[str, str]:
    fns = stack_functions(Path(opts.stack))
    wanted = [f for f in opts.only.split(",") if f]
    return {k: v for k, v in fns.items() if not wanted or k in wanted}


class SetupFailed(Exception):
    """The state a mode needs (empty or prefetched NIC, prepulled VMs) could not be made."""


_setup_error: list[str] = []  # set when the preparation failed: users stop at once


@events.test_start.add_listener
def _prepare_or_stop(environment: Any, **_: Any) -> None:
    """Prepare the lab for the mode; on failure, end the run with exit status 2 and the reason
    (locust would only log an exception from a test_start listener and measure anyway)."""
    try:
        _prepare(environment.parsed_options)
    except (SetupFailed, requests.RequestException, OSError, subprocess.SubprocessError) as exc:
        _setup_error.append(str(exc) or type(exc).__name__)
        logging.getLogger("coldstart").error(
            "preparing the %s run failed: %s", environment.parsed_options.mode, exc
        )
        environment.process_exit_code = 2
        gevent.spawn_later(0.1, environment.runner.quit)


def _prepare(opts: Any) -> None:
    spec, doc = _lab(opts)
    if opts.keep_state:
        return
    for vm in spec.all_vms:
        forget_images(spec, vm)
    if opts.keep_nic:
        return
    if opts.mode == "peer":
        reset_peer(spec)
    images = list(_functions(opts).values())
    # every mode through the NIC starts from an empty NIC: the prewarmed modes fill it (one
    # copy over the WAN, before the run), so their WAN bytes are measured, not inherited
    with CacheAPI(doc["nic"]["cache_url"], doc["nic"]["admin_token"], timeout=30) as api:
        try:
            for image in images if opts.mode in ("cached", "prewarmed", "prepulled") else []:
                with contextlib.suppress(NotFound):
                    api.delete_image(image)
            for image in images if opts.mode in ("prewarmed", "prepulled") else []:
                state = api.prefetch(image, wait=600).state
                if state != "done":
                    raise SetupFailed(f"prefetch of {image}: state {state}")
        except CacheAPIError as exc:
            raise SetupFailed(str(exc)) from exc
    if opts.mode == "prepulled":
        prepull_vms(spec, doc, list(_functions(opts).values()))


def prepull_vms(spec: LabSpec, doc: dict[str, Any], images: list[str]) -> None:
    """`faas-accel prepull once` in every VM, at once: each pulls `images` from the NIC.
    SetupFailed unless every VM holds every image afterwards; no prepull outlives the call."""
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    env = {**os.environ, "NIC_CACHE_ADMIN_TOKEN": doc["nic"]["admin_token"]}  # not on a command line
    try:
        for vm in spec.all_vms:
            argv = [
                "nsenter",
                f"--net=/run/netns/{vm.netns}",
                sys.executable,
                "-m",
                "faas_accel",
                "prepull",
                "once",
                "--cache",
                doc["nic"]["cache_url"],
                "--limit",
                str(len(images)),
                "--mirror-host",
                mirror_host(spec),
                *runtime_args(spec, vm),
                *[a for i in images for a in ("--image", i)],
            ]
            procs.append(
                (
                    vm.name,
                    subprocess.Popen(
                        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                    ),
                )
            )
        for name, proc in procs:
            out, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise SetupFailed(f"prepull in {name} failed: {(err or out)[-2000:]}")
            held = set(json.loads(out)["pulled"]) | set(json.loads(out)["present"])
            if held != set(images):
                raise SetupFailed(f"prepull in {name} holds {sorted(held)}, not {sorted(images)}")
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class ColdStart(User):
    """One VM's operator deploying every function once, as faas-cli would."""

    gateway: Gateway | None = None

    def on_start(self) -> None:
        if _setup_error:
            raise StopUser()
        opts = self.environment.parsed_options
        _, doc = _lab(opts)
        self.index = next(_counter)
        vm = doc["vms"][self.index % len(doc["vms"])]
        self.mode = opts.mode
        url = vm["hook_url"] if self.mode in ("cached", "prewarmed", "prepulled") else vm["provider_url"]
        if url is None:
            _setup_error.append(f"{vm['name']} has no {'hook' if self.mode != 'direct' else 'provider'} URL")
            self._finished()
            raise StopUser()
        self.gateway = Gateway(url, vm["auth"]["user"], vm["auth"]["password"])
        self.vm = vm["name"]
        self.peer = doc["nic"].get("peer_url", "").removeprefix("http://")
        self.functions = _functions(opts)

    def on_stop(self) -> None:
        if self.gateway is not None:
            self.gateway.close()

    def _finished(self) -> None:
        """Count this user done; the last one ends the run (locust would otherwise wait for
        --run-time) after locust's CSV writer, which snapshots the stats every
        CSV_STATS_INTERVAL_SEC and writes nothing more at exit, has seen the last sample."""
        if next(_done) >= self.environment.runner.target_user_count:
            gevent.spawn_later(CSV_STATS_INTERVAL_SEC + 1, self.environment.runner.quit)

    def _image(self, image: str) -> str:
        if self.mode == "peer":
            return f"{self.peer}/{image.removeprefix(REGISTRY_HOST + '/')}"
        return image

    def _fire(
        self,
        kind: str,
        name: str,
        seconds: float,
        length: int,
        exc: Exception | None,
        phases: dict[str, float] | None = None,
    ) -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=seconds * 1000,
            response_length=length,
            exception=exc,
            context={"mode": self.mode, "vm": self.vm},
        )
        path = self.environment.parsed_options.samples
        if path:
            sample = {
                "mode": self.mode,
                "vm": self.vm,
                "users": self.environment.runner.target_user_count,
                "kind": kind,
                "image": name,
                "seconds": round(seconds, 4),
                "error": (str(exc) or type(exc).__name__) if exc else "",
            }
            if phases:  # the provider's deploy phases (Server-Timing), seconds
                sample["phases"] = {k: round(v, 4) for k, v in phases.items()}
            with open(path, "a") as fh:  # one write per line: users append concurrently
                fh.write(json.dumps(sample) + "\n")

    @task
    def cold_start_every_function(self) -> None:
        """Once: each function deployed, waited for and deleted; then this user stops (an
        unexpected error stops it too, rather than locust running the task again)."""
        assert self.gateway is not None
        try:
            for fn, image in self.functions.items():
                self._cold_start(self.gateway, f"{fn}-u{self.index}", image)
        finally:
            self._finished()
        raise StopUser()

    def _cold_start(self, gateway: Gateway, name: str, image: str) -> None:
        ref = self._image(image)
        t0 = time.perf_counter()
        try:
            deployed = gateway.deploy(name, ref)
        except (GatewayError, requests.RequestException) as exc:
            self._fire("deploy", image, time.perf_counter() - t0, 0, exc)
            return
        phases = parse_server_timing(deployed.headers.get(PHASES_HEADER))
        self._fire("deploy", image, time.perf_counter() - t0, 0, None, phases)
        try:
            resp = gateway.wait_invocable(name, deadline_s=120)
            self._fire("first-invoke", image, time.perf_counter() - t0, len(resp.content), None)
        except (GatewayError, requests.RequestException) as exc:
            self._fire("first-invoke", image, time.perf_counter() - t0, 0, exc)
        finally:
            with contextlib.suppress(GatewayError, requests.RequestException):
                gateway.delete(name)
