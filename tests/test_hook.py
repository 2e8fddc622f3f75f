"""The hook in front of a real faas-provider (faasd semantics over a real containerd), with a
real NIC cache under gunicorn and a real CNCF registry upstream.

Two "VMs" share nothing but the cache: each has its own containerd and provider. Requests
are exactly what faas-cli sends (PUT, POST on 404, basic auth, `labels`/`annotations` `{}`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from faas_accel.hook.app import HookConfig, create_app
from faas_accel.hook.rewrite import ORIGINAL_ANNOTATION, RewritePolicy, plan_deploy, restore_images
from faas_accel.testbed import oci
from faas_accel.testbed.cache import Cache
from faas_accel.testbed.procs import free_port
from faas_accel.testbed.runtimes import Containerd
from tests.conftest import Seeded
from tests.support.faascli import FaasCliError, deploy_stack, stack_deployments
from tests.test_provider import (  # noqa: F401 - provider_factory is a fixture used by name
    PASSWORD,
    USER,
    Served,
    faas_cli_body,
    function_image,
    provider_factory,
    serving,
)

LAB = "registry.lab"
IMAGE = f"{LAB}/lab/hookfn:1"


class TestRewritePlan:
    POLICY = RewritePolicy(mirror_host="nic:5000", deny=frozenset({"quay.io"}))

    @pytest.mark.parametrize(
        ("doc", "accelerated", "reason"),
        [
            ({"service": "f", "image": "python:3.12"}, True, "accelerated"),
            ({"service": "f", "image": "quay.io/x/y:1"}, False, "denied"),
            ({"service": "f", "image": "198.18.0.1:5000/x:1"}, False, "has a port"),
            (
                {"service": "f", "image": "x:1", "annotations": {"com.openfaas.accel/skip": "true"}},
                False,
                "skip",
            ),
            ({"service": "f", "image": "nic:5000/docker.io/library/x:1"}, False, "already names"),
            ({"service": "f"}, False, "no image"),
            ({"service": "f", "image": "UPPER/case"}, False, "not understood"),
        ],
        ids=["docker-hub", "denied", "port", "skip", "already", "no-image", "bad-image"],
    )
    def test_what_is_accelerated(self, doc: dict[str, Any], accelerated: bool, reason: str) -> None:
        """Each deploy is accelerated or forwarded unchanged, with the reason for the log."""
        plan = plan_deploy(json.dumps(doc).encode(), self.POLICY)
        assert plan.accelerate is accelerated
        assert reason in plan.reason

    @pytest.mark.parametrize(("value", "transcode"), [(None, True), ("false", False), ("True", True)])
    def test_transcode_annotation_opts_the_image_out(self, value: str | None, transcode: bool) -> None:
        """`com.openfaas.accel/transcode: "false"` asks the NIC to keep the layers as pushed."""
        doc: dict[str, Any] = {"service": "f", "image": "python:3.12"}
        if value is not None:
            doc["annotations"] = {"com.openfaas.accel/transcode": value}
        plan = plan_deploy(json.dumps(doc).encode(), self.POLICY)
        assert plan.accelerate and plan.transcode is transcode

    def test_bad_json_is_forwarded_unchanged(self) -> None:
        """A body that is not JSON is not touched, so the provider's error reaches the user."""
        assert not plan_deploy(b"{not json", self.POLICY).accelerate

    def test_restore_puts_the_original_back(self) -> None:
        """List responses show the user's image and lose the hook's annotation."""
        listed = [
            {
                "name": "f",
                "image": "nic:5000/docker.io/library/python:3.12",
                "annotations": {ORIGINAL_ANNOTATION: "python:3.12", "keep": "me"},
            }
        ]
        fixed = json.loads(restore_images(json.dumps(listed).encode(), "nic:5000") or b"")
        assert fixed == [{"name": "f", "image": "python:3.12", "annotations": {"keep": "me"}}]

    @pytest.mark.parametrize(
        "image",
        ["ghcr.io/evil/thing:6.6.6", "other:5000/docker.io/library/python:3.12", "nic:5000/docker.io/x/y:1"],
        ids=["not-mirrored", "other-mirror", "other-image"],
    )
    def test_restore_believes_only_a_matching_mirror_form(self, image: str) -> None:
        """The annotation is believed only where the function runs the mirror form of it."""
        listed = {"name": "f", "image": image, "annotations": {ORIGINAL_ANNOTATION: "python:3.12"}}
        assert restore_images(json.dumps(listed).encode(), "nic:5000") is None

    def test_user_supplied_original_annotation_is_dropped(self) -> None:
        """Whether or not the deploy is rewritten, the body forwarded carries no annotation
        the user wrote under the hook's key; other annotations stay."""
        forged = {ORIGINAL_ANNOTATION: "evil:1", "keep": "me"}
        for extra in ({}, {"com.openfaas.accel/skip": "true"}):
            doc = {"service": "f", "image": "python:3.12", "annotations": {**forged, **extra}}
            plan = plan_deploy(json.dumps(doc).encode(), self.POLICY)
            assert json.loads(plan.body)["annotations"] == {"keep": "me", **extra}


