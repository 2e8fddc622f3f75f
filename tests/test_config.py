"""Tests for nic_cache.config: YAML, ${VAR} expansion and NIC_CACHE_* overrides into frozen dataclasses."""

from __future__ import annotations

import dataclasses
import io
import textwrap
from pathlib import Path

import pytest

from nic_cache.config import Config, UpstreamConfig, load_config, load_config_file
from nic_cache.errors import ConfigError

FULL = """\
listen: 127.0.0.1:5001
data_dir: /srv/cache
capacity: 50GiB
low_watermark: 0.8
admin_token: s3cret
default_upstream: docker.io
tag_ttl: 15m
platforms: [linux/amd64, linux/arm64/v8]
connect_timeout: 2s
read_timeout: 1m
retries: 0
workers: 2
threads: 8
upstreams:
  docker.io:
    url: https://registry-1.docker.io/
    username: bob
    password: hunter2
  registry.lab:5000: http://198.18.0.1:5000
  ghcr.io:
    url: https://ghcr.io
    tls_verify: false
"""


def load(text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(textwrap.dedent(text), environ or {}, source="nic-cache.yml")


class TestLoad:
    @pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"], ids=["empty", "comment", "marker"])
    def test_empty_document_is_all_defaults(self, text: str) -> None:
        """A config with nothing in it gives the documented defaults."""
        assert load(text) == Config()
        assert Config().capacity == 20 * 1024**3
        assert (Config().host, Config().port) == ("0.0.0.0", 5000)

    def test_full_document(self) -> None:
        """Every key is parsed into its typed field, upstream URLs lose their trailing slash."""
        cfg = load(FULL)
        assert cfg == Config(
            listen="127.0.0.1:5001",
            data_dir="/srv/cache",
            capacity=50 * 1024**3,
            low_watermark=0.8,
            admin_token="s3cret",
            default_upstream="docker.io",
            tag_ttl=900.0,
            platforms=("linux/amd64", "linux/arm64/v8"),
            connect_timeout=2.0,
            read_timeout=60.0,
            retries=0,
            workers=2,
            threads=8,
            upstreams={
                "docker.io": UpstreamConfig(
                    url="https://registry-1.docker.io", username="bob", password="hunter2"
                ),
                "registry.lab:5000": UpstreamConfig(url="http://198.18.0.1:5000"),
                "ghcr.io": UpstreamConfig(url="https://ghcr.io", tls_verify=False),
            },
        )
        assert (cfg.host, cfg.port) == ("127.0.0.1", 5001)

    def test_reads_a_stream(self) -> None:
        """A file-like stream is read like text."""
        assert load_config(io.StringIO("workers: 3\n"), {}).workers == 3

    def test_config_is_frozen(self) -> None:
        """Config is immutable once loaded."""
        with pytest.raises(dataclasses.FrozenInstanceError):
            load("workers: 3\n").workers = 4  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("text", "field", "expected"),
        [
            ("listen: ':8080'\n", "port", 8080),
            ("listen: ':8080'\n", "host", "0.0.0.0"),
            ("capacity: 0\n", "capacity", 0),
            ("capacity: '1000'\n", "capacity", 1000),
            ("low_watermark: 1\n", "low_watermark", 1.0),
            ("platforms: linux/amd64,linux/arm64\n", "platforms", ("linux/amd64", "linux/arm64")),
            ("tag_ttl: 0\n", "tag_ttl", 0.0),
            ("tag_ttl: 1h30m\n", "tag_ttl", 5400.0),
            ("admin_token: null\n", "admin_token", None),
            ("upstreams:\n", "upstreams", {}),
        ],
        ids=[
            "listen-port-only",
            "listen-default-host",
            "capacity-disabled",
            "capacity-digits",
            "watermark-one",
            "platforms-comma-string",
            "ttl-zero",
            "ttl-compound",
            "null-is-default",
            "empty-upstreams",
        ],
    )
    def test_values(self, text: str, field: str, expected: object) -> None:
        """Each value form the comments allow is accepted."""
        assert getattr(load(text), field) == expected


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("workers: 2\ncapacityy: 1GiB\n", r"^nic-cache\.yml:2: unknown key 'capacityy'"),
            ("workers: 2\ncapacity: lots\n", r"^nic-cache\.yml:2: capacity: not a size"),
            ("\n\nlisten: 5000\n", r"^nic-cache\.yml:3: listen: need host:port"),
            ("listen: 'h:70000'\n", r"^nic-cache\.yml:1: listen: need host:port"),
            ("low_watermark: 0\n", r"^nic-cache\.yml:1: low_watermark: need a fraction"),
            ("low_watermark: 1.5\n", r"^nic-cache\.yml:1: low_watermark: need a fraction"),
            ("low_watermark: half\n", r"^nic-cache\.yml:1: low_watermark:"),
            ("retries: -1\n", r"^nic-cache\.yml:1: retries: need a count"),
            ("retries: true\n", r"^nic-cache\.yml:1: retries: need a count"),
            ("retries: [1]\n", r"^nic-cache\.yml:1: retries:"),
            ("workers: 0\n", r"^nic-cache\.yml:1: workers: need an integer >= 1"),
            ("threads: many\n", r"^nic-cache\.yml:1: threads:"),
            ("tag_ttl: soon\n", r"^nic-cache\.yml:1: tag_ttl: not a duration"),
            ("read_timeout: -1\n", r"^nic-cache\.yml:1: read_timeout: duration must not be negative"),
            ("data_dir: ''\n", r"^nic-cache\.yml:1: data_dir: must not be empty"),
            ("platforms: []\n", r"^nic-cache\.yml:1: platforms: need a list"),
            ("platforms: [linux]\n", r"^nic-cache\.yml:1: platforms: need os/arch"),
            ("platforms: [linux//v7]\n", r"^nic-cache\.yml:1: platforms: need os/arch"),
        ],
        ids=[
            "unknown-key",
            "bad-size",
            "listen-no-port",
            "listen-port-range",
            "watermark-zero",
            "watermark-above-one",
            "watermark-word",
            "retries-negative",
            "retries-bool",
            "retries-list",
            "workers-zero",
            "threads-word",
            "bad-duration",
            "negative-duration",
            "empty-data-dir",
            "no-platforms",
            "platform-no-arch",
            "platform-empty-arch",
        ],
    )
    def test_bad_value_names_line_and_key(self, text: str, message: str) -> None:
        """A bad top-level value is a ConfigError naming file:line and the key."""
        with pytest.raises(ConfigError, match=message):
            load(text)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("upstreams: [docker.io]\n", r"^nic-cache\.yml:1: upstreams: must map registry hosts"),
            ("upstreams:\n  bad_host: https://x\n", r"^nic-cache\.yml:2: upstreams: invalid registry host"),
            (
                "upstreams:\n  ghcr.io: ftp://ghcr.io\n",
                r"^nic-cache\.yml:2: upstreams\.ghcr\.io\.url: need an http",
            ),
            ("upstreams:\n  ghcr.io: {tls_verify: false}\n", r"^nic-cache\.yml:2: upstreams\.ghcr\.io\.url"),
            ("upstreams:\n  ghcr.io: https://\n", r"^nic-cache\.yml:2: upstreams\.ghcr\.io\.url"),
            ("upstreams:\n  ghcr.io: 42\n", r"^nic-cache\.yml:2: upstreams\.ghcr\.io: must be a mapping"),
            (
                "upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    user: bob\n",
                r"^nic-cache\.yml:4: upstreams\.ghcr\.io: unknown key 'user'",
            ),
            (
                "upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    username: bob\n",
                r"^nic-cache\.yml:2: upstreams\.ghcr\.io: username and password go together",
            ),
            (
                "upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    tls_verify: 'no'\n",
                r"^nic-cache\.yml:2: upstreams\.ghcr\.io\.tls_verify: must be true or false",
            ),
            (
                "default_upstream: quay.io\nupstreams:\n  ghcr.io: https://ghcr.io\n",
                r"^nic-cache\.yml:1: default_upstream: 'quay\.io' is not one of the upstreams \(ghcr\.io\)",
            ),
            ("default_upstream: quay.io\n", r"none configured"),
        ],
        ids=[
            "upstreams-list",
            "bad-host",
            "ftp-url",
            "no-url",
            "url-no-host",
            "spec-int",
            "unknown-key",
            "username-alone",
            "tls-verify-string",
            "default-not-configured",
            "default-without-upstreams",
        ],
    )
    def test_bad_upstream_names_line_and_key(self, text: str, message: str) -> None:
        """A bad upstream is a ConfigError naming file:line and the dotted key."""
        with pytest.raises(ConfigError, match=message):
            load(text)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("workers: [1\n", r"^nic-cache\.yml: invalid YAML"),
            ("a: b\n---\nc: d\n", r"^nic-cache\.yml: invalid YAML"),
            ("- a\n- b\n", r"^nic-cache\.yml: the config must be a mapping"),
            ("just text\n", r"^nic-cache\.yml: the config must be a mapping"),
        ],
        ids=["syntax", "two-documents", "list", "scalar"],
    )
    def test_not_a_mapping(self, text: str, message: str) -> None:
        """Broken YAML and non-mapping documents are ConfigErrors naming the source."""
        with pytest.raises(ConfigError, match=message):
            load(text)


