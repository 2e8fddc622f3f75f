"""A real 2-VM lab: namespaces, tbf-shaped WAN, CNCF registry, the NIC cache, containerd and a
provider and hook per VM, and the project's own hello image (built from Debian packages)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from faas_accel.cacheapi import CacheAPI
from faas_accel.gateway import Gateway
from faas_accel.lab import lab, net, seed
from faas_accel.lab.daemons import load
from faas_accel.lab.spec import PREFIX, LabSpec
from faas_accel.testbed.procs import wait_for
from tests.conftest import require

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
HELLO = "registry.lab/faas/hello:0.1.0"
ROUND = re.compile(r"round: (\d+) pulled, (\d+) present, (\d+) failed")


@pytest.fixture(scope="class")
def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    """A 2-VM lab seeded with the hello image; torn down (and checked) afterwards."""
    require("ip", "tc", "nsenter", "containerd", "ctr", "runc", "docker-registry", "skopeo")
    if net.lab_namespaces():
        pytest.skip("a lab is already up on this machine (faas-accel lab down first)")
    work = tmp_path_factory.mktemp("lab")
    spec = LabSpec(vms=2, workdir=str(work), wan_rate="200mbit", wan_rtt="10ms", wan_setup="10ms", prepull=2)
    build = REPO / "build"
    built = seed.build_images(build / "images-test", build / "cache", only=["hello"])
    seed.seed(work / "seed", build / "images-test", built, log=lambda _: None)
    try:
        lab.up(spec, log=lambda _: None)
        yield spec
    finally:
        lab.down(spec, log=lambda _: None)


class TestLab:
    def test_status_describes_every_vm(self, running_lab: LabSpec) -> None:
        """`lab status` reports the namespaces, URLs, credentials and live processes."""
        doc = lab.status(running_lab)
        assert doc["up"] is True
        assert set(doc["namespaces"]) == {f"{PREFIX}inet", f"{PREFIX}nic", f"{PREFIX}vm1", f"{PREFIX}vm2"}
        assert [vm["gateway_url"] for vm in doc["vms"]] == [
            "http://198.18.1.11:8080",
            "http://198.18.1.12:8080",
        ]
        assert doc["nic"]["upstream_url"] == "http://198.18.0.1:5000"
        assert all(p["alive"] for vm in doc["vms"] for p in vm["processes"].values())
        assert all("prepull" in vm["processes"] for vm in doc["vms"])

    def test_second_vm_crosses_the_wan_zero_bytes(self, running_lab: LabSpec) -> None:
        """The function deploys and answers on both VMs; only the first VM's pull crosses the WAN."""
        crossed = []
        for vm in running_lab.all_vms:
            gw = Gateway(vm.gateway_url, running_lab.user, running_lab.password)
            try:
                before = net.wan_bytes()[0]
                timing = gw.cold_start("hello", HELLO, body=b"lab")
                crossed.append(net.wan_bytes()[0] - before)
                assert timing.body == b"Hello, lab!\n"
                assert gw.describe("hello")["image"] == HELLO
                gw.delete("hello")
            finally:
                gw.close()
        assert crossed[0] > 5_000_000  # the image came over the WAN once...
        assert crossed[1] < 4096  # ...and not again: a few control packets at most

    def test_prepull_daemons_ask_the_nic(self, running_lab: LabSpec) -> None:
        """Each VM's `prepull run` asks the NIC every round and holds what the NIC holds whole:
        once the NIC has hello (the deploys above filled it), a round on every VM reports it
        pulled or already present, and no pull failed."""
        doc = lab.status(running_lab)
        with CacheAPI(doc["nic"]["cache_url"], running_lab.admin_token) as nic:
            assert nic.prefetch(HELLO, wait=300).state == "done"  # a hit after the deploys
            assert HELLO in [i.image for i in nic.images() if i.blobs_known == i.blobs_stored > 0]
        logs = [Path(vm["processes"]["prepull"]["log"]) for vm in doc["vms"]]

        def holds_hello(log: Path) -> bool:
            rounds = ROUND.findall(log.read_text())  # (pulled, present, failed) of every round so far
            return any(int(p) + int(q) >= 1 and failed == "0" for p, q, failed in rounds)

        wait_for(lambda: all(holds_hello(log) for log in logs), timeout=120, what="a round holding hello")
        assert not any("round failed" in log.read_text() for log in logs)


class TestDown:
    def test_down_leaves_nothing(self, tmp_path: Path) -> None:
        """After `lab down` no lab namespace, veth, mount or process is left, even when the
        lab died without its state file."""
        require("ip", "tc", "nsenter", "containerd", "ctr", "runc", "docker-registry", "skopeo")
        if net.lab_namespaces():
            pytest.skip("a lab is already up on this machine")
        spec = LabSpec(vms=1, workdir=str(tmp_path / "lab"))
        build = REPO / "build"
        built = seed.build_images(build / "images-test", build / "cache", only=["hello"])
        seed.seed(tmp_path / "lab" / "seed", build / "images-test", built, log=lambda _: None)
        try:
            lab.up(spec, log=lambda _: None)
            daemons, _ = load(Path(spec.workdir) / "run" / "state.json")
            assert daemons and all(d.alive() for d in daemons)
            (Path(spec.workdir) / "run" / "state.json").unlink()  # as after a crash
        finally:
            lab.down(spec, log=lambda _: None)
        assert net.lab_namespaces() == []
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert PREFIX + "host" not in links
        with open("/proc/self/mountinfo") as fh:
            assert spec.workdir not in fh.read()
        assert not any(d.alive() for d in daemons)
