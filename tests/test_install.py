"""`faas-accel install nic|vm`: the systemd units verify, run real subcommands, and the plan
is written under a root as printed (idempotent, backups, secrets hidden)."""

from __future__ import annotations

import json
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from faas_accel.cli import main
from faas_accel.install import systemd
from faas_accel.install.examples import EXAMPLE_BIN, systemd_examples
from faas_accel.install.plan import NicOptions, VmOptions, nic_plan, vm_plan

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "systemd"
BIN = str(Path(sys.executable).with_name("faas-accel"))
FAASD_COMPOSE = """\
version: "3.7"
services:
  gateway:
    image: ghcr.io/openfaas/gateway:0.27.0
    environment:
      - basic_auth=true
      # the provider faasd runs on the host
      - functions_provider_url=http://faasd-provider:8081/
      - direct_functions=false
    ports:
       - "8080:8080"
"""


def all_units(bin_path: str) -> dict[str, str]:
    """Every unit the installer can write: NIC, VM with fan-out, VM on Docker."""
    plans = [
        nic_plan(NicOptions(bin=bin_path, token="t"), lambda _: None),
        vm_plan(
            VmOptions(bin=bin_path, cache_url="http://198.18.1.1:5000", fanout_vm="198.18.1.11"),
            lambda _: None,
        ),
        vm_plan(
            VmOptions(bin=bin_path, cache_url="http://198.18.1.1:5000", runtime="docker"), lambda _: None
        ),
    ]
    out = {}
    for i, plan in enumerate(plans):
        for f in plan.files:
            if f.path.endswith(".service"):
                out[f"{i}-{Path(f.path).name}"] = f.new
    return out


