"""`faas-accel lab demo`: every function of stack.yml on every VM, straight from the internet
and then through the hook and the NIC cache; prints deploy and first-invoke latency, WAN
bytes and the ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faas_accel.gateway import Gateway
from faas_accel.provider.phases import PHASES

from . import lab, net, seed
from .spec import REGISTRY_HOST, VM, LabSpec
from .vmctl import forget_images


@dataclass(frozen=True)
class Sample:
    """One deploy of one function on one VM."""

    mode: str  # direct | cached
    function: str
    vm: str
    deploy_s: float
    first_invoke_s: float
    wan_bytes: int
    phases: dict[str, float] = field(default_factory=dict)  # the provider's, seconds


def run_demo(
    spec: LabSpec,
    stack_file: Path,
    *,
    build_dir: Path,
    keep: bool = False,
    log: Callable[[str], None] = print,
) -> list[Sample]:
    """Build, bring the lab up, measure both modes, print the table, tear down."""
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
    try:
        total = 2 * len(functions) * spec.vms
        for mode in ("direct", "cached"):
            for name, image in functions.items():
                for vm in spec.all_vms:
                    samples.append(_one(spec, vm, mode, name, image))
                    s = samples[-1]
                    step(
                        f"[{len(samples)}/{total}] {mode:6} {name:10} {vm.name}: deploy {s.deploy_s:6.2f} s, "
                        f"first invoke {s.first_invoke_s:6.2f} s, WAN {s.wan_bytes / 1e6:7.2f} MB"
                    )
            if mode == "direct":
                step("removing the images from every VM so the cached pass pulls again")
                for vm in spec.all_vms:
                    forget_images(spec, vm)
    finally:
        if not keep:
            step("tearing the lab down")
            lab.down(spec, log=lambda _: None)
    log("")
    log(report(samples, spec))
    return samples


def _one(spec: LabSpec, vm: VM, mode: str, name: str, image: str) -> Sample:
    url = vm.provider_url if mode == "direct" else vm.hook_url
    gw = Gateway(url, spec.user, spec.password)
    try:
        before = net.wan_bytes()[0]
        timing = gw.cold_start(name, image)
        wan = net.wan_bytes()[0] - before
        gw.delete(name)
        return Sample(mode, name, vm.name, timing.deploy_s, timing.first_invoke_s, wan, timing.phases)
    finally:
        gw.close()


def phase_table(samples: list[Sample]) -> list[str]:
    """Where the deploys' time went, per function and mode: the provider's phases (mean
    seconds over VMs), the largest marked with *."""
    timed = [s for s in samples if s.phases]
    if not timed:
        return []
    lines = [
        "deploy phases (provider-side mean seconds; * = the largest)",
        f"{'function':<12} {'mode':<8}" + "".join(f" {p:>9}" for p in PHASES),
    ]
    for fn in dict.fromkeys(s.function for s in timed):
        for mode in dict.fromkeys(s.mode for s in timed):
            group = [s.phases for s in timed if s.function == fn and s.mode == mode]
            if not group:
                continue
            means = [statistics.mean(g.get(p, 0.0) for g in group) for p in PHASES]
            top = means.index(max(means))
            cells = "".join(f" {v:>8.2f}{'*' if i == top else ' '}" for i, v in enumerate(means))
            lines.append(f"{fn:<12} {mode:<8}{cells}")
    return lines


def report(samples: list[Sample], spec: LabSpec) -> str:
    """The demo's table: per function, direct vs cached, with ratios."""
    lines = [
        f"WAN: {spec.wan_rate}, +{spec.wan_rtt} per round trip, +{spec.wan_setup} per connection; "
        f"{spec.vms} VM(s); runtime {spec.runtime}",
        "",
        f"{'function':<12} {'deploy direct':>14} {'deploy cached':>14} {'first-invoke direct':>20} "
        f"{'first-invoke cached':>20} {'speed-up':>9} {'WAN MB direct':>14} {'WAN MB cached':>14} "
        f"{'saved':>7}",
    ]
    for fn in dict.fromkeys(s.function for s in samples):
        d = [s for s in samples if s.function == fn and s.mode == "direct"]
        c = [s for s in samples if s.function == fn and s.mode == "cached"]
        if not d or not c:
            continue
        dd, cd = statistics.mean(s.deploy_s for s in d), statistics.mean(s.deploy_s for s in c)
        di, ci = statistics.mean(s.first_invoke_s for s in d), statistics.mean(s.first_invoke_s for s in c)
        dw, cw = sum(s.wan_bytes for s in d), sum(s.wan_bytes for s in c)
        saved = 1 - cw / dw if dw else 0.0
        lines.append(
            f"{fn:<12} {dd:>12.2f} s {cd:>12.2f} s {di:>18.2f} s {ci:>18.2f} s {di / ci:>8.1f}x "
            f"{dw / 1e6:>14.1f} {cw / 1e6:>14.1f} {saved:>6.1%}"
        )
    lines.append("")
    lines.append("deploy/first-invoke are means over VMs; 'cached' includes the first VM's cold NIC miss.")
    lines += ["", *phase_table(samples)]
    lines.append(f"images come from {REGISTRY_HOST} (the lab's internet registry)")
    return "\n".join(lines)
