"""Tests for mirror-config planning (pure) and its CLI (on temporary directories)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from faas_accel.mirror_config.cli import backup_path, mirror_config, write_atomic
from faas_accel.mirror_config.plan import (
    DOCKER_HUB_SERVER,
    FileChange,
    InvalidArgument,
    Registry,
    UnsafeToEdit,
    check_hosts_toml,
    containerd_hosts,
    go_duration,
    hosts_toml,
    merge_daemon_json,
    merge_registries_yaml,
    parse_mirror,
    parse_registries,
    parse_registry,
    toml_string,
)

MIRROR = "http://198.18.1.1:5000"
TLS_MIRROR = "https://nic.lab:5443"
LAB = "registry.lab=http://198.18.0.1:5000"


class TestParseMirror:
    @pytest.mark.parametrize(
        ("url", "expected", "plain_http", "netloc"),
        [
            (MIRROR, MIRROR, True, "198.18.1.1:5000"),
            ("http://198.18.1.1:5000/", MIRROR, True, "198.18.1.1:5000"),
            ("HTTP://198.18.1.1:5000", MIRROR, True, "198.18.1.1:5000"),
            (" https://nic.lab ", "https://nic.lab", False, "nic.lab"),
            ("https://nic.lab/cache/", "https://nic.lab/cache", False, "nic.lab"),
            ("http://[fd00::1]:5000", "http://[fd00::1]:5000", True, "[fd00::1]:5000"),
        ],
        ids=["plain", "trailing-slash", "upper-scheme", "spaces", "path", "ipv6"],
    )
    def test_valid(self, url: str, expected: str, plain_http: bool, netloc: str) -> None:
        """A usable URL is normalised to scheme://netloc[/path] without a trailing slash."""
        mirror = parse_mirror(url)
        assert (mirror.url, mirror.plain_http, mirror.netloc) == (expected, plain_http, netloc)

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("198.18.1.1:5000", "must start with http"),
            ("ftp://198.18.1.1", "must start with http"),
            ("http://", "names no host"),
            ("http://u:p@198.18.1.1:5000", "credentials"),
            ("http://198.18.1.1:5000/?ns=docker.io", "query"),
            ("http://198.18.1.1:99999", "invalid port"),
        ],
        ids=["no-scheme", "ftp", "no-host", "credentials", "query", "bad-port"],
    )
    def test_invalid(self, url: str, problem: str) -> None:
        """An unusable URL is refused with the reason."""
        with pytest.raises(InvalidArgument, match=problem):
            parse_mirror(url)


class TestParseRegistry:
    @pytest.mark.parametrize(
        ("spec", "host", "server"),
        [
            ("docker.io", "docker.io", DOCKER_HUB_SERVER),
            ("ghcr.io", "ghcr.io", "https://ghcr.io"),
            ("registry.lab:5000", "registry.lab:5000", "https://registry.lab:5000"),
            (LAB, "registry.lab", "http://198.18.0.1:5000"),
            ("registry.lab = http://198.18.0.1:5000/", "registry.lab", "http://198.18.0.1:5000"),
        ],
        ids=["docker-hub", "default-https", "with-port", "explicit-server", "spaces-slash"],
    )
    def test_valid(self, spec: str, host: str, server: str) -> None:
        """HOST gets its default server and HOST=URL keeps the given one."""
        assert parse_registry(spec) == Registry(host=host, server=server)

    @pytest.mark.parametrize(
        "spec",
        ["", "../etc", "docker.io/library", "-bad.host", "registry.lab=198.18.0.1:5000"],
        ids=["empty", "dot-dot", "path", "leading-dash", "server-without-scheme"],
    )
    def test_invalid(self, spec: str) -> None:
        """A spec that is not a host (or names an unusable server) is refused."""
        with pytest.raises(InvalidArgument):
            parse_registry(spec)

    def test_repeats_are_dropped(self) -> None:
        """The same registry given twice is planned once, in first-seen order."""
        registries = parse_registries(["docker.io", LAB, "docker.io", LAB])
        assert [r.host for r in registries] == ["docker.io", "registry.lab"]

    def test_conflicting_servers_are_refused(self) -> None:
        """One registry with two different servers is an error naming both."""
        with pytest.raises(InvalidArgument, match="different servers"):
            parse_registries([LAB, "registry.lab=http://198.18.0.9:5000"])

    def test_none_is_refused(self) -> None:
        """An empty registry list is an error."""
        with pytest.raises(InvalidArgument, match="no registry"):
            parse_registries([])