@dataclass
class VM:
    """One VM: its containerd, its provider, and the hook in front of it."""

    containerd: Containerd
    provider: Served
    hook_url: str
    http: requests.Session

    def call(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 120)
        return self.http.request(
            method, f"{self.hook_url}{path}", auth=(USER, PASSWORD) if auth else None, **kw
        )

    def deploy(self, name: str, image: str, **extra: Any) -> requests.Response:
        body = json.dumps(faas_cli_body(name, image, **extra))
        resp = self.call("PUT", "/system/functions", data=body)
        if resp.status_code == 404:
            resp = self.call("POST", "/system/functions", data=body)
        return resp


@pytest.fixture(scope="module")
def hook_image(seeded: Seeded) -> oci.Image:
    image = function_image()
    oci.publish(image, seeded.ref("lab/hookfn:1"))
    return image


@pytest.fixture
def nic(seeded: Seeded) -> Iterator[Cache]:
    cache = Cache({LAB: seeded.registry.url}, default_upstream=LAB)
    try:
        yield cache.start()
    finally:
        cache.close()


@pytest.fixture
def make_vm(
    seeded: Seeded,
    containerd_factory: Callable[..., Containerd],
    provider_factory: Callable[..., Served],  # noqa: F811
    tmp_path: Path,
) -> Iterator[Callable[..., VM]]:
    """`make(cache_url) -> VM`; `registry.lab` resolves straight to the upstream (the direct path)."""
    hosts = tmp_path / "certs.d" / LAB
    hosts.mkdir(parents=True)
    up = seeded.registry.url
    hosts.joinpath("hosts.toml").write_text(
        f'server = "{up}"\n[host."{up}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    stack = contextlib.ExitStack()

    def make(cache_url: str, token: str = "test-admin-token") -> VM:
        ctrd = containerd_factory()
        provider = provider_factory(
            "containerd",
            ctrd.address,
            namespace=ctrd.namespace,
            hosts_dir=tmp_path / "certs.d",
            state_dir=tmp_path / ctrd.namespace,
        )
        config = HookConfig(
            provider_url=provider.url,
            cache_url=cache_url,
            cache_token=token,
            prefetch_wait=60,
        )
        url = stack.enter_context(serving(create_app(config)))
        session = stack.enter_context(requests.Session())
        session.trust_env = False
        return VM(ctrd, provider, url, session)

    with stack:
        yield make


class TestHook:
    def test_second_vm_pulls_nothing_upstream(
        self, nic: Cache, make_vm: Callable[..., VM], seeded: Seeded, hook_image: oci.Image
    ) -> None:
        """Deploys through the hook pull from the NIC cache: the upstream serves each blob once
        for two VMs, invocations work, and list/describe show the image the user deployed."""
        vm1, vm2 = make_vm(nic.url), make_vm(nic.url)
        before = seeded.registry.blob_gets()
        for vm in (vm1, vm2):
            resp = vm.deploy("hello", IMAGE)
            assert resp.status_code in (200, 202), resp.text
            answer = vm.call("POST", "/function/hello/cgi-bin/echo?x=1", auth=False, data=b"payload")
            assert answer.status_code == 200
            assert "query=x=1" in answer.text and "payload" in answer.text
            described = vm.call("GET", "/system/function/hello").json()
            assert described["image"] == IMAGE
            assert ORIGINAL_ANNOTATION not in (described.get("annotations") or {})
            assert [f["image"] for f in vm.call("GET", "/system/functions").json()] == [IMAGE]
            # the provider itself ran the mirror form
            direct = vm.provider.system("GET", "/system/function/hello").json()
            assert direct["image"] == f"{nic.host}/{IMAGE}"
        fetched = seeded.registry.blob_gets() - before
        assert {d: fetched[d] for d in hook_image.blob_digests} == {d: 1 for d in hook_image.blob_digests}
        assert set(hook_image.blob_digests) <= nic.stored_blobs()
        assert nic.metric("nic_cache_hits_total") >= len(hook_image.blob_digests)

    def test_auth_status_codes_and_logs_pass_through(
        self, nic: Cache, make_vm: Callable[..., VM], hook_image: oci.Image
    ) -> None:
        """401 without auth, the provider's 404 and 400 bodies, and an ndjson log stream all
        come through the hook unchanged."""
        vm = make_vm(nic.url)
        unauth = vm.call("GET", "/system/functions", auth=False)
        assert unauth.status_code == 401
        assert unauth.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'
        missing = vm.call("PUT", "/system/functions", data=json.dumps(faas_cli_body("nope", IMAGE)))
        assert missing.status_code == 404 and "not found" in missing.text
        bad = vm.call("POST", "/system/functions", data=b"{not json")
        assert bad.status_code == 400
        assert vm.deploy("logger", IMAGE).status_code in (200, 202)
        assert vm.call("GET", "/function/logger/index.html", auth=False).status_code == 200
        logs = vm.call("GET", "/system/logs", params={"name": "logger", "follow": "false"})
        assert logs.status_code == 200
        lines = [json.loads(line) for line in logs.text.splitlines() if line.strip()]
        assert lines and all(line["name"] == "logger" for line in lines)
        assert any("listening on" in line["text"] for line in lines)

    def test_nic_down_deploys_the_original_image(
        self, make_vm: Callable[..., VM], seeded: Seeded, hook_image: oci.Image
    ) -> None:
        """With the cache unreachable the hook fails open: the original image is deployed."""
        vm = make_vm(f"http://127.0.0.1:{free_port()}")
        resp = vm.deploy("fallback", IMAGE)
        assert resp.status_code in (200, 202), resp.text
        assert vm.provider.system("GET", "/system/function/fallback").json()["image"] == IMAGE
        assert vm.call("GET", "/function/fallback/index.html", auth=False).status_code == 200

    def test_skip_annotation_is_honoured(
        self, nic: Cache, make_vm: Callable[..., VM], hook_image: oci.Image
    ) -> None:
        """`com.openfaas.accel/skip: "true"` keeps the original image and fills nothing."""
        vm = make_vm(nic.url)
        resp = vm.deploy("skipped", IMAGE, annotations={"com.openfaas.accel/skip": "true"})
        assert resp.status_code in (200, 202), resp.text
        assert vm.provider.system("GET", "/system/function/skipped").json()["image"] == IMAGE
        assert not set(hook_image.layer_digests) & nic.stored_blobs()


def popular(nic: Cache) -> dict[str, dict[str, Any]]:
    resp = requests.get(f"{nic.url}/api/v1/popular", headers=nic.auth, timeout=10)
    resp.raise_for_status()
    return {p["image"]: p for p in resp.json()["images"]}


def cached_images(nic: Cache) -> set[str]:
    """What `faas-accel cache ls` lists."""
    resp = requests.get(f"{nic.url}/api/v1/images", headers=nic.auth, timeout=10)
    resp.raise_for_status()
    return {i["image"] for i in resp.json()["images"]}


class TestTrust:
    def test_unauthenticated_deploys_fill_nothing_and_count_nothing(
        self, nic: Cache, make_vm: Callable[..., VM], hook_image: oci.Image
    ) -> None:
        """A deploy without credentials, or with wrong ones, gets the provider's 401 and the
        cache is not touched: nothing prefetched, stored, listed or counted."""
        vm = make_vm(nic.url)
        body = json.dumps(faas_cli_body("intruder", IMAGE))
        for method in ("PUT", "POST"):
            anonymous = vm.call(method, "/system/functions", auth=False, data=body)
            assert anonymous.status_code == 401, anonymous.text
            wrong = vm.http.request(method, f"{vm.hook_url}/system/functions", auth=(USER, "guess"),
                                    data=body, timeout=30)  # fmt: skip
            assert wrong.status_code == 401
        assert cached_images(nic) == set()
        assert not set(hook_image.blob_digests) & nic.stored_blobs()
        assert popular(nic) == {}
        assert vm.provider.system("GET", "/system/functions").json() == []

    def test_a_deploy_counts_once_for_one_vm_and_failures_not_at_all(
        self, nic: Cache, make_vm: Callable[..., VM], seeded: Seeded, hook_image: oci.Image
    ) -> None:
        """faas-cli's PUT (404) + POST is one deploy; the VM's pull and the hook's report are
        the same client; a failed deploy (missing tag) counts nothing; an update (PUT 200)
        counts one more. The hit ratio per upstream follows the hit and miss counters."""
        vm = make_vm(nic.url)
        put = vm.call("PUT", "/system/functions", data=json.dumps(faas_cli_body("counted", IMAGE)))
        assert put.status_code == 404
        assert vm.deploy("counted", IMAGE).status_code == 200
        stats = popular(nic)[IMAGE]
        assert (stats["deploys"], stats["vms"]) == (1, 1), stats
        assert stats["pulls"] >= 1
        missing = f"{LAB}/lab/hookfn:no-such-tag"
        assert vm.deploy("broken", missing).status_code == 500
        assert missing not in popular(nic)
        assert vm.deploy("counted", IMAGE).status_code == 200  # an update: PUT 200
        assert (popular(nic)[IMAGE]["deploys"], popular(nic)[IMAGE]["vms"]) == (2, 1)

        # a pull nobody prefetched is a miss; the ratio is hits / (hits + misses) of that upstream
        requests.get(f"{nic.url}/v2/{LAB}/lab/hello/manifests/1", timeout=10).raise_for_status()
        metrics = nic.stats()["metrics"]

        def total(name: str) -> float:
            return sum(v for k, v in metrics.items() if k.startswith(name + "{") and f"upstream={LAB}" in k)

        hits, misses = total("nic_cache_hits_total"), total("nic_cache_misses_total")
        assert hits >= len(hook_image.blob_digests) and misses >= 1
        assert metrics[f"nic_cache_hit_ratio{{upstream={LAB}}}"] == pytest.approx(hits / (hits + misses))
        exposition = requests.get(f"{nic.url}/metrics", timeout=10).text
        assert f'nic_cache_hit_ratio{{upstream="{LAB}"}}' in exposition
        assert f'nic_cache_misses_total{{kind="manifest",upstream="{LAB}"}}' in exposition

    @pytest.mark.parametrize("nic_up", [True, False], ids=["skip-annotation", "nic-down"])
    def test_describe_shows_what_runs_whatever_the_user_annotates(
        self, nic: Cache, make_vm: Callable[..., VM], hook_image: oci.Image, nic_up: bool
    ) -> None:
        """A user-supplied original-image annotation is dropped on the way in, so list and
        describe show the image that runs when the hook did not rewrite (skip, fail-open); a
        forged one set straight at the provider is not believed either."""
        vm = make_vm(nic.url if nic_up else f"http://127.0.0.1:{free_port()}")
        forged = {ORIGINAL_ANNOTATION: "docker.io/evil/thing:6.6.6", "team": "blue"}
        annotations = {**forged, "com.openfaas.accel/skip": "true"} if nic_up else forged
        assert vm.deploy("honest", IMAGE, annotations=annotations).status_code == 200
        described = vm.call("GET", "/system/function/honest").json()
        assert described["image"] == IMAGE
        assert ORIGINAL_ANNOTATION not in described["annotations"]
        assert described["annotations"]["team"] == "blue"
        assert vm.provider.system("GET", "/system/function/honest").json()["image"] == IMAGE

        straight = vm.provider.deploy("forged", IMAGE, annotations=forged)
        assert straight[-1].status_code == 200
        assert [f["image"] for f in vm.call("GET", "/system/functions").json()] == [IMAGE, IMAGE]

    def test_unknown_registry_fails_at_once_naming_it(
        self, nic: Cache, make_vm: Callable[..., VM], hook_image: oci.Image
    ) -> None:
        """An image from a registry the cache has no upstream for is refused by the hook with
        a 400 naming the registry: the provider never tries to pull it (no DNS wait)."""
        vm = make_vm(nic.url)
        answer = vm.deploy("elsewhere", "unknown.example/team/app:1")
        assert answer.status_code == 400
        named = "registry unknown.example (of image unknown.example/team/app:1) is not configured"
        assert named in answer.text
        assert vm.provider.system("GET", "/system/functions").json() == []
        assert popular(nic) == {}

    def test_digest_errors_say_what_is_wrong(
        self, nic: Cache, make_vm: Callable[..., VM], hook_image: oci.Image, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A malformed digest is refused as malformed; a well-formed unknown one is logged as
        name@sha256:..., as references are written."""
        vm = make_vm(nic.url)
        bad = vm.deploy("bad-digest", f"{LAB}/lab/hookfn@sha256:deadbeef")
        assert bad.status_code == 400 and "malformed digest 'sha256:deadbeef'" in bad.text
        unknown = f"sha256:{'0' * 64}"
        with caplog.at_level("WARNING", logger="faas_accel.hook"):
            assert vm.deploy("no-digest", f"{LAB}/lab/hookfn@{unknown}").status_code == 500
        logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "faas_accel.hook")
        assert f"lab/hookfn@{unknown}" in logged and f"hookfn:{unknown}" not in logged


REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = "faas-cli deploy -f stack.yml --read-template=false"


class TestDocumentedDeploy:
    def test_the_documented_command_needs_no_template(self) -> None:
        """README and stack.yml show the command that works offline: plain `deploy -f` stops
        on the missing template directory, `--read-template=false` sends every function."""
        assert DOCUMENTED in (REPO / "README.md").read_text()
        assert DOCUMENTED in (REPO / "stack.yml").read_text()
        with pytest.raises(FaasCliError, match="template directory may be missing or invalid"):
            stack_deployments(REPO / "stack.yml", cwd=REPO)
        gateway, bodies = stack_deployments(REPO / "stack.yml", read_template=False, cwd=REPO)
        assert gateway == "http://127.0.0.1:8080"
        assert {b["service"]: (b["image"], b["envProcess"]) for b in bodies} == {
            "hello": ("registry.lab/faas/hello:0.1.0", ""),
            "transform": ("registry.lab/faas/transform:0.1.0", ""),
            "heavy": ("registry.lab/faas/heavy:0.1.0", ""),
        }

    def test_the_documented_command_deploys_through_the_hook(
        self, nic: Cache, make_vm: Callable[..., VM], hook_image: oci.Image, tmp_path: Path
    ) -> None:
        """Replaying what that command sends (PUT, POST on 404, basic auth) for the repo's
        stack file, its images swapped for the test's, deploys each function via the NIC."""
        doc = yaml.safe_load((REPO / "stack.yml").read_text())
        for fn in doc["functions"].values():
            fn["image"] = IMAGE
        stack = tmp_path / "stack.yml"
        stack.write_text(yaml.safe_dump(doc))
        vm = make_vm(nic.url)
        answers = deploy_stack(stack, auth=(USER, PASSWORD), gateway=vm.hook_url, read_template=False)
        assert {name: [a.status_code for a in got] for name, got in answers.items()} == {
            "hello": [404, 200], "transform": [404, 200], "heavy": [404, 200],
        }  # fmt: skip
        listed = vm.call("GET", "/system/functions").json()
        assert sorted((f["name"], f["image"]) for f in listed) == [
            ("heavy", IMAGE), ("hello", IMAGE), ("transform", IMAGE),
        ]  # fmt: skip
        assert popular(nic)[IMAGE]["deploys"] == 3