class TestExpansion:
    @pytest.mark.parametrize(
        ("text", "environ", "field", "expected"),
        [
            ("admin_token: ${TOKEN}\n", {"TOKEN": "t0k"}, "admin_token", "t0k"),
            ("data_dir: /srv/${NAME}/data\n", {"NAME": "nic"}, "data_dir", "/srv/nic/data"),
            ("capacity: ${CAP:-10GiB}\n", {}, "capacity", 10 * 1024**3),
            ("capacity: ${CAP:-10GiB}\n", {"CAP": "1GiB"}, "capacity", 1024**3),
            ("workers: ${W}\n", {"W": "6"}, "workers", 6),
            ("listen: ${HOST:-0.0.0.0}:${PORT}\n", {"PORT": "7000"}, "listen", "0.0.0.0:7000"),
            ("admin_token: $TOKEN\n", {"TOKEN": "x"}, "admin_token", "$TOKEN"),
            ("admin_token: ${A}${B}\n", {"A": "${B}", "B": "z"}, "admin_token", "${B}z"),
            ("platforms: ['${P:-linux/arm64}']\n", {}, "platforms", ("linux/arm64",)),
        ],
        ids=[
            "plain",
            "embedded",
            "default-used",
            "default-ignored",
            "number",
            "two-vars",
            "no-braces-literal",
            "not-recursive",
            "inside-list",
        ],
    )
    def test_expands(self, text: str, environ: dict[str, str], field: str, expected: object) -> None:
        """${VAR} and ${VAR:-default} are replaced once, from the given environ, before validation."""
        assert getattr(load(text, environ), field) == expected

    def test_expands_upstream_credentials(self) -> None:
        """Secrets for upstreams come from the environment."""
        text = (
            "upstreams:\n  ghcr.io:\n    url: ${GHCR_URL:-https://ghcr.io}\n"
            "    username: ${U}\n    password: ${P}\n"
        )
        cfg = load(text, {"U": "bob", "P": "pw"})
        assert cfg.upstreams["ghcr.io"] == UpstreamConfig(
            url="https://ghcr.io", username="bob", password="pw"
        )

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (
                "admin_token: ${TOKEN}\n",
                r"^nic-cache\.yml:1: admin_token: environment variable TOKEN is not set",
            ),
            (
                "workers: 2\nupstreams:\n  ghcr.io:\n    url: https://ghcr.io\n"
                "    username: u\n    password: ${PW}\n",
                r"^nic-cache\.yml:6: upstreams\.ghcr\.io\.password: environment variable PW is not set",
            ),
        ],
        ids=["top-level", "nested"],
    )
    def test_unset_variable_names_line_and_key(self, text: str, message: str) -> None:
        """An unset variable without default is a ConfigError naming file:line, the key and the variable."""
        with pytest.raises(ConfigError, match=message):
            load(text)

    def test_empty_variable_takes_the_default(self) -> None:
        """${VAR:-default} uses the default when VAR is set but empty, as the shell and compose do."""
        assert load("capacity: ${CAP:-10GiB}\n", {"CAP": ""}).capacity == 10 * 1024**3

    @pytest.mark.parametrize(("value", "expected"), [("false", False), ("true", True)], ids=["false", "true"])
    def test_tls_verify_from_variable(self, value: str, expected: bool) -> None:
        """tls_verify, the one boolean, can be set from the environment like every other value."""
        text = "upstreams:\n  lab.io:\n    url: https://lab.io\n    tls_verify: ${TLS_VERIFY}\n"
        assert load(text, {"TLS_VERIFY": value}).upstreams["lab.io"].tls_verify is expected

    def test_reads_no_process_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """load_config sees only the environ it is given, not os.environ."""
        monkeypatch.setenv("TOKEN", "leak")
        monkeypatch.setenv("NIC_CACHE_WORKERS", "9")
        with pytest.raises(ConfigError, match="TOKEN is not set"):
            load("admin_token: ${TOKEN}\n", {})
        assert load("workers: 2\n", {}).workers == 2