class TestTomlString:
    @pytest.mark.parametrize(
        "value",
        ["plain", 'quo"te', "back\\slash", "tab\there", "new\nline", "nul\x00del\x7f", "ünï"],
        ids=["plain", "quote", "backslash", "tab", "newline", "control", "unicode"],
    )
    def test_round_trips_through_tomllib(self, value: str) -> None:
        """Every string comes back unchanged from tomllib."""
        assert tomllib.loads(f"key = {toml_string(value)}")["key"] == value


class TestGoDuration:
    @pytest.mark.parametrize(
        ("seconds", "expected"),
        [(2.0, "2s"), (0.5, "500ms"), (1.25, "1250ms"), (0.001, "1ms"), (30, "30s")],
        ids=["whole", "half", "fraction", "one-ms", "int"],
    )
    def test_renders(self, seconds: float, expected: str) -> None:
        """Seconds become the shortest exact Go duration string."""
        assert go_duration(seconds) == expected

    @pytest.mark.parametrize("seconds", [0, 0.0001, -1], ids=["zero", "sub-ms", "negative"])
    def test_refuses_below_one_millisecond(self, seconds: float) -> None:
        """A duration that would round to nothing is an error."""
        with pytest.raises(InvalidArgument):
            go_duration(seconds)


class TestContainerdHosts:
    def test_one_file_per_registry(self) -> None:
        """Each registry gets `<host>/hosts.toml`, relative to config_path."""
        files = containerd_hosts(MIRROR, ["docker.io", LAB, "registry.lab:5000"])
        assert list(files) == [
            "docker.io/hosts.toml",
            "registry.lab/hosts.toml",
            "registry.lab:5000/hosts.toml",
        ]

    @pytest.mark.parametrize(
        ("registry", "server"),
        [("docker.io", DOCKER_HUB_SERVER), (LAB, "http://198.18.0.1:5000")],
        ids=["docker-hub", "explicit-server"],
    )
    def test_mirror_first_registry_as_fallback(self, registry: str, server: str) -> None:
        """The mirror is the only host, pull+resolve only; the upstream is the server."""
        text = containerd_hosts(MIRROR, [registry])[f"{registry.split('=')[0]}/hosts.toml"]
        assert tomllib.loads(text) == {
            "server": server,
            "host": {MIRROR: {"capabilities": ["pull", "resolve"], "dial_timeout": "2s"}},
        }

    def test_exact_text(self) -> None:
        """The generated file is small, commented and stable."""
        assert hosts_toml(MIRROR, "docker.io") == (
            "# Written by faas-accel mirror-config: pull docker.io through the NIC cache,\n"
            "# and from the registry itself when the cache cannot answer.\n"
            'server = "https://registry-1.docker.io"\n'
            "\n"
            '[host."http://198.18.1.1:5000"]\n'
            '  capabilities = ["pull", "resolve"]\n'
            "  # containerd >= 1.7 gives up connecting to the cache after dial_timeout. "
            "containerd\n"
            "  # 1.6 ignores the key and waits up to its built-in 30s when the cache host drops\n"
            "  # packets; a refused or unreachable cache fails over at once on every version.\n"
            '  dial_timeout = "2s"\n'
        )

    @pytest.mark.parametrize(
        ("kwargs", "host_table"),
        [
            ({"dial_timeout": 0}, {"capabilities": ["pull", "resolve"]}),
            ({"dial_timeout": 0.5}, {"capabilities": ["pull", "resolve"], "dial_timeout": "500ms"}),
            (
                {"skip_verify": True, "dial_timeout": 0},
                {"capabilities": ["pull", "resolve"], "skip_verify": True},
            ),
        ],
        ids=["no-timeout", "half-second", "skip-verify"],
    )
    def test_options(self, kwargs: dict[str, float], host_table: dict[str, object]) -> None:
        """dial_timeout 0 leaves the key out; skip_verify marks an https mirror."""
        text = hosts_toml(TLS_MIRROR, "docker.io", **kwargs)  # type: ignore[arg-type]
        assert tomllib.loads(text)["host"] == {TLS_MIRROR: host_table}

    def test_skip_verify_on_plain_http_is_refused(self) -> None:
        """skip_verify means nothing on a plain-http mirror, so asking for it is an error."""
        with pytest.raises(InvalidArgument, match="https mirror"):
            hosts_toml(MIRROR, "docker.io", skip_verify=True)

    def test_registry_as_its_own_mirror(self) -> None:
        """A mirror that is the registry's server gives the file the lab's VMs use for plain-http
        registries: that server and one host entry, nothing else."""
        text = hosts_toml("http://198.18.0.1:5000", "registry.lab=http://198.18.0.1:5000", dial_timeout=0)
        assert text.startswith("# Written by faas-accel: pull registry.lab from http://198.18.0.1:5000.\n")
        assert tomllib.loads(text) == {
            "server": "http://198.18.0.1:5000",
            "host": {"http://198.18.0.1:5000": {"capabilities": ["pull", "resolve"]}},
        }

    def test_same_input_same_text(self) -> None:
        """Planning twice gives identical text, so a second run changes nothing."""
        assert containerd_hosts(MIRROR, [LAB]) == containerd_hosts(MIRROR + "/", [LAB])