def unit_value(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def parse_cli(argv: list[str]) -> tuple[click.Command, dict[str, Any]]:
    """Parse `faas-accel ARGV` as click would run it, without running it."""
    ctx = main.make_context("faas-accel", list(argv))
    cmd: click.Command = main
    while isinstance(cmd, click.Group):
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = cmd.resolve_command(ctx, args)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
    return cmd, ctx.params


def verify(directory: Path) -> subprocess.CompletedProcess[str]:
    units = sorted(str(p) for p in directory.glob("*.service"))
    return subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def can_verify(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless systemd-analyze verifies a trivial unit cleanly in this container."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    d = tmp_path_factory.mktemp("trivial")
    (d / "trivial.service").write_text("[Service]\nExecStart=/bin/true\n")
    res = verify(d)
    if res.returncode != 0 or res.stdout.strip() or res.stderr.strip():
        pytest.skip(f"systemd-analyze verify cannot run here: {res.stderr.strip()[:300]}")


class TestUnits:
    @pytest.mark.usefixtures("can_verify")
    def test_every_unit_verifies(self, tmp_path: Path) -> None:
        """systemd-analyze verify accepts every unit without a warning."""
        for name, text in all_units(BIN).items():
            (tmp_path / name.split("-", 1)[1]).write_text(text)
            res = verify(tmp_path)
            assert (res.returncode, res.stdout + res.stderr) == (0, ""), name
            for p in tmp_path.glob("*.service"):
                p.unlink()

    @pytest.mark.usefixtures("can_verify")
    def test_a_broken_unit_fails_verify(self, tmp_path: Path) -> None:
        """A misspelt hardening key and a missing executable are reported."""
        text = all_units(BIN)["0-faas-accel-cache.service"]
        (tmp_path / "faas-accel-cache.service").write_text(
            text.replace("ProtectSystem=", "ProtectSystm=").replace(BIN, "/nonexistent/faas-accel")
        )
        res = verify(tmp_path)
        assert "ProtectSystm" in res.stderr and "/nonexistent/faas-accel" in res.stderr

    @pytest.mark.parametrize("name", sorted(all_units(EXAMPLE_BIN)))
    def test_exec_start_is_a_real_command(self, name: str) -> None:
        """Each ExecStart names a faas-accel subcommand with options it accepts."""
        text = all_units(EXAMPLE_BIN)[name]
        (exec_start,) = unit_value(text, "ExecStart")
        argv = shlex.split(exec_start)
        assert argv[0] == EXAMPLE_BIN
        cmd, params = parse_cli(argv[1:])
        assert cmd.callback is not None and params

    def test_a_wrong_option_does_not_parse(self) -> None:
        """The parse check fails on an option the command does not have."""
        with pytest.raises(click.NoSuchOption):
            parse_cli(["hook", "serve", "--provider", "http://127.0.0.1:8081", "--upstream", "x"])

    @pytest.mark.parametrize("name", sorted(all_units(EXAMPLE_BIN)))
    def test_hardened(self, name: str) -> None:
        """Each unit is confined: no new privileges, a read-only system, no capabilities,
        a dedicated or dynamic user unless it must talk to a root-only runtime socket."""
        text = all_units(EXAMPLE_BIN)[name]
        for key, value in systemd.HARDENING:
            assert unit_value(text, key) == [value], key
        if "prepull" in name or "fanout" in name:
            assert unit_value(text, "StateDirectory") == ["faas-accel"]
        elif "cache" in name:
            assert unit_value(text, "User") == [systemd.USER]
            assert unit_value(text, "ReadWritePaths") == ["/var/lib/nic-cache"]
        else:
            assert unit_value(text, "DynamicUser") == ["yes"]
        assert not any(s in text for s in ("--token", "TOKEN=")), "secrets come from EnvironmentFile"

    def test_deploy_examples_are_current(self) -> None:
        """deploy/systemd holds exactly what the installer renders for the example options."""
        expected = systemd_examples()
        assert sorted(p.name for p in DEPLOY.iterdir()) == sorted(expected)
        for name, text in expected.items():
            assert (DEPLOY / name).read_text() == text, (
                f"deploy/systemd/{name} is stale: run .venv/bin/python -m faas_accel.install.examples"
            )


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["install", *args], catch_exceptions=False)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


class TestInstallNic:
    def test_dry_run_prints_the_plan_and_writes_nothing(self, tmp_path: Path) -> None:
        """--dry-run names every file and the commands to run, hides the token, writes nothing."""
        res = run("nic", "--root", str(tmp_path), "--bin", BIN, "--dry-run")
        assert res.exit_code == 0, res.output
        for path in (
            "/etc/systemd/system/faas-accel-cache.service",
            "/etc/faas-accel/nic-cache.yml",
            "/etc/faas-accel/nic.env",
            "/etc/sysusers.d/faas-accel.conf",
        ):
            assert f"create     {path}" in res.output
        assert "NIC_CACHE_ADMIN_TOKEN=<hidden>" in res.output
        assert "systemctl enable --now faas-accel-cache.service faas-accel-prewarm.service" in res.output
        assert list(tmp_path.iterdir()) == []

    def test_install_writes_then_is_idempotent(self, tmp_path: Path) -> None:
        """Files land with their modes; a second run changes nothing and keeps the token."""
        assert run("nic", "--root", str(tmp_path), "--bin", BIN, "--upstream", "ghcr.io").exit_code == 0
        env = tmp_path / "etc/faas-accel/nic.env"
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "etc/faas-accel/nic-cache.yml").stat().st_mode) == 0o644
        token = unit_value(env.read_text(), "NIC_CACHE_ADMIN_TOKEN")[0]
        assert len(token) >= 32 and token not in run("nic", "--root", str(tmp_path), "--dry-run").output
        first = tree(tmp_path)
        again = run("nic", "--root", str(tmp_path), "--bin", BIN, "--upstream", "ghcr.io")
        assert again.exit_code == 0 and "created" not in again.output and "updated" not in again.output
        assert tree(tmp_path) == first

    def test_config_it_writes_loads(self, tmp_path: Path) -> None:
        """The nic-cache.yml and prewarm.yml it writes are accepted by the cache and scheduler."""
        from faas_accel.prewarm.loader import load_prewarm_file
        from nic_cache.config import load_config_file

        run("nic", "--root", str(tmp_path), "--bin", BIN, "--upstream", "registry.lab=http://198.18.0.1:5000")
        env = {"NIC_CACHE_ADMIN_TOKEN": "x"}
        config = load_config_file(str(tmp_path / "etc/faas-accel/nic-cache.yml"), env)
        assert config.upstreams["registry.lab"].url == "http://198.18.0.1:5000"
        assert config.admin_token == "x"
        loaded = load_prewarm_file(str(tmp_path / "etc/faas-accel/prewarm.yml"), env)
        assert [s.name for s in loaded.spec.schedules] == ["nightly-top"]


