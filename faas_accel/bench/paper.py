"""`faas-accel bench paper`: the AlphaBoot evaluation on the lab, written up as a report.

Sections, in order (each one's rows go to a CSV under the output directory):
- retrieval (Table 1, Figures 4 and 5): `ctr images pull` of each reference image in vm1,
  from the internet (T_fetch), from the NIC cache holding it (T_load), from a plain registry
  on the NIC (the floor), and the paper's way: a `docker save` tarball over the network;
- deploy: one VM deploying each function with `load/coldstart.py` (locust), direct, through
  an empty NIC (cached), a warm NIC (cached-hit) and a prewarmed NIC;
- scale (Figures 6 and 7): N VMs deploying at once, per mode, with the WAN bytes of each run;
- invoke: the warm path with `load/invoke.py`, through the hook and straight to the provider;
- memory: the cache's peak RSS, sampled throughout.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from faas_accel.cacheapi import CacheAPI, CacheAPIError
from faas_accel.gateway import Gateway, GatewayError
from faas_accel.lab import lab, net, seed
from faas_accel.lab.spec import NIC_IP, REGISTRY_HOST, LabSpec

from . import tables
from .locustrun import locust_stats, read_jsonl, run_locust
from .measure import BenchError, DockerLoader, TarballServer, VmCtr, image_blobs
from .results import finish
from .rss import RssSampler
from .settings import REPO, PaperSettings

LOAD = REPO / "load"


@dataclass
class Results:
    pulls: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    invoke: list[dict[str, Any]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    blobs: dict[str, dict[str, int]] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)


class Paper:
    """One run of the evaluation against a lab it brings up (and down)."""

    def __init__(self, settings: PaperSettings, log: Callable[[str], None] = print) -> None:
        self.s = settings.validate()
        self.t0 = time.monotonic()
        self._log = log
        self.out = settings.out
        self.spec = LabSpec(
            vms=max(settings.vm_counts),
            wan_rate=settings.wan_rate,
            wan_rtt=settings.wan_rtt,
            wan_setup=settings.wan_setup,
            workdir=settings.workdir,
            fanout=False,  # each mode's VMs pull for themselves; the demo measures fan-out
        ).validate()
        fns = seed.stack_functions(settings.stack)
        self.functions = {k: v for k, v in fns.items() if not settings.functions or k in settings.functions}
        if not self.functions:
            raise ValueError(f"no function of {settings.stack} matches {', '.join(settings.functions)}")
        self.r = Results()
        self.done: list[str] = []  # sections measured to the end
        self.started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def log(self, msg: str) -> None:
        self._log(f"[{time.monotonic() - self.t0:7.1f}s] {msg}")

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "locust").mkdir(exist_ok=True)
        self.log("building and seeding images (cached after the first run)")
        wanted = [*self._ref_images(), *self.functions.values()]
        built = seed.build_images(self.s.build_dir / "images", self.s.build_dir / "cache", only=wanted)
        seed.seed(Path(self.s.workdir) / "seed", self.s.build_dir / "images", built, log=self.log)
        self.log(
            f"lab up: {self.spec.vms} VM(s), WAN {self.spec.wan_rate} +{self.spec.wan_rtt}/RTT "
            f"+{self.spec.wan_setup}/connection"
        )
        if net.lab_namespaces():
            raise BenchError(
                "a lab is already up on this machine: the bench brings up its own and tears it down; "
                "run `faas-accel lab down` first (or wait for whatever uses it)"
            )
        lab.up(self.spec, log=lambda m: None)
        sampler: RssSampler | None = None
        failed: BaseException | None = None
        try:
            doc = lab.status(self.spec)
            self.cache_url, self.token = doc["nic"]["cache_url"], doc["nic"]["admin_token"]
            self.floor_url = doc["nic"]["floor_url"]
            sampler = RssSampler(doc["nic"]["processes"]["nic-cache"]["pid"])
            sampler.start()
            self._sizes()
            for section in ("retrieval", "deploy", "scale", "invoke"):
                if section in self.s.sections:
                    getattr(self, section)()
                    self.done.append(section)
        except BaseException as exc:
            failed = exc
            raise
        finally:
            if sampler is not None:
                self.r.memory = sampler.stop()
            if not self.s.keep_lab:
                self.log("lab down")
                lab.down(self.spec, log=lambda m: None)
            if failed is not None:  # keep what was measured: a report of the sections that ran
                self.log(f"stopped by {type(failed).__name__}: {failed}; writing what was measured")
                with contextlib.suppress(Exception):
                    self.write(error=f"{type(failed).__name__}: {failed}")
        return self.write()

    def _sizes(self) -> None:
        images = [*self._ref_images(), *self.functions.values()]
        for image in images:
            # from the floor (a plain registry holding every image): the NIC would count it as a pull
            self.r.blobs[image] = image_blobs(self.floor_url, image.removeprefix(f"{REGISTRY_HOST}/"))
            self.r.sizes[image] = sum(self.r.blobs[image].values())

    def _ref_images(self) -> list[str]:
        return [f"{REGISTRY_HOST}/ref/{name}:paper" for name in self.s.ref_images]

    def _prefetch(self, image: str) -> None:
        """Fill the NIC with `image`, waiting until it is complete (BenchError otherwise)."""
        try:
            with CacheAPI(self.cache_url, self.token, timeout=900) as api:
                progress = api.prefetch(image, wait=900)
        except CacheAPIError as exc:
            raise BenchError(str(exc)) from exc
        if progress.state != "done":
            raise BenchError(f"prefetch of {image} did not complete: state {progress.state}")

    # -- Table 1, Figures 4 and 5 ---------------------------------------------------------

    def retrieval(self) -> None:
        vm = VmCtr(self.spec, self.spec.vm(1))
        images = self._ref_images()
        self.log(f"retrieval: prefetching {len(images)} reference image(s) into the NIC cache")
        for image in images:
            self._prefetch(image)
        refs: dict[str, Callable[[str], str]] = {
            "direct": lambda i: i,
            "cached": lambda i: f"{NIC_IP}:5000/{i}",
            "floor": lambda i: f"{self.spec.floor_host}/{i.removeprefix(REGISTRY_HOST + '/')}",
        }
        with TarballServer(self.spec) as tars, DockerLoader(self.spec, self.spec.vm(1)) as docker:
            urls = {image: tars.make(image) for image in images} if self.s.tarball_pulls else {}
            total = (self.s.pulls * len(refs) + self.s.tarball_pulls * 2) * len(images)
            done = 0
            for rep in range(self.s.pulls):
                for image in images:
                    modes: list[str] = list(refs)
                    if rep < self.s.tarball_pulls:
                        modes += ["tarball", "docker-load"]
                    for mode in modes[rep % len(modes) :] + modes[: rep % len(modes)]:  # rotate the order
                        vm.forget()
                        row: dict[str, Any] = {
                            "image": image,
                            "mode": mode,
                            "rep": rep,
                            "seconds": None,
                            "wan_bytes": 0,
                            "error": "",
                        }
                        before = net.wan_bytes()[0]
                        try:
                            if mode == "docker-load":
                                docker.forget()
                                row["seconds"] = docker.load_url(urls[image])
                            elif mode == "tarball":
                                row["seconds"] = vm.import_url(urls[image])
                            else:
                                row["seconds"] = vm.pull(refs[mode](image))
                        except (BenchError, OSError) as exc:
                            row["error"] = str(exc) or type(exc).__name__
                        row["wan_bytes"] = net.wan_bytes()[0] - before
                        self.r.pulls.append(row)
                        done += 1
                    if rep == 0 or (rep + 1) % 10 == 0:
                        self.log(f"retrieval: {done}/{total} pulls")
            vm.forget()
            docker.forget()

    # -- deploy (one VM) and scale (N VMs) ------------------------------------------------

    def _coldstart(self, label: str, phase: str, mode: str, users: int, *extra: str) -> dict[str, Any]:
        name = f"{phase}-{label}-n{users}-{len([r for r in self.r.runs if r['phase'] == phase])}"
        prefix = self.out / "locust" / name
        samples = prefix.with_suffix(".jsonl")
        samples.unlink(missing_ok=True)
        before, t0 = net.wan_bytes()[0], time.monotonic()
        code = run_locust(
            LOAD / "coldstart.py",
            [
                "--mode",
                mode,
                "-u",
                str(users),
                "-r",
                str(users),
                "--run-time",
                "20m",
                "--stack",
                str(self.s.stack),
                "--only",
                ",".join(self.functions),
                "--lab-workdir",
                self.s.workdir,
                "--samples",
                str(samples),
                "--csv",
                str(prefix),
                "--html",
                str(prefix) + ".html",
                *extra,
            ],
            log=self.out / "locust" / "locust.log",
        )
        run: dict[str, Any] = {
            "phase": phase,
            "mode": label,
            "users": users,
            "wan_bytes": net.wan_bytes()[0] - before,
            "wall_s": time.monotonic() - t0,
            "exit": code,
        }
        got = read_jsonl(samples)
        for s in got:
            s.update(phase=phase, mode=label)
        self.r.samples += got
        self.r.runs.append(run)
        cold = [s["seconds"] for s in got if s["kind"] == "first-invoke" and not s["error"]]
        errors = sum(1 for s in got if s["error"])
        self.log(
            f"{phase}: {label:10} N={users}: mean cold start "
            f"{(sum(cold) / len(cold)) if cold else float('nan'):.2f} s over {len(cold)}, "
            f"WAN {run['wan_bytes'] / 1e6:.1f} MB, {errors} error(s)"
        )
        expected = 2 * users * len(self.functions)
        if code not in (0, 1) or len(got) != expected:
            raise BenchError(
                f"locust run {name} is not a valid measurement (exit {code}, {len(got)} of {expected} "
                f"samples): see {self.out / 'locust' / 'locust.log'}"
            )
        return run

    def deploy(self) -> None:
        for rep in range(self.s.repeats):
            self.log(f"deploy: repeat {rep + 1}/{self.s.repeats}")
            self._coldstart("direct", "deploy", "direct", 1)
            self._coldstart("cached", "deploy", "cached", 1)
            self._coldstart("cached-hit", "deploy", "cached", 1, "--keep-nic")
            self._coldstart("prewarmed", "deploy", "prewarmed", 1)
            self._coldstart("prepulled", "deploy", "prepulled", 1)

    def scale(self) -> None:
        for n in self.s.vm_counts:
            for mode in tables.COLDSTART_MODES:
                self._coldstart(mode, "scale", mode, n)

    # -- warm path --------------------------------------------------------------------------

    def invoke(self) -> None:
        fn, image = next(iter(self.functions.items()))
        vm = self.spec.vm(1)
        for via in ("provider", "hook"):
            prefix = self.out / "locust" / f"invoke-{via}"
            prefix.with_name(prefix.name + "_stats.csv").unlink(missing_ok=True)
            gw = Gateway(
                vm.provider_url if via == "provider" else vm.hook_url, self.spec.user, self.spec.password
            )
            try:  # deployed before locust starts: its --run-time is all invocations
                gw.deploy(fn, image)
                gw.wait_invocable(fn, deadline_s=300)
                code = run_locust(
                    LOAD / "invoke.py",
                    [
                        "--via",
                        via,
                        "--function",
                        fn,
                        "-u",
                        "1",
                        "-r",
                        "1",
                        "--run-time",
                        f"{self.s.invoke_seconds}s",
                        "--stack",
                        str(self.s.stack),
                        "--lab-workdir",
                        self.s.workdir,
                        "--csv",
                        str(prefix),
                    ],
                    log=self.out / "locust" / "locust.log",
                )
            except GatewayError as exc:
                raise BenchError(f"invoke via {via}: {exc}") from exc
            finally:
                with contextlib.suppress(GatewayError, requests.RequestException):
                    gw.delete(fn)
                gw.close()
            rows = [
                {
                    "via": via,
                    "function": fn,
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "median_ms": float(row["Median Response Time"]),
                    "p95_ms": float(row["95%"]),
                    "rps": float(row["Requests/s"]),
                    "exit": code,
                }
                for row in locust_stats(prefix)
            ]
            if not rows:
                raise BenchError(f"invoke via {via}: locust recorded no requests (see locust.log)")
            self.r.invoke += rows
            self.log(f"invoke via {via}: {rows[0]['median_ms']:.0f} ms median, {rows[0]['rps']:.0f} req/s")

    # -- output -----------------------------------------------------------------------------

    def write(self, error: str = "") -> dict[str, Any]:
        r = self.r
        unique: dict[str, int] = {}
        for image in self.functions.values():
            unique.update(r.blobs.get(image, {}))
        raw = {
            "pulls": r.pulls,
            "samples": r.samples,
            "runs": r.runs,
            "invoke": r.invoke,
            "memory": r.memory,
            "sizes": r.sizes,
            "one_copy": sum(unique.values()),
            "images": len(self.functions),
            "images_bytes": sum(r.sizes.get(i, 0) for i in self.functions.values()),
        }
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.s).items()}
        meta = {
            "started": self.started,
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs, Linux {platform.release()})",
            "sections_done": list(self.done),
            "error": error,
            "settings": {
                **settings,
                "vms": self.spec.vms,
                "runtime": self.spec.runtime,
                "vm_disk": self.spec.vm_disk,
                "nic_workers": 2,
            },
        }
        return finish(self.out, raw, meta)
