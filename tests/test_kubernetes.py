"""deploy/kubernetes: manifests rendered from one values file validate against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: no unknown fields), and so does
faas-netes' gateway Deployment once the hook patch is applied."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from faas_accel.cli import main
from faas_accel.install.errors import InvalidValue
from faas_accel.install.examples import kubernetes_examples
from faas_accel.install.kubernetes import gateway_patch, load_values, manifests, merge_values

REPO = Path(__file__).resolve().parents[1]
VALUES = REPO / "deploy" / "kubernetes" / "values.yaml"
K8S = "1.30.0"  # the oldest release the schemas cover that faas-netes still supports


def faas_netes_gateway() -> dict[str, Any]:
    """The gateway Deployment as the OpenFaaS chart lays it out (gateway + faas-netes)."""
    labels = {"app": "gateway"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gateway", "namespace": "openfaas"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "openfaas-controller",
                    "containers": [
                        {
                            "name": "gateway",
                            "image": "ghcr.io/openfaas/gateway:0.27.12",
                            "env": [
                                {"name": "read_timeout", "value": "65s"},
                                {"name": "functions_provider_url", "value": "http://127.0.0.1:8081/"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        },
                        {
                            "name": "faas-netes",
                            "image": "ghcr.io/openfaas/faas-netes:0.18.13",
                            "env": [{"name": "port", "value": "8081"}],
                        },
                    ],
                },
            },
        },
    }


def strategic_merge(base: Any, patch: Any) -> Any:
    """Enough of kubectl's strategic merge for this patch: maps merge, lists of named
    objects merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        merged = {x["name"]: x for x in base}
        for item in patch:
            merged[item["name"]] = (
                strategic_merge(merged[item["name"]], item) if item["name"] in merged else item
            )
        return list(merged.values())
    return patch


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S, strict=True)


class TestManifests:
    def test_every_manifest_validates(self) -> None:
        """Each document of faas-accel.yaml is a valid, strict Kubernetes object."""
        docs = manifests(load_values(VALUES))
        assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]
        for doc in docs:
            validate(doc)

    def test_patched_gateway_validates_and_points_at_the_hook(self) -> None:
        """The patch adds the hook sidecar and moves functions_provider_url to it."""
        values = load_values(VALUES)
        patched = strategic_merge(faas_netes_gateway(), gateway_patch(values))
        validate(patched)
        containers = {c["name"]: c for c in patched["spec"]["template"]["spec"]["containers"]}
        assert set(containers) == {"gateway", "faas-netes", "faas-accel-hook"}
        env = {e["name"]: e.get("value") for e in containers["gateway"]["env"]}
        assert env == {"read_timeout": "65s", "functions_provider_url": "http://127.0.0.1:8082/"}
        hook = containers["faas-accel-hook"]["command"]
        assert hook[hook.index("--provider") + 1] == "http://127.0.0.1:8081"
        assert hook[hook.index("--bind") + 1] == "127.0.0.1:8082"

    def test_a_wrong_field_fails_validation(self) -> None:
        """The validator is strict: a misspelt probe field is refused."""
        ds = copy.deepcopy(manifests(load_values(VALUES))[-1])
        ds["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(ds)

    def test_daemonset_writes_hosts_toml_and_serves_on_the_host(self) -> None:
        """hostNetwork, probes and limits on every container; the init container writes a
        hosts.toml for each upstream and for the rewritten 127.0.0.1 references."""
        values = merge_values(
            {
                "cache": {
                    "upstreams": {"docker.io": "https://registry-1.docker.io", "ghcr.io": "https://ghcr.io"}
                }
            }
        )
        ds = manifests(values)[-1]
        pod = ds["spec"]["template"]["spec"]
        assert pod["hostNetwork"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["resources"]["limits"] and c["securityContext"]["runAsNonRoot"] is True
        assert "readinessProbe" in pod["containers"][0] and "livenessProbe" in pod["containers"][0]
        args = pod["initContainers"][0]["command"]
        regs = [args[i + 1] for i, a in enumerate(args) if a == "--registry"]
        assert regs == [
            "docker.io=https://registry-1.docker.io",
            "ghcr.io=https://ghcr.io",
            "127.0.0.1:5000=http://127.0.0.1:5000",
        ]
        config = yaml.safe_load(manifests(values)[2]["data"]["nic-cache.yml"])
        assert config["upstreams"]["ghcr.io"] == {"url": "https://ghcr.io"}
        validate(ds)

    def test_cache_config_loads(self) -> None:
        """nic-cache.yml in the ConfigMap loads with the cache's own parser."""
        from nic_cache.config import load_config

        data = manifests(load_values(VALUES))[2]["data"]
        assert load_config(data["nic-cache.yml"], {"NIC_CACHE_ADMIN_TOKEN": "t"}).admin_token == "t"

    def test_prewarm_file_checks(self, tmp_path: Path) -> None:
        """`faas-accel prewarm check` accepts the rendered prewarm.yml."""
        data = manifests(load_values(VALUES))[2]["data"]
        (tmp_path / "prewarm.yml").write_text(data["prewarm.yml"])
        res = CliRunner(env={"NIC_CACHE_ADMIN_TOKEN": "t"}).invoke(
            main, ["prewarm", "check", "--config", str(tmp_path / "prewarm.yml")]
        )
        assert res.exit_code == 0, res.output

    def test_unknown_value_is_refused(self) -> None:
        """A misspelt key in the values file is named."""
        with pytest.raises(InvalidValue, match=r"cache\.capacty: unknown key"):
            merge_values({"cache": {"capacty": "1GiB"}})
        with pytest.raises(InvalidValue, match=r"cache\.port: must be a int"):
            merge_values({"cache": {"port": "5000"}})

    def test_rendered_examples_are_current(self) -> None:
        """deploy/kubernetes/rendered is what values.yaml renders to."""
        for name, text in kubernetes_examples(REPO).items():
            assert (REPO / "deploy/kubernetes/rendered" / name).read_text() == text, (
                f"rendered/{name} is stale: run .venv/bin/python -m faas_accel.install.examples"
            )

    def test_cli_writes_both_files(self, tmp_path: Path) -> None:
        """`install kubernetes --values --out` writes the apply stream and the patch."""
        res = CliRunner().invoke(
            main, ["install", "kubernetes", "--values", str(VALUES), "--out", str(tmp_path)]
        )
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["faas-accel.yaml", "gateway-patch.yaml"]