class TestInstallVm:
    def _vm(self, root: Path, *extra: str) -> Any:
        return run(
            "vm",
            "--root",
            str(root),
            "--bin",
            BIN,
            "--cache",
            "http://198.18.1.1:5000",
            "--registry",
            "registry.lab=http://198.18.0.1:5000",
            *extra,
        )

    def test_points_faasd_gateway_at_the_hook(self, tmp_path: Path) -> None:
        """faasd's functions_provider_url moves to the hook, comments kept, old file backed up."""
        compose = tmp_path / "var/lib/faasd/docker-compose.yaml"
        compose.parent.mkdir(parents=True)
        compose.write_text(FAASD_COMPOSE)
        dry = self._vm(tmp_path, "--dry-run")
        assert "+      - functions_provider_url=http://faasd-provider:8082/" in dry.output
        assert "systemctl restart faasd" in dry.output and compose.read_text() == FAASD_COMPOSE
        assert self._vm(tmp_path).exit_code == 0
        assert compose.read_text() == FAASD_COMPOSE.replace(":8081/", ":8082/")
        assert (compose.parent / "docker-compose.yaml.bak").read_text() == FAASD_COMPOSE
        hosts = (tmp_path / "etc/containerd/certs.d/registry.lab/hosts.toml").read_text()
        assert 'server = "http://198.18.0.1:5000"' in hosts and '[host."http://198.18.1.1:5000"]' in hosts
        assert (
            "--cache http://198.18.1.1:5000"
            in (tmp_path / "etc/systemd/system/faas-accel-hook.service").read_text()
        )

    def test_without_faasd_says_what_to_do(self, tmp_path: Path) -> None:
        """No compose file: the plan says how to wire faasd later, and still writes the rest."""
        res = self._vm(tmp_path)
        assert res.exit_code == 0 and "functions_provider_url=http://faasd-provider:8082/" in res.output
        assert (tmp_path / "etc/systemd/system/faas-accel-prepull.service").exists()

    def test_refuses_a_compose_it_cannot_read(self, tmp_path: Path) -> None:
        """An unparseable compose file stops the install with one line, nothing written."""
        compose = tmp_path / "var/lib/faasd/docker-compose.yaml"
        compose.parent.mkdir(parents=True)
        compose.write_text("services: [unclosed\n")
        res = self._vm(tmp_path)
        assert res.exit_code == 1 and "refusing to change /var/lib/faasd/docker-compose.yaml" in res.output
        assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["docker-compose.yaml"]

    def test_docker_runtime_merges_daemon_json(self, tmp_path: Path) -> None:
        """With --runtime docker, daemon.json gets the mirror and keeps its other keys, and
        prepull talks to dockerd's socket."""
        daemon = tmp_path / "etc/docker/daemon.json"
        daemon.parent.mkdir(parents=True)
        daemon.write_text('{"log-driver": "local"}\n')
        assert self._vm(tmp_path, "--runtime", "docker").exit_code == 0
        assert json.loads(daemon.read_text()) == {
            "log-driver": "local",
            "registry-mirrors": ["http://198.18.1.1:5000"],
            "insecure-registries": ["198.18.1.1:5000"],
        }
        prepull = (tmp_path / "etc/systemd/system/faas-accel-prepull.service").read_text()
        assert "--runtime docker --address unix:///run/docker.sock" in prepull
        assert "After=network-online.target docker.service" in prepull

    def test_token_file_takes_the_nics_env(self, tmp_path: Path) -> None:
        """--token-file accepts the NIC's nic.env; the VM's env file holds the token, mode 0600."""
        nic_env = tmp_path / "nic.env"
        nic_env.write_text("# secrets\nNIC_CACHE_ADMIN_TOKEN=s3cret\n")
        root = tmp_path / "root"
        res = self._vm(root, "--token-file", str(nic_env))
        assert res.exit_code == 0 and "s3cret" not in res.output
        vm_env = root / "etc/faas-accel/vm.env"
        assert "NIC_CACHE_ADMIN_TOKEN=s3cret" in vm_env.read_text()
        assert stat.S_IMODE(vm_env.stat().st_mode) == 0o600
