"""Fan-out: when a function is deployed on one VM, pull its image into the other VMs first.

`faas-accel prepull fanout` runs in each VM. It long-polls the NIC's deploy feed
(`GET /api/v1/events/deploys?after=..&vm=<me>&wait=25s`: what the hooks of *other* VMs
reported), waits until the NIC holds the image completely (the first VM's miss is filling
it), and pulls it from the NIC by digest under the mirror tag the hook rewrites deploys to,
as `prepull` does (prepuller.py). A runtime that reads zstd pulls the NIC's re-encoded variant
when there is one (transcoder.py), so the later deploy on this VM finds the image unpacked.

It keeps what it pulled within `budget` bytes of the VM, dropping the least recently used
first and never an image a container uses (nic_cache/policy/admission.py); what it holds is
recorded in a small JSON state file so that a restart keeps the budget honest.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, cast

from nic_cache.errors import RegistryError
from nic_cache.policy.admission import Held, plan_admission
from nic_cache.policy.hold import Candidate
from nic_cache.reference import parse_image

from .prepuller import Prepuller, PrepullError, Runtime, candidates

log = logging.getLogger("faas_accel.prepull.fanout")
POLL = 0.25  # seconds between looks at the NIC while an image is still filling


class FanoutRuntime(Runtime, Protocol):
    """A prepull runtime that can also say what its containers use and drop an image."""

    reads_zstd: bool

    def in_use(self) -> set[str]:
        """Names of the images some container of the VM was created from."""
        ...

    def remove(self, name: str) -> None:
        """Forget the image `name` (its content goes once nothing else names it)."""
        ...


@dataclass(frozen=True)
class FanoutResult:
    """What one deploy event led to on this VM."""

    image: str
    outcome: str  # pulled | present | skipped | failed
    detail: str = ""
    evicted: tuple[str, ...] = ()
    seconds: float = 0.0


class Fanout:
    """One VM's fan-out agent around a `Prepuller` (its NIC session, mirror host, runtime)."""

    def __init__(
        self,
        prepuller: Prepuller,
        vm: str,
        *,
        budget: int,
        state_file: Path,
        complete_wait: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.p = prepuller
        self.runtime = cast(FanoutRuntime, prepuller.runtime)
        self.vm = vm
        self.budget = budget
        self.state_file = state_file
        self.complete_wait = complete_wait
        self.clock = clock
        self.cursor: float | None = None

    # -- the VM's record of what fan-out pulled -------------------------------------------------

    def held(self) -> dict[str, Held]:
        try:
            doc = json.loads(self.state_file.read_text())
            return {h["name"]: Held(**h) for h in doc.get("held", [])}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("state file %s unreadable (%s); starting from nothing", self.state_file, exc)
            return {}

    def _save(self, held: dict[str, Held]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"held": [asdict(h) for h in held.values()]}))
        os.replace(tmp, self.state_file)

    def used_bytes(self) -> int:
        """Bytes of the images fan-out holds in this VM (what its budget counts)."""
        return sum(h.size for h in self.held().values())

    # -- the feed ---------------------------------------------------------------------------

    def poll(self, wait: float = 25.0) -> list[str]:
        """The images other VMs deployed since the last poll (the first poll only sets the cursor)."""
        with self.p.nic() as api:
            feed = api.deploy_events(vm=self.vm, after=self.cursor, wait=wait)
        self.cursor = feed.next
        return list(dict.fromkeys(e.image for e in feed.events))

    def _complete(self, image: str) -> Candidate | None:
        """Wait until the NIC holds `image` completely (and, for a runtime that reads zstd, until
        its variant is made or refused); its candidate, or None at the deadline. A variant that
        is still pending at the deadline is not waited for: the original is pulled."""
        deadline = time.monotonic() + self.complete_wait
        while True:
            with self.p.nic() as api:
                listed = api.images()
            held = {i.image: i for i in listed}
            late = time.monotonic() >= deadline
            for c in candidates(listed, []):
                if c.image != image or not c.complete:
                    continue
                nic = held[image]
                if not self.runtime.reads_zstd or nic.variant_state == "none":
                    return c
                if nic.variant:
                    return Candidate(c.image, nic.variant, c.size, True, c.score)
                if late:
                    return c
            if late:
                return None
            time.sleep(POLL)

    def handle(self, image: str) -> FanoutResult:
        """Bring one deployed image into this VM, within the budget."""
        t0 = time.monotonic()
        try:
            image = str(parse_image(image))
        except RegistryError as exc:
            return FanoutResult(image, "skipped", f"not an image reference: {exc}")
        c = self._complete(image)
        if c is None:
            return FanoutResult(image, "skipped", f"not complete on the NIC within {self.complete_wait:g}s")
        try:
            source, name = self.p.refs(c)
        except RegistryError as exc:
            return FanoutResult(image, "skipped", str(exc))
        held = self.held()
        in_use = self.runtime.in_use()
        now = self.clock()
        for h in list(held.values()):
            if h.name in in_use:
                held[h.name] = Held(h.name, h.size, now)
        if c.digest in self.runtime.digests().get(name, set()):
            if name in held:
                held[name] = Held(name, c.size, now)
                self._save(held)
            return FanoutResult(image, "present", seconds=time.monotonic() - t0)
        plan = plan_admission(held.values(), name, c.size, budget=self.budget, in_use=in_use)
        if not plan.pull:
            self._save(held)
            return FanoutResult(image, "skipped", plan.reason, seconds=time.monotonic() - t0)
        for victim in plan.evict:
            try:
                self.runtime.remove(victim)
            except PrepullError as exc:
                log.warning("could not remove %s to make room: %s", victim, exc)
                continue
            held.pop(victim, None)
            log.info("removed %s (least recently used) to make room for %s", victim, name)
        try:
            self.runtime.pull(source, name)
        except PrepullError as exc:
            self._save(held)
            return FanoutResult(image, "failed", str(exc), plan.evict, time.monotonic() - t0)
        held[name] = Held(name, c.size, now)
        self._save(held)
        log.info("fan-out: pulled %s as %s in %.2fs", source, name, time.monotonic() - t0)
        return FanoutResult(image, "pulled", source, plan.evict, time.monotonic() - t0)

    def serve(self, stop: threading.Event, wait: float = 25.0) -> None:
        """Poll and handle until `stop` is set; errors are logged and the loop goes on."""
        while not stop.is_set():
            try:
                for image in self.poll(wait):
                    r = self.handle(image)
                    log.info("fan-out %s: %s %s", r.image, r.outcome, r.detail)
            except PrepullError as exc:
                log.warning("fan-out round failed: %s", exc)
                stop.wait(2)
            except Exception:
                log.exception("fan-out round crashed")
                stop.wait(2)