class TestEnvOverrides:
    @pytest.mark.parametrize(
        ("environ", "field", "expected"),
        [
            ({"NIC_CACHE_CAPACITY": "1GiB"}, "capacity", 1024**3),
            ({"NIC_CACHE_WORKERS": "7"}, "workers", 7),
            ({"NIC_CACHE_LISTEN": "127.0.0.1:9"}, "listen", "127.0.0.1:9"),
            ({"NIC_CACHE_ADMIN_TOKEN": "env-token"}, "admin_token", "env-token"),
            ({"NIC_CACHE_LOW_WATERMARK": "0.5"}, "low_watermark", 0.5),
            ({"NIC_CACHE_TAG_TTL": "5m"}, "tag_ttl", 300.0),
            ({"NIC_CACHE_data_dir": "/x"}, "data_dir", "/x"),
            ({"NIC_CACHE_CONFIG": "/etc/nic.yml", "NIC_CACHE_ACCESS_LOG": "-"}, "workers", 3),
            ({"NIC_CACHE_PLATFORMS": "linux/s390x"}, "platforms", ("linux/amd64",)),
            ({"NIC_CACHE_UPSTREAMS": "x"}, "upstreams", {}),
        ],
        ids=[
            "capacity",
            "workers",
            "listen",
            "admin-token",
            "watermark",
            "ttl",
            "lowercase-suffix",
            "unrelated-vars-ignored",
            "platforms-not-overridable",
            "upstreams-not-overridable",
        ],
    )
    def test_override_beats_file(self, environ: dict[str, str], field: str, expected: object) -> None:
        """NIC_CACHE_<KEY> replaces a top-level scalar from the file; other prefixed variables are ignored."""
        text = "workers: 3\ncapacity: 5GiB\nadmin_token: file-token\ntag_ttl: 1h\n"
        assert getattr(load(text, environ), field) == expected

    def test_bad_override_names_the_key_without_a_file_line(self) -> None:
        """A bad override's error names the key but no line, since the value did not come from the file."""
        with pytest.raises(ConfigError, match=r"^nic-cache\.yml: workers: ") as info:
            load("workers: 3\n", {"NIC_CACHE_WORKERS": "zero"})
        assert "nic-cache.yml:1" not in str(info.value)

    def test_override_is_not_expanded(self) -> None:
        """An override's value is taken literally, not searched for ${VAR}."""
        assert load("", {"NIC_CACHE_ADMIN_TOKEN": "${X}"}).admin_token == "${X}"

    def test_plain_seconds_override(self) -> None:
        """NIC_CACHE_TAG_TTL=300 means 300 seconds: env values are text and durations take plain numbers."""
        assert load("", {"NIC_CACHE_TAG_TTL": "300"}).tag_ttl == 300.0