class TestCheckHostsToml:
    def test_valid_toml_passes(self) -> None:
        """Any valid TOML may be replaced."""
        check_hosts_toml('server = "https://ghcr.io"\n')

    def test_invalid_toml_is_refused(self) -> None:
        """Broken TOML is reported with tomllib's position."""
        with pytest.raises(UnsafeToEdit, match=r"not valid TOML .*line 1"):
            check_hosts_toml("server = \n")


class TestMergeDaemonJson:
    @pytest.mark.parametrize("existing", [None, "", "  \n"], ids=["missing", "empty", "blank"])
    def test_fresh_file(self, existing: str | None) -> None:
        """A missing or empty file becomes mirrors plus insecure-registries for plain http."""
        assert json.loads(merge_daemon_json(existing, MIRROR)) == {
            "registry-mirrors": [MIRROR],
            "insecure-registries": ["198.18.1.1:5000"],
        }

    def test_https_mirror_is_not_insecure(self) -> None:
        """An https mirror is not listed in insecure-registries."""
        assert json.loads(merge_daemon_json(None, TLS_MIRROR)) == {"registry-mirrors": [TLS_MIRROR]}

    def test_keeps_other_keys_and_entries(self) -> None:
        """Other keys stay in place and the mirror goes before existing mirrors."""
        existing = json.dumps(
            {
                "log-driver": "json-file",
                "registry-mirrors": ["https://mirror.gcr.io"],
                "insecure-registries": ["10.0.0.0/8"],
                "bridge": "none",
            }
        )
        assert json.loads(merge_daemon_json(existing, MIRROR)) == {
            "log-driver": "json-file",
            "registry-mirrors": [MIRROR, "https://mirror.gcr.io"],
            "insecure-registries": ["10.0.0.0/8", "198.18.1.1:5000"],
            "bridge": "none",
        }

    @pytest.mark.parametrize(
        "existing",
        [
            '{"registry-mirrors": ["http://198.18.1.1:5000"], "insecure-registries": ["198.18.1.1:5000"]}',
            '{"registry-mirrors": ["https://mirror.gcr.io", "http://198.18.1.1:5000/"],'
            ' "insecure-registries": ["198.18.1.1:5000"], "debug": true}',
        ],
        ids=["compact", "other-order-trailing-slash"],
    )
    def test_already_configured_text_is_returned_verbatim(self, existing: str) -> None:
        """When nothing is missing the existing text comes back byte for byte."""
        assert merge_daemon_json(existing, MIRROR) == existing

    def test_second_merge_changes_nothing(self) -> None:
        """Merging into our own output returns it unchanged."""
        once = merge_daemon_json('{"debug": true}', MIRROR)
        assert merge_daemon_json(once, MIRROR) == once

    @pytest.mark.parametrize(
        ("existing", "problem"),
        [
            ('{"debug": true,}', r"not valid JSON \(line 1, column 16"),
            ('["not", "an", "object"]', "JSON list, not an object"),
            ('{"registry-mirrors": "http://x"}', "'registry-mirrors' is not a list of strings"),
            ('{"insecure-registries": [1]}', "'insecure-registries' is not a list of strings"),
        ],
        ids=["trailing-comma", "top-level-list", "mirrors-string", "insecure-ints"],
    )
    def test_refuses_what_it_cannot_merge(self, existing: str, problem: str) -> None:
        """Invalid JSON or an unexpected shape is refused with the reason."""
        with pytest.raises(UnsafeToEdit, match=problem):
            merge_daemon_json(existing, MIRROR)


