"""`faas-accel prepull` against a real NIC cache (gunicorn) and a real containerd: it pulls
only what the cache holds whole, in the hook's mirror form, and the upstream sees nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import requests

from faas_accel.prepull import ContainerdPuller, Prepuller
from tests.conftest import Seeded
from tests.support.cache import FAAS_ACCEL, TOKEN, Cache
from tests.support.procs import run
from tests.support.runtimes import Containerd

pytestmark = pytest.mark.integration
LAB = "registry.lab"


@pytest.fixture
def cache(seeded: Seeded) -> Iterator[Cache]:
    c = Cache({LAB: seeded.registry.url}, default_upstream=LAB).start()
    try:
        yield c
    finally:
        c.close()


def prefetch(cache: Cache, image: str) -> None:
    resp = requests.post(
        f"{cache.url}/api/v1/prefetch",
        json={"image": image, "wait": 120},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=150,
    )
    assert resp.status_code == 200 and resp.json()["state"] == "done", resp.text


def test_prepull_holds_what_the_nic_holds(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    ctrd = containerd_factory()
    prefetch(cache, f"{LAB}/lab/app-a:1")
    prefetch(cache, f"{LAB}/lab/hello:1")
    gets = seeded.registry.blob_gets()
    puller = Prepuller(
        cache.url, TOKEN, cache.host, ContainerdPuller(ctrd.address, ctrd.namespace, None), limit=5
    )

    first = puller.once()
    assert sorted(first.pulled) == [f"{LAB}/lab/app-a:1", f"{LAB}/lab/hello:1"] and not first.failed
    assert ctrd.image_digest(f"{cache.host}/{LAB}/lab/app-a:1") == seeded.app_a.digest
    assert ctrd.image_digest(f"{cache.host}/{LAB}/lab/hello:1") == seeded.hello.digest
    assert seeded.registry.blob_gets() == gets  # everything came from the NIC

    second = puller.once()  # nothing more to do
    assert second.pulled == [] and sorted(second.present) == sorted(first.pulled)


def test_only_and_limit_and_the_cli(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    ctrd = containerd_factory()
    prefetch(cache, f"{LAB}/lab/app-a:1")
    prefetch(cache, f"{LAB}/lab/hello:1")
    out = run(
        [
            *FAAS_ACCEL,
            "prepull",
            "once",
            "--cache",
            cache.url,
            "--token",
            TOKEN,
            "--mirror-host",
            cache.host,
            "--address",
            ctrd.address,
            "--namespace",
            ctrd.namespace,
            "--image",
            f"{LAB}/lab/hello:1",
        ]
    )
    doc = json.loads(out.stdout)
    assert doc["pulled"] == [f"{LAB}/lab/hello:1"] and doc["failed"] == {}
    refs = ctrd.ctr("images", "ls", "-q").stdout.split()
    assert refs == [f"{cache.host}/{LAB}/lab/hello:1"]


def test_an_image_the_nic_lacks_is_not_pulled(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    """Prepull never makes the NIC fetch: an image it does not hold is left alone."""
    ctrd = containerd_factory()
    gets = seeded.registry.blob_gets()
    puller = Prepuller(
        cache.url,
        TOKEN,
        cache.host,
        ContainerdPuller(ctrd.address, ctrd.namespace, None),
        limit=5,
        only=[f"{LAB}/lab/hello:1"],
    )
    result = puller.once()
    assert result.pulled == [] and result.failed == {}
    assert ctrd.ctr("images", "ls", "-q").stdout.split() == []
    assert seeded.registry.blob_gets() == gets
