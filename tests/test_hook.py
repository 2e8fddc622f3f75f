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

from faas_accel.hook.app import HookConfig, create_app
from faas_accel.hook.rewrite import ORIGINAL_ANNOTATION, RewritePolicy, plan_deploy, restore_images
from tests.conftest import Seeded
from tests.support import oci
from tests.support.cache import Cache
from tests.support.procs import free_port
from tests.support.runtimes import Containerd
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
        fixed = json.loads(restore_images(json.dumps(listed).encode()) or b"")
        assert fixed == [{"name": "f", "image": "python:3.12", "annotations": {"keep": "me"}}]


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
            vm=ctrd.namespace,
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