class TestLoadConfigFile:
    def test_reads_file_with_os_environ(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """load_config_file expands from os.environ by default and applies its overrides."""
        path = tmp_path / "nic-cache.yml"
        path.write_text("admin_token: ${TOKEN}\nworkers: 2\n")
        monkeypatch.setenv("TOKEN", "from-env")
        monkeypatch.setenv("NIC_CACHE_WORKERS", "5")
        cfg = load_config_file(str(path))
        assert (cfg.admin_token, cfg.workers) == ("from-env", 5)

    def test_errors_name_the_file(self, tmp_path: Path) -> None:
        """Errors from a file carry its path and the line."""
        path = tmp_path / "nic-cache.yml"
        path.write_text("workers: 2\nbogus: 1\n")
        with pytest.raises(ConfigError, match=rf"^{path}:2: unknown key 'bogus'"):
            load_config_file(str(path), {})

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming it."""
        path = tmp_path / "absent.yml"
        with pytest.raises(ConfigError, match=rf"^{path}: cannot read config"):
            load_config_file(str(path), {})


class TestTrustKeys:
    def test_trust_keys_parse(self) -> None:
        """verify_on_start, the pull-log bounds, access_ttl, public and realms are read."""
        config = load(
            "verify_on_start: digests\npull_log_max_age: 2d\npull_log_max_rows: 500\naccess_ttl: 30s\n"
            "upstreams:\n  lab.io: {url: 'http://lab.io', public: 'true',"
            " realms: ['https://auth.lab.io/token']}\n"
        )
        assert (config.verify_on_start, config.pull_log_max_age, config.pull_log_max_rows) == (
            "digests", 2 * 86400.0, 500,
        )
        assert config.access_ttl == 30.0
        assert config.upstreams["lab.io"].public is True
        assert config.upstreams["lab.io"].realms == ("https://auth.lab.io/token",)

    @pytest.mark.parametrize(
        ("text", "message"),
        [("verify_on_start: always\n", r"verify_on_start: need sizes, digests or off"),
         ("upstreams:\n  lab.io: {url: 'http://lab.io', realms: ['http://auth.lab.io/t']}\n",
          r"^nic-cache\.yml:2: upstreams\.lab\.io\.realms: need a list of https"),
         ("upstreams:\n  lab.io: {url: 'http://lab.io', public: 3}\n",
          r"upstreams\.lab\.io\.public: must be true or false")],
        ids=["verify-mode", "http-realm", "public-int"],
    )  # fmt: skip
    def test_bad_trust_keys(self, text: str, message: str) -> None:
        """Bad values are refused naming the key (an http realm on another host never gets credentials)."""
        with pytest.raises(ConfigError, match=message):
            load(text)


class TestTranscode:
    def test_defaults_and_a_full_section(self) -> None:
        """zstd level 3 by default; every key read, `off` as YAML reads it, per-upstream opt-out."""
        assert (Config().transcode.encoding, Config().transcode.level) == ("zstd", 3)
        cfg = load(
            """
            upstreams:
              registry.lab: {url: "http://198.18.0.1:5000", transcode: false}
            transcode: {encoding: off, level: 9, digest_pinned: true, mirror_form: yes, wait: 30s}
            """
        )
        t = cfg.transcode
        assert (t.encoding, t.level, t.digest_pinned, t.mirror_form, t.wait) == ("off", 9, True, True, 30.0)
        assert cfg.upstreams["registry.lab"].transcode is False

    @pytest.mark.parametrize(
        "section, message",
        [
            (
                "transcode: {encoding: brotli}",
                r"^nic-cache\.yml:2: transcode\.encoding: must be zstd, tar or off",
            ),
            ("transcode: {level: 30}", r"transcode\.level: must be an integer from 1 to 19"),
            ("transcode: {speed: 1}", r"transcode: unknown key 'speed'"),
            ("transcode: zstd", r"transcode: must be a mapping"),
        ],
        ids=["encoding", "level", "unknown", "not-a-mapping"],
    )
    def test_bad_sections_name_the_line_and_key(self, section: str, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            load("\n" + section + "\n")


KNOWN = "(known: lru, lfu, gdsf, s3fifo, predictive)"


class TestEviction:
    @pytest.mark.parametrize(
        ("text", "policy", "params"),
        [("", "predictive", {}),
         ("eviction: gdsf\n", "gdsf", {}),
         ("eviction:\n  policy: s3fifo\n  small_share: 0.2\n", "s3fifo", {"small_share": 0.2}),
         ("eviction:\n  max_cv: 0.5\n  bins: 120\n", "predictive", {"max_cv": 0.5, "bins": 120})],
        ids=["default", "short-form", "with-params", "default-policy-with-params"],
    )  # fmt: skip
    def test_policy_and_params(self, text: str, policy: str, params: dict[str, object]) -> None:
        """`eviction:` names a policy (predictive by default: results/policy/) and its parameters."""
        cfg = load(text)
        assert (cfg.eviction.policy, dict(cfg.eviction.params)) == (policy, params)

    @pytest.mark.parametrize(
        ("text", "message"),
        [("eviction: mru\n", f"nic-cache.yml:2: eviction.policy: unknown policy 'mru' {KNOWN}"),
         ("eviction:\n  policy: belady\n",
          f"nic-cache.yml:3: eviction.policy: unknown policy 'belady' {KNOWN}"),
         ("eviction:\n  policy: gdsf\n  size_wieght: 2\n",
          "nic-cache.yml:4: eviction.size_wieght: policy 'gdsf' has no parameter 'size_wieght' "
          "(known: size_weight)"),
         ("eviction:\n  policy: predictive\n  max_cv: -1\n",
          "nic-cache.yml:4: eviction.max_cv: policy 'predictive': max_cv: need a number > 0, got -1.0"),
         ("eviction:\n  bins: lots\n",
          "nic-cache.yml:3: eviction.bins: policy 'predictive': bins: need a whole number, got 'lots'"),
         ("eviction: [lru]\n", "nic-cache.yml:2: eviction: a policy name or a mapping")],
        ids=["unknown", "offline-only", "unknown-param", "out-of-range", "wrong-type", "not-a-mapping"],
    )  # fmt: skip
    def test_bad_policy_or_param_names_file_line_and_reason(self, text: str, message: str) -> None:
        with pytest.raises(ConfigError) as err:
            load("\n" + text)
        assert str(err.value).startswith(message)

    def test_environment_override_names_a_policy(self) -> None:
        assert load("eviction: gdsf\n", {"NIC_CACHE_EVICTION": "lru"}).eviction.policy == "lru"
