"""`faas-accel lab up` on a fresh work directory (no seeded registry): it builds (cached) and
seeds stack.yml's images with progress, prints the faas-cli commands, and stack.yml then
deploys through the printed gateway as faas-cli sends it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faas_accel.gateway import Gateway
from faas_accel.lab import lab, net
from faas_accel.lab.seed import stack_functions
from faas_accel.lab.spec import LabSpec
from tests.conftest import require
from tests.support.faascli import deploy_stack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "stack.yml"


def lab_up(workdir: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "faas_accel",
        "lab",
        "up",
        "--vms",
        "1",
        "--workdir",
        str(workdir),
        "--no-fanout",
        "--stack",
        str(STACK),
        "--build-dir",
        str(REPO / "build"),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[tuple[LabSpec, subprocess.CompletedProcess[str]]]:
    """`lab up` in a work directory without a seed directory; torn down afterwards."""
    require("ip", "tc", "nsenter", "containerd", "ctr", "runc", "docker-registry", "skopeo")
    if net.lab_namespaces():
        pytest.skip("a lab is already up on this machine (faas-accel lab down first)")
    spec = LabSpec(vms=1, workdir=str(tmp_path / "lab"), fanout=False)
    assert not (Path(spec.workdir) / "seed").exists()
    try:
        yield spec, lab_up(Path(spec.workdir))
    finally:
        lab.down(spec, log=lambda _: None)


class TestLabUp:
    def test_seeds_the_stack_and_prints_commands_that_deploy_it(
        self, fresh_lab: tuple[LabSpec, subprocess.CompletedProcess[str]]
    ) -> None:
        """The stack's images are built and pushed with progress; the printed gateway and
        credentials take `faas-cli deploy -f stack.yml`; every function answers; a second
        `lab up` finds the images and the lab in place."""
        spec, up = fresh_lab
        assert up.returncode == 0, up.stderr[-3000:]
        images = sorted(set(stack_functions(STACK).values()))
        assert f"building {len(images)} image(s) of stack.yml" in up.stderr
        assert f"[{len(images)}/{len(images)}] pushed" in up.stderr
        gw = lab.status(spec)["vms"][0]["gateway_url"]
        assert f"faas-cli login -g {gw} -u {spec.user} --password-stdin" in up.stdout
        assert f"echo -n {spec.password} |" in up.stdout
        assert f"faas-cli deploy -f {STACK} -g {gw} --read-template=false" in up.stdout
        answers = deploy_stack(STACK, auth=(spec.user, spec.password), gateway=gw, read_template=False)
        assert set(answers) == set(stack_functions(STACK))
        for name, got in answers.items():  # faas-cli: PUT (404 for a new function), then POST
            assert [r.status_code for r in got][:1] == [404] and got[-1].ok, (name, got[-1].text)
        client = Gateway(gw, spec.user, spec.password)
        try:
            for name in stack_functions(STACK):
                assert client.invoke(name, b"").status_code == 200, name  # each handler has a default input
        finally:
            client.close()
        again = lab_up(Path(spec.workdir))
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"holds the {len(images)} image(s) of stack.yml" in again.stderr
        assert "lab is already up" in again.stderr


class TestOptions:
    def test_missing_stack_file_is_a_usage_error(self, tmp_path: Path) -> None:
        """`lab up --stack` naming no file fails before anything is built or started."""
        from click.testing import CliRunner

        from faas_accel.cli import main

        res = CliRunner().invoke(main, ["lab", "up", "--stack", str(tmp_path / "none.yml")])
        assert res.exit_code == 2 and "no stack file at" in res.output and "--no-seed" in res.output

    def test_next_steps_name_every_gateway(self) -> None:
        """The printed commands use VM 1's gateway and password and list the other VMs."""
        from faas_accel.lab.guide import next_steps

        vms = [
            {
                "name": f"vm{k}",
                "gateway_url": f"http://198.18.1.1{k}:8080",
                "auth": {"user": "admin", "password": "pw"},
            }
            for k in (1, 2)
        ]
        doc = {"vms": vms, "accel": True, "nic": {"cache_url": "http://198.18.1.1:5000", "admin_token": "t"}}
        text = "\n".join(next_steps(doc, Path("/x/stack.yml"), ["hello"]))
        assert "echo -n pw | faas-cli login -g http://198.18.1.11:8080 -u admin --password-stdin" in text
        assert "faas-cli deploy -f /x/stack.yml -g http://198.18.1.11:8080 --read-template=false" in text
        assert "faas-cli invoke hello -g http://198.18.1.11:8080" in text
        assert "vm2 http://198.18.1.12:8080" in text
