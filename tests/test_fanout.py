"""Fan-out prepull: the budget rule, and a real cache + containerd "VM2" that pulls what "VM1"
deployed, within its budget, never removing an image a container uses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from faas_accel.prepull.fanout import Fanout
from faas_accel.prepull.prepuller import ContainerdPuller, Prepuller
from faas_accel.testbed import oci
from faas_accel.testbed.cache import TOKEN, Cache
from faas_accel.testbed.runtimes import Containerd
from nic_cache.policy.admission import Held, plan_admission
from tests.conftest import LAB, Seeded


class TestAdmission:
    HELD = (Held("a", 40, 1.0), Held("b", 30, 2.0), Held("c", 20, 3.0))

    @pytest.mark.parametrize(
        "size, budget, in_use, expected",
        [
            (10, 100, set(), (True, ())),
            (10, 0, set(), (True, ())),
            (30, 100, set(), (True, ("a",))),
            (60, 100, set(), (True, ("a", "b"))),
            (30, 100, {"a"}, (True, ("b",))),
            (60, 100, {"a", "b"}, (False, ())),
            (120, 100, set(), (False, ())),
        ],
        ids=["fits", "no-budget", "evict-lru", "evict-two", "skip-in-use", "in-use-blocks", "too-big"],
    )
    def test_least_recently_used_make_room_but_never_one_in_use(
        self, size: int, budget: int, in_use: set[str], expected: tuple[bool, tuple[str, ...]]
    ) -> None:
        plan = plan_admission(self.HELD, "new", size, budget=budget, in_use=in_use)
        assert (plan.pull, plan.evict) == expected

    def test_the_image_itself_is_not_counted_twice(self) -> None:
        """Re-pulling a held image (a new digest under its tag) does not count its old copy."""
        plan = plan_admission(self.HELD, "a", 50, budget=100, in_use=set())
        assert (plan.pull, plan.evict) == (True, ())


# ---------------------------------------------------------------- a real NIC and a real VM2


def deployed_on_vm1(cache: Cache, image: str) -> None:
    """What VM1's hook does on a deploy: report it, then prefetch the image."""
    requests.post(
        f"{cache.url}/api/v1/events/deploy",
        json={"image": image, "vm": "vm1"},
        headers=cache.auth,
        timeout=10,
    ).raise_for_status()
    resp = requests.post(
        f"{cache.url}/api/v1/prefetch", json={"image": image}, headers=cache.auth, timeout=60
    )
    assert resp.json()["state"] == "done", resp.text


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def vm2(
    cache_factory: Callable[..., Cache], containerd_factory: Callable[..., Containerd], tmp_path: Path
) -> Iterator[tuple[Cache, Containerd, Fanout]]:
    """A cache, "VM2"'s containerd and its fan-out agent (budget 2.5 images) running in a thread."""
    cache = cache_factory(default_upstream=LAB, extra={"transcode": {"encoding": "zstd", "wait": "30s"}})
    ctrd = containerd_factory()
    puller = Prepuller(cache.url, TOKEN, cache.host, ContainerdPuller(ctrd.address, ctrd.namespace, None))
    agent = Fanout(puller, "vm2", budget=0, state_file=tmp_path / "fanout.json", complete_wait=30)
    agent.poll(0)  # the cursor: only deploys from now on
    stop = threading.Event()
    thread = threading.Thread(target=agent.serve, args=(stop, 1.0), daemon=True)
    thread.start()
    try:
        yield cache, ctrd, agent
    finally:
        stop.set()
        thread.join(15)
        puller.close()


def held_names(ctrd: Containerd) -> set[str]:
    return set(ctrd.ctr("images", "ls", "-q").stdout.split())


@pytest.mark.integration
def test_a_deploy_on_vm1_lands_in_vm2_within_its_budget(
    vm2: tuple[Cache, Containerd, Fanout], seeded: Seeded
) -> None:
    """VM1's deploy makes VM2 hold the image under the hook's mirror tag; its own deploys are
    ignored; over budget the least recently used goes, but not one a container uses."""
    cache, ctrd, agent = vm2
    refs = {}
    for name in ("fa", "fb", "fc"):
        img = oci.busybox_image({f"{name}.bin": oci.random_bytes(400_000, seed=len(refs))})
        refs[name] = f"{LAB}/lab/{name}:1"
        oci.publish(img, seeded.ref(f"lab/{name}:1"))
    mirror = {n: f"{cache.host}/{r}" for n, r in refs.items()}

    deployed_on_vm1(cache, refs["fa"])
    wait_until(lambda: mirror["fa"] in held_names(ctrd), "VM2 holds fa")
    size = agent.held()[mirror["fa"]].size
    assert size > 400_000 and agent.used_bytes() == size

    requests.post(
        f"{cache.url}/api/v1/events/deploy",
        json={"image": refs["fb"], "vm": "vm2"},
        headers=cache.auth,
        timeout=10,
    ).raise_for_status()  # VM2's own deploy: its provider pulls it, not fan-out
    agent.budget = int(size * 2.5)
    ctrd.ctr("containers", "create", mirror["fa"], "uses-fa")  # a function of VM2 runs from fa
    deployed_on_vm1(cache, refs["fb"])
    wait_until(lambda: mirror["fb"] in held_names(ctrd), "VM2 holds fb")
    deployed_on_vm1(cache, refs["fc"])
    wait_until(lambda: mirror["fc"] in held_names(ctrd), "VM2 holds fc")
    assert held_names(ctrd) == {mirror["fa"], mirror["fc"]}  # fb went: fa is older but in use
    assert set(agent.held()) == {mirror["fa"], mirror["fc"]} and agent.used_bytes() <= agent.budget