class TestMergeRegistriesYaml:
    @pytest.mark.parametrize("existing", [None, "", "# nothing yet\n"], ids=["missing", "empty", "comment"])
    def test_fresh_file(self, existing: str | None) -> None:
        """A missing or empty file gets one mirror entry per registry."""
        text = merge_registries_yaml(existing, MIRROR, ["docker.io", LAB, "ghcr.io"])
        assert yaml.safe_load(text) == {
            "mirrors": {
                "docker.io": {"endpoint": [MIRROR]},
                "registry.lab": {"endpoint": [MIRROR, "http://198.18.0.1:5000"]},
                "ghcr.io": {"endpoint": [MIRROR]},
            }
        }

    def test_keeps_configs_and_other_mirrors(self) -> None:
        """configs:, other registries and other keys of an entry are kept."""
        existing = (
            "mirrors:\n"
            "  docker.io:\n"
            "    endpoint: ['https://mirror.gcr.io']\n"
            "    rewrite: {'^(.*)$': 'hub/$1'}\n"
            "  quay.io:\n"
            "    endpoint: ['https://quay-mirror']\n"
            "configs:\n"
            "  registry.lab:\n"
            "    auth: {username: u, password: p}\n"
        )
        assert yaml.safe_load(merge_registries_yaml(existing, MIRROR, ["docker.io"])) == {
            "mirrors": {
                "docker.io": {
                    "endpoint": [MIRROR, "https://mirror.gcr.io"],
                    "rewrite": {"^(.*)$": "hub/$1"},
                },
                "quay.io": {"endpoint": ["https://quay-mirror"]},
            },
            "configs": {"registry.lab": {"auth": {"username": "u", "password": "p"}}},
        }

    @pytest.mark.parametrize(
        "existing",
        ["mirrors: {}\n", "mirrors:\n", "mirrors:\n  docker.io:\n", "mirrors:\n  docker.io: {endpoint:}\n"],
        ids=["empty-mapping", "null-mirrors", "null-entry", "null-endpoint"],
    )
    def test_fills_empty_values(self, existing: str) -> None:
        """Empty mirrors, entries or endpoint lists are filled in."""
        merged = yaml.safe_load(merge_registries_yaml(existing, MIRROR, ["docker.io"]))
        assert merged == {"mirrors": {"docker.io": {"endpoint": [MIRROR]}}}

    def test_already_configured_text_is_returned_verbatim(self) -> None:
        """When nothing is missing the existing text, comments included, comes back as is."""
        existing = (
            "# managed by hand\n"
            "mirrors:\n"
            "  docker.io:\n"
            "    endpoint:\n"
            "      - http://198.18.1.1:5000/  # the NIC\n"
        )
        assert merge_registries_yaml(existing, MIRROR, ["docker.io"]) == existing

    def test_second_merge_changes_nothing(self) -> None:
        """Merging into our own output returns it unchanged."""
        once = merge_registries_yaml("configs: {}\n", MIRROR, ["docker.io", LAB])
        assert merge_registries_yaml(once, MIRROR, ["docker.io", LAB]) == once

    @pytest.mark.parametrize(
        ("existing", "problem"),
        [
            ("mirrors:\n  docker.io: [\n", r"not valid YAML \(line 3, column 1"),
            ("- a\n- b\n", "YAML list, not a mapping"),
            ("mirrors: [docker.io]\n", "'mirrors' is not a mapping"),
            ("mirrors:\n  docker.io: x\n", "'mirrors.docker.io' is not a mapping"),
            ("mirrors:\n  docker.io: {endpoint: x}\n", "'mirrors.docker.io.endpoint' is not a list"),
        ],
        ids=["unclosed-flow", "top-level-list", "mirrors-list", "entry-string", "endpoint-string"],
    )
    def test_refuses_what_it_cannot_merge(self, existing: str, problem: str) -> None:
        """Invalid YAML or an unexpected shape is refused with the reason."""
        with pytest.raises(UnsafeToEdit, match=problem):
            merge_registries_yaml(existing, MIRROR, ["docker.io"])


