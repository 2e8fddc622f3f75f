"""`faas-accel lab demo`: every function of stack.yml on every VM, straight from the internet
and then through the hook and the NIC cache; prints first-invoke latency per pass, the
deploy phases, WAN bytes and the targets; `--report FILE.json` writes them (demo_report.py).

Passes, one function after the other on VM 1..N each:

- direct: the VM's provider pulls the upstream's gzip layers through the NIC's router path
  (no cache, no transcode, no fan-out);
- cached: through the hook. VM 1 is the NIC's miss. With fan-out on, VMs 2..N are deployed
  once their fan-out agents hold the image (the time that took is reported as the settle
  time): the steady state of a function scaling out after its first deploy;
- floor: the same deploys again, the image now in every VM: a container start only.

VM images are forgotten after the direct pass, so the cached pass pulls again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faas_accel.cacheapi import CacheAPI, CacheAPIError
from faas_accel.gateway import Gateway

from . import lab, net, seed
from .demo_report import Sample, phase_lines, report_doc, table
from .spec import REGISTRY_HOST, VM, LabSpec
from .vm import mirror_host
from .vmctl import forget_images, image_names

FANOUT_DEADLINE = 180.0  # seconds to wait for VMs 2..N to hold a just-deployed image


def run_demo(
    spec: LabSpec,
    stack_file: Path,
    *,
    build_dir: Path,
    keep: bool = False,
    report_file: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build, bring the lab up, measure the passes, print the tables, tear down; the report."""
    t0 = time.monotonic()

    def step(msg: str) -> None:
        log(f"[{time.monotonic() - t0:6.1f}s] {msg}")

    functions = seed.stack_functions(stack_file)
    step(f"building images for {len(functions)} function(s) (cached after the first run)")
    built = seed.build_images(build_dir / "images", build_dir / "cache")
    step(f"built {len(built)} image(s)")
    seed.seed(Path(spec.workdir) / "seed", build_dir / "images", built, log=step)
    step(f"bringing the lab up: {spec.vms} VM(s), WAN {spec.wan_rate} +{spec.wan_rtt} per round trip")
    lab.up(spec, log=step)
    samples: list[Sample] = []
    wan: dict[str, int] = {}
    settle: dict[str, float | None] = {}
    fanout = spec.accel and spec.fanout
    try:
        total = 3 * len(functions) * spec.vms

        def measure(mode: str, vm: VM, name: str, image: str) -> None:
            samples.append(_one(spec, vm, mode, name, image, first=vm.k == 1))
            s = samples[-1]
            step(
                f"[{len(samples)}/{total}] {mode:6} {name:10} {vm.name}: deploy {s.deploy_s:6.2f} s, "
                f"first invoke {s.first_invoke_s:6.2f} s, WAN {s.wan_bytes / 1e6:7.2f} MB"
            )

        for mode in ("direct", "cached", "floor"):
            before = net.wan_bytes()[0]
            for name, image in functions.items():
                first, *rest = spec.all_vms
                measure(mode, first, name, image)
                if mode == "cached" and fanout and rest:
                    settle[name] = _wait_fanout(spec, rest, image)
                    step(f"fan-out: VMs 2..{spec.vms} hold {name} after {settle[name] or -1:.2f} s")
                for vm in rest:
                    measure(mode, vm, name, image)
            wan[f"{mode}_bytes"] = net.wan_bytes()[0] - before
            if mode == "direct":
                step("removing the images from every VM so the cached pass pulls again")
                for vm in spec.all_vms:
                    forget_images(spec, vm)
        cost = _cost(spec, settle)
    finally:
        if not keep:
            step("tearing the lab down")
            lab.down(spec, log=lambda _: None)
    lab_doc = {
        "vms": spec.vms, "runtime": spec.runtime, "wan_rate": spec.wan_rate, "wan_rtt": spec.wan_rtt,
        "wan_setup": spec.wan_setup, "nic_cpus": spec.nic_cpus, "fanout": fanout, "transcode": spec.transcode,
    }  # fmt: skip
    doc = report_doc(samples, wan=wan, cost=cost, lab=lab_doc)
    log("")
    log(render(doc))
    if report_file is not None:
        report_file.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"\nreport written to {report_file}")
    return doc