class TestFileChange:
    @pytest.mark.parametrize(
        ("old", "new", "changed"),
        [(None, "a\n", True), ("a\n", "a\n", False), ("a\n", "b\n", True)],
        ids=["created", "same", "edited"],
    )
    def test_changed(self, old: str | None, new: str, changed: bool) -> None:
        """A change exists when the file is missing or its text differs."""
        assert FileChange(path="f", old=old, new=new).changed is changed

    def test_diff_of_new_file_starts_at_dev_null(self) -> None:
        """A file that does not exist yet is diffed against /dev/null."""
        diff = FileChange(path="etc/f", old=None, new="x\n").diff()
        assert diff == "--- /dev/null\n+++ etc/f\n@@ -0,0 +1 @@\n+x\n"

    def test_diff_marks_missing_final_newline(self) -> None:
        """A file without a final newline still gives a well-formed diff."""
        diff = FileChange(path="f", old="x", new="x\n").diff()
        assert diff == "--- f\n+++ f\n@@ -1 +1 @@\n-x\n\\ No newline at end of file\n+x\n"

    def test_no_diff_when_unchanged(self) -> None:
        """An unchanged file diffs to nothing."""
        assert FileChange(path="f", old="x\n", new="x\n").diff() == ""


class TestBackupPath:
    def test_first_backup_is_dot_bak(self, tmp_path: Path) -> None:
        """With no backup yet the name is `<file>.bak`."""
        assert backup_path(tmp_path / "d.json", exists=os.path.lexists) == tmp_path / "d.json.bak"

    def test_never_overwrites_an_older_backup(self, tmp_path: Path) -> None:
        """Taken names are skipped, so the first original is never lost."""
        (tmp_path / "d.json.bak").write_text("1")
        (tmp_path / "d.json.bak.1").write_text("2")
        assert backup_path(tmp_path / "d.json", exists=os.path.lexists) == tmp_path / "d.json.bak.2"


class TestWriteAtomic:
    def test_keeps_mode_and_leaves_no_temp_file(self, tmp_path: Path) -> None:
        """The replaced file keeps its mode and no temp file is left behind."""
        path = tmp_path / "daemon.json"
        path.write_text("{}")
        path.chmod(0o600)
        write_atomic(path, '{"debug": true}\n')
        assert path.read_text() == '{"debug": true}\n'
        assert path.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.json"]

    def test_new_file_is_world_readable(self, tmp_path: Path) -> None:
        """A new file gets 0644, not mkstemp's 0600."""
        path = tmp_path / "hosts.toml"
        write_atomic(path, "x\n")
        assert path.stat().st_mode & 0o777 == 0o644


def run(*args: str) -> tuple[int, str, str]:
    """Invoke `mirror-config` with `args`; returns exit code, stdout and stderr."""
    result = CliRunner().invoke(mirror_config, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class TestContainerdCommand:
    def test_writes_one_hosts_toml_per_registry(self, tmp_path: Path) -> None:
        """Each registry's hosts.toml is created and parses back."""
        code, out, _ = run(
            "containerd", "--mirror", MIRROR, "--registry", "docker.io", "--registry", LAB,
            "--config-path", str(tmp_path),
        )  # fmt: skip
        assert code == 0
        assert set(snapshot(tmp_path)) == {"docker.io/hosts.toml", "registry.lab/hosts.toml"}
        lab = tomllib.loads((tmp_path / "registry.lab/hosts.toml").read_text())
        assert lab["server"] == "http://198.18.0.1:5000"
        assert out.count("created ") == 2

    def test_registry_defaults_to_docker_hub(self, tmp_path: Path) -> None:
        """Without --registry only docker.io is configured."""
        run("containerd", "--mirror", MIRROR, "--config-path", str(tmp_path))
        assert set(snapshot(tmp_path)) == {"docker.io/hosts.toml"}

    def test_second_run_changes_nothing_and_says_so(self, tmp_path: Path) -> None:
        """Running again leaves every byte alone, makes no backup and says so."""
        args = ("containerd", "--mirror", MIRROR, "--config-path", str(tmp_path))
        run(*args)
        before = snapshot(tmp_path)
        code, out, _ = run(*args)
        assert code == 0
        assert snapshot(tmp_path) == before
        assert "nothing to change" in out

    def test_replaces_a_valid_file_and_keeps_a_backup(self, tmp_path: Path) -> None:
        """A different but valid hosts.toml is replaced and the original kept as .bak."""
        old = 'server = "https://registry-1.docker.io"\n'
        (tmp_path / "docker.io").mkdir()
        (tmp_path / "docker.io/hosts.toml").write_text(old)
        code, out, _ = run("containerd", "--mirror", MIRROR, "--config-path", str(tmp_path))
        assert code == 0
        assert (tmp_path / "docker.io/hosts.toml.bak").read_text() == old
        assert MIRROR in (tmp_path / "docker.io/hosts.toml").read_text()
        assert "hosts.toml.bak" in out

    def test_broken_file_stops_the_whole_run(self, tmp_path: Path) -> None:
        """One unparsable hosts.toml is named, nothing at all is written, exit is non-zero."""
        (tmp_path / "registry.lab").mkdir()
        (tmp_path / "registry.lab/hosts.toml").write_text("server = [\n")
        before = snapshot(tmp_path)
        code, _, err = run(
            "containerd", "--mirror", MIRROR, "--registry", "docker.io", "--registry", LAB,
            "--config-path", str(tmp_path),
        )  # fmt: skip
        assert code == 1
        assert snapshot(tmp_path) == before
        assert f"refusing to change {tmp_path}/registry.lab/hosts.toml" in err
        assert "not valid TOML" in err
        assert "Traceback" not in err

    def test_dry_run_prints_a_diff_and_writes_nothing(self, tmp_path: Path) -> None:
        """--dry-run prints unified diffs on stdout and creates no file."""
        code, out, err = run(
            "containerd", "--mirror", MIRROR, "--config-path", str(tmp_path / "certs.d"),
            "--dry-run",
        )  # fmt: skip
        assert code == 0
        assert list(tmp_path.iterdir()) == []
        assert out.startswith(f"--- /dev/null\n+++ {tmp_path}/certs.d/docker.io/hosts.toml\n")
        assert '+server = "https://registry-1.docker.io"\n' in out
        assert "1 of 1 file(s) would change; nothing written" in err

    @pytest.mark.parametrize(
        ("args", "problem"),
        [
            (("--mirror", "198.18.1.1:5000"), "must start with http"),
            (("--mirror", MIRROR, "--registry", "a/b"), "not a registry host"),
            (("--mirror", MIRROR, "--skip-verify"), "https mirror"),
            (("--mirror", MIRROR, "--dial-timeout", "-1"), "-1"),
        ],
        ids=["mirror", "registry", "skip-verify-http", "negative-timeout"],
    )
    def test_bad_arguments_are_usage_errors(
        self, tmp_path: Path, args: tuple[str, ...], problem: str
    ) -> None:
        """Bad arguments exit 2 with a readable message and write nothing."""
        code, _, err = run("containerd", *args, "--config-path", str(tmp_path))
        assert code == 2
        assert problem in err
        assert list(tmp_path.iterdir()) == []


class TestDockerCommand:
    def test_merges_into_existing_file_with_backup(self, tmp_path: Path) -> None:
        """Other keys are kept, the mirror is added and the old file kept as .bak."""
        path = tmp_path / "daemon.json"
        old = '{"bridge": "none", "registry-mirrors": ["https://mirror.gcr.io"]}\n'
        path.write_text(old)
        code, out, _ = run("docker", "--mirror", MIRROR, "--daemon-json", str(path))
        assert code == 0
        assert json.loads(path.read_text()) == {
            "bridge": "none",
            "registry-mirrors": [MIRROR, "https://mirror.gcr.io"],
            "insecure-registries": ["198.18.1.1:5000"],
        }
        assert (tmp_path / "daemon.json.bak").read_text() == old
        assert f"updated {path}" in out

    def test_creates_missing_file_and_directory(self, tmp_path: Path) -> None:
        """A missing daemon.json (and its directory) is created, with no backup."""
        path = tmp_path / "docker/daemon.json"
        code, out, _ = run("docker", "--mirror", MIRROR, "--daemon-json", str(path))
        assert code == 0
        assert json.loads(path.read_text())["registry-mirrors"] == [MIRROR]
        assert snapshot(tmp_path).keys() == {"docker/daemon.json"}
        assert f"created {path}" in out

    def test_second_run_changes_nothing_and_says_so(self, tmp_path: Path) -> None:
        """Running again leaves every byte alone, makes no new backup and says so."""
        path = tmp_path / "daemon.json"
        path.write_text('{"debug": true}')
        args = ("docker", "--mirror", MIRROR, "--daemon-json", str(path))
        run(*args)
        before = snapshot(tmp_path)
        code, out, _ = run(*args)
        assert code == 0
        assert snapshot(tmp_path) == before
        assert f"unchanged {path}" in out
        assert "nothing to change" in out

    def test_later_change_keeps_the_first_backup(self, tmp_path: Path) -> None:
        """A second change backs up to .bak.1 and leaves the original .bak alone."""
        path = tmp_path / "daemon.json"
        path.write_text("{}")
        run("docker", "--mirror", MIRROR, "--daemon-json", str(path))
        run("docker", "--mirror", TLS_MIRROR, "--daemon-json", str(path))
        assert (tmp_path / "daemon.json.bak").read_text() == "{}"
        assert json.loads((tmp_path / "daemon.json.bak.1").read_text())["registry-mirrors"] == [MIRROR]

    def test_writes_through_a_symlink(self, tmp_path: Path) -> None:
        """A symlinked daemon.json stays a symlink and its target is updated."""
        target = tmp_path / "real.json"
        target.write_text("{}")
        link = tmp_path / "daemon.json"
        link.symlink_to(target)
        run("docker", "--mirror", MIRROR, "--daemon-json", str(link))
        assert link.is_symlink()
        assert json.loads(target.read_text())["registry-mirrors"] == [MIRROR]

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            (b'{"debug": true,,}', "not valid JSON (line 1, column 16"),
            (b"\xff\xfe{}", "not UTF-8"),
            (b'{"registry-mirrors": "x"}', "is not a list of strings"),
        ],
        ids=["json", "encoding", "shape"],
    )
    def test_broken_file_is_refused_and_untouched(self, tmp_path: Path, content: bytes, problem: str) -> None:
        """An unparsable daemon.json is named with the reason, left alone, exit 1."""
        path = tmp_path / "daemon.json"
        path.write_bytes(content)
        code, _, err = run("docker", "--mirror", MIRROR, "--daemon-json", str(path))
        assert code == 1
        assert path.read_bytes() == content
        assert snapshot(tmp_path).keys() == {"daemon.json"}
        assert f"refusing to change {path}" in err
        assert problem in err

    def test_dry_run_prints_a_diff_and_writes_nothing(self, tmp_path: Path) -> None:
        """--dry-run shows the change as a diff and leaves the file as it was."""
        path = tmp_path / "daemon.json"
        path.write_text('{\n  "debug": true\n}\n')
        code, out, _ = run("docker", "--mirror", MIRROR, "--daemon-json", str(path), "--dry-run")
        assert code == 0
        assert path.read_text() == '{\n  "debug": true\n}\n'
        assert snapshot(tmp_path).keys() == {"daemon.json"}
        assert out.startswith(f"--- {path}\n+++ {path}\n")
        assert f'+  "registry-mirrors": [\n+    "{MIRROR}"\n' in out

    def test_dry_run_with_nothing_to_do_prints_no_diff(self, tmp_path: Path) -> None:
        """--dry-run on a configured file prints an empty diff and says nothing would change."""
        path = tmp_path / "daemon.json"
        run("docker", "--mirror", MIRROR, "--daemon-json", str(path))
        code, out, err = run("docker", "--mirror", MIRROR, "--daemon-json", str(path), "--dry-run")
        assert (code, out) == (0, "")
        assert "0 of 1 file(s) would change" in err