def _one(spec: LabSpec, vm: VM, mode: str, name: str, image: str, *, first: bool) -> Sample:
    url = vm.provider_url if mode == "direct" else vm.hook_url
    gw = Gateway(url, spec.user, spec.password)
    try:
        before = net.wan_bytes()[0]
        timing = gw.cold_start(name, image)
        wan = net.wan_bytes()[0] - before
        gw.delete(name)
        return Sample(mode, name, vm.name, timing.deploy_s, timing.first_invoke_s, wan, timing.phases, first)
    finally:
        gw.close()


def _wait_fanout(spec: LabSpec, vms: list[VM], image: str) -> float | None:
    """Seconds until every VM of `vms` holds `image` under the hook's mirror tag (None: not
    within FANOUT_DEADLINE; the deploys then pull what is missing themselves)."""
    name = f"{mirror_host(spec)}/{image}"
    t0 = time.monotonic()
    waiting = list(vms)
    while waiting:
        waiting = [vm for vm in waiting if name not in image_names(spec, vm)]
        if time.monotonic() - t0 > FANOUT_DEADLINE:
            return None
        if waiting:
            time.sleep(0.1)
    return round(time.monotonic() - t0, 3)


def _cost(spec: LabSpec, settle: dict[str, float | None]) -> dict[str, Any]:
    """The NIC's transcode CPU and derived bytes (its /api/v1/stats), what fan-out holds per VM."""
    out: dict[str, Any] = {"fanout_settle_s": settle}
    try:
        with CacheAPI(spec.cache_url, spec.admin_token) as api:  # the host reaches the NIC through fa-host
            metrics = api.stats().get("metrics", {})
        out["nic_transcode_cpu_s"] = round(float(metrics.get("nic_cache_transcode_cpu_seconds_total", 0)), 3)
        out["nic_transcoded_layers"] = int(metrics.get("nic_cache_transcoded_layers_total", 0))
        out["nic_derived_bytes"] = int(metrics.get("nic_cache_derived_bytes", 0))
    except (CacheAPIError, ValueError, OSError) as exc:
        out["nic_error"] = str(exc)
    held: dict[str, int] = {}
    for vm in spec.all_vms:
        state = Path(spec.workdir) / "run" / vm.name / "fanout.json"
        try:
            held[vm.name] = sum(int(h["size"]) for h in json.loads(state.read_text()).get("held", []))
        except (OSError, ValueError, KeyError, TypeError):
            held[vm.name] = 0
    out["vm_prepull_bytes"] = held
    return out


def render(doc: dict[str, Any]) -> str:
    """The demo's stdout: the first-invoke table, the phases, WAN and cost, the targets."""
    lab_doc = doc["lab"]
    lines = [
        f"WAN: {lab_doc['wan_rate']}, +{lab_doc['wan_rtt']} per round trip, +{lab_doc['wan_setup']} per "
        f"connection; {lab_doc['vms']} VM(s); runtime {lab_doc['runtime']}; fan-out "
        f"{'on' if lab_doc['fanout'] else 'off'}; transcode {lab_doc['transcode']}",
        "",
        "mean first-invoke seconds (deploy sent -> first 200)",
        *table(doc),
        "",
        *phase_lines(doc),
        "",
    ]
    wan, cost = doc["wan"], doc["cost"]
    lines.append(
        "WAN MB: direct {:.1f}, cached {:.1f} ({} copies of the images), floor {:.1f}".format(
            wan.get("direct_bytes", 0) / 1e6, wan.get("cached_bytes", 0) / 1e6,
            wan.get("cached_over_one_copy"), wan.get("floor_bytes", 0) / 1e6,
        )
    )  # fmt: skip
    lines.append(
        f"cost: NIC transcode CPU {cost.get('nic_transcode_cpu_s', '-')} s for "
        f"{cost.get('nic_transcoded_layers', '-')} layer(s), derived blobs "
        f"{cost.get('nic_derived_bytes', 0) / 1e6:.1f} MB; fan-out holds "
        + ", ".join(f"{vm} {b / 1e6:.1f} MB" for vm, b in cost.get("vm_prepull_bytes", {}).items())
    )
    lines += ["", "targets:"]
    for t in doc["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        lines.append(f"  [{verdict}] {t['what']}: {t['measured']}")
    lines.append(f"images come from {REGISTRY_HOST} (the lab's internet registry)")
    return "\n".join(lines)