class TestK3sCommand:
    def test_merges_and_keeps_configs(self, tmp_path: Path) -> None:
        """configs: survives, each registry gets the mirror, the old file is kept as .bak."""
        path = tmp_path / "registries.yaml"
        old = "configs:\n  registry.lab:\n    tls: {insecure_skip_verify: true}\n"
        path.write_text(old)
        code, _, _ = run(
            "k3s", "--mirror", MIRROR, "--registry", "docker.io", "--registry", LAB,
            "--registries-yaml", str(path),
        )  # fmt: skip
        assert code == 0
        assert yaml.safe_load(path.read_text()) == {
            "configs": {"registry.lab": {"tls": {"insecure_skip_verify": True}}},
            "mirrors": {
                "docker.io": {"endpoint": [MIRROR]},
                "registry.lab": {"endpoint": [MIRROR, "http://198.18.0.1:5000"]},
            },
        }
        assert (tmp_path / "registries.yaml.bak").read_text() == old

    def test_second_run_changes_nothing_and_says_so(self, tmp_path: Path) -> None:
        """Running again leaves every byte alone and says so."""
        path = tmp_path / "k3s/registries.yaml"
        args = ("k3s", "--mirror", MIRROR, "--registry", LAB, "--registries-yaml", str(path))
        run(*args)
        before = snapshot(tmp_path)
        code, out, _ = run(*args)
        assert code == 0
        assert snapshot(tmp_path) == before
        assert "nothing to change" in out

    def test_broken_file_is_refused_and_untouched(self, tmp_path: Path) -> None:
        """Unparsable YAML is named with its line, left alone, exit 1."""
        path = tmp_path / "registries.yaml"
        path.write_text("mirrors:\n  docker.io: [\n")
        code, _, err = run("k3s", "--mirror", MIRROR, "--registries-yaml", str(path))
        assert code == 1
        assert path.read_text() == "mirrors:\n  docker.io: [\n"
        assert snapshot(tmp_path).keys() == {"registries.yaml"}
        assert f"refusing to change {path}: it is not valid YAML (line 3" in err

    def test_dry_run_prints_a_diff_and_writes_nothing(self, tmp_path: Path) -> None:
        """--dry-run prints the new file as a diff and creates nothing."""
        path = tmp_path / "registries.yaml"
        code, out, _ = run("k3s", "--mirror", MIRROR, "--registries-yaml", str(path), "--dry-run")
        assert code == 0
        assert not path.exists()
        assert out == (
            f"--- /dev/null\n+++ {path}\n@@ -0,0 +1,4 @@\n"
            f"+mirrors:\n+  docker.io:\n+    endpoint:\n+    - {MIRROR}\n"
        )
