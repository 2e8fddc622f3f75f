"""`faas-accel prepull` against a real NIC cache (gunicorn), a real containerd or dockerd and the
real CNCF registry as upstream: it pulls only what the cache holds whole, by digest, names it
with the hook's mirror tag, and the upstream sees nothing of it.

The cache trusts a tag for 0 s, so any request by tag (what prepull used to make) would show
upstream as a manifest HEAD: "no new manifest or blob request" tells the two apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from faas_accel.prepull.prepuller import ContainerdPuller, DockerPuller, Prepuller
from faas_accel.testbed import oci
from faas_accel.testbed.cache import FAAS_ACCEL, TOKEN, Cache
from faas_accel.testbed.procs import run
from faas_accel.testbed.registry import Registry, Request
from faas_accel.testbed.runtimes import Containerd, Dockerd
from tests.conftest import Seeded

pytestmark = pytest.mark.integration
LAB = "registry.lab"
HELLO, APP_A, MULTILAYER = f"{LAB}/lab/hello:1", f"{LAB}/lab/app-a:1", f"{LAB}/lab/multilayer:1"


@pytest.fixture
def cache(cache_factory: Callable[..., Cache]) -> Cache:
    """Tags revalidated on every pull by tag: a tag pull by prepull would show upstream."""
    return cache_factory(default_upstream=LAB, extra={"tag_ttl": "0s"})


def prefetch(cache: Cache, image: str) -> None:
    resp = requests.post(
        f"{cache.url}/api/v1/prefetch",
        json={"image": image, "wait": 120},
        headers=cache.auth,
        timeout=150,
    )
    assert resp.status_code == 200 and resp.json()["state"] == "done", resp.text


def upstream_reads(registry: Registry) -> list[Request]:
    """Every manifest and blob request (any method, any status) the upstream has logged."""
    return [r for r in registry.requests() if r.manifest or r.blob]


def mirror(cache: Cache, image: str) -> str:
    return f"{cache.host}/{image}"


def containerd_puller(cache: Cache, ctrd: Containerd, **kw: Any) -> Prepuller:
    return Prepuller(cache.url, TOKEN, cache.host, ContainerdPuller(ctrd.address, ctrd.namespace, None), **kw)


def test_prepull_holds_what_the_nic_holds(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    """Both complete images land under their mirror tags, and the upstream sees no request."""
    ctrd = containerd_factory()
    prefetch(cache, APP_A)
    prefetch(cache, HELLO)
    before = upstream_reads(seeded.registry)
    puller = containerd_puller(cache, ctrd, limit=5)

    first = puller.once()
    assert sorted(first.pulled) == [APP_A, HELLO] and not first.failed and not first.missing
    assert ctrd.image_digest(mirror(cache, APP_A)) == seeded.app_a.digest
    assert ctrd.image_digest(mirror(cache, HELLO)) == seeded.hello.digest
    # the by-digest names are dropped: the mirror tags are the only names
    assert sorted(ctrd.ctr("images", "ls", "-q").stdout.split()) == [
        mirror(cache, APP_A),
        mirror(cache, HELLO),
    ]

    second = puller.once()  # nothing more to do
    assert second.pulled == [] and sorted(second.present) == sorted(first.pulled)
    assert upstream_reads(seeded.registry)[len(before) :] == []  # everything came from the NIC
    puller.close()


def test_only_and_limit_and_the_cli(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    ctrd = containerd_factory()
    prefetch(cache, APP_A)
    prefetch(cache, HELLO)
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
            HELLO,
        ]
    )
    doc = json.loads(out.stdout)
    assert doc["pulled"] == [HELLO] and doc["failed"] == {} and doc["missing"] == []
    assert ctrd.ctr("images", "ls", "-q").stdout.split() == [mirror(cache, HELLO)]


def test_a_requested_image_the_nic_holds_in_part_is_missing_and_not_pulled(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    """The NIC holds multilayer's tag and manifest but none of its blobs: `once` pulls what
    is whole, names the rest missing, exits 1, and the upstream sees no request."""
    ctrd = containerd_factory()
    prefetch(cache, HELLO)
    resp = requests.get(f"{cache.url}/v2/{LAB}/lab/multilayer/manifests/1", timeout=30)
    assert resp.status_code == 200, resp.text
    listed = requests.get(f"{cache.url}/api/v1/images", headers=cache.auth, timeout=30).json()
    assert {i["image"]: i["complete"] for i in listed["images"]} == {HELLO: True, MULTILAYER: False}
    before = upstream_reads(seeded.registry)

    out = run(
        [
            *FAAS_ACCEL,
            "prepull",
            "once",
            "--cache",
            cache.url,
            "--mirror-host",
            cache.host,
            "--address",
            ctrd.address,
            "--namespace",
            ctrd.namespace,
            "--image",
            MULTILAYER,
            "--image",
            HELLO,
        ],
        env={"NIC_CACHE_ADMIN_TOKEN": TOKEN},
        check=False,
    )
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["missing"] == [MULTILAYER] and doc["pulled"] == [HELLO] and doc["failed"] == {}
    assert f"not complete on the NIC, not pulled: {MULTILAYER}" in out.stderr
    assert "Traceback" not in out.stderr
    assert ctrd.ctr("images", "ls", "-q").stdout.split() == [mirror(cache, HELLO)]
    assert upstream_reads(seeded.registry)[len(before) :] == []


def test_an_image_the_nic_lacks_is_not_pulled(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    """Prepull never makes the NIC fetch: an image it does not hold is reported missing."""
    ctrd = containerd_factory()
    before = upstream_reads(seeded.registry)
    puller = containerd_puller(cache, ctrd, limit=5, only=[HELLO])
    result = puller.once()
    assert result.pulled == [] and result.failed == {} and result.missing == [HELLO]
    assert ctrd.ctr("images", "ls", "-q").stdout.split() == []
    assert upstream_reads(seeded.registry)[len(before) :] == []
    puller.close()


def test_a_vm_holding_an_older_digest_gets_the_nics(
    cache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
) -> None:
    """The upstream tag moves, the NIC follows; the VM's mirror tag moves to the new digest
    (pulled from the NIC only) and the old content has no name left."""
    repo = f"lab/moving-{uuid.uuid4().hex[:8]}"
    image = f"{LAB}/{repo}:1"
    v1, v2 = oci.busybox_image(cmd=["echo", "v1"]), oci.busybox_image(cmd=["echo", "v2"])
    oci.publish(v1, seeded.ref(f"{repo}:1"))
    prefetch(cache, image)
    ctrd = containerd_factory()
    puller = containerd_puller(cache, ctrd, limit=5, only=[image])
    assert puller.once().pulled == [image]
    assert ctrd.image_digest(mirror(cache, image)) == v1.digest

    oci.publish(v2, seeded.ref(f"{repo}:1"))
    prefetch(cache, image)  # the NIC revalidates the tag and fills v2
    before = upstream_reads(seeded.registry)
    second = puller.once()
    assert second.pulled == [image] and second.present == [] and not second.failed
    assert ctrd.image_digest(mirror(cache, image)) == v2.digest
    assert ctrd.ctr("images", "ls", "-q").stdout.split() == [mirror(cache, image)]
    assert puller.once().present == [image]
    assert upstream_reads(seeded.registry)[len(before) :] == []
    puller.close()


def test_docker_pulls_by_digest_and_replaces_an_older_image(
    cache: Cache, seeded: Seeded, dockerd_factory: Callable[..., Dockerd]
) -> None:
    """Through the docker SDK: a mirror tag holding another image gets the NIC's, then is present."""
    dockerd = dockerd_factory()
    client = dockerd.client()
    prefetch(cache, APP_A)
    prefetch(cache, HELLO)
    before = upstream_reads(seeded.registry)
    stale = client.images.pull(mirror(cache, APP_A).rsplit(":", 1)[0], tag=f"{seeded.app_a.digest}")
    stale.tag(mirror(cache, HELLO).rsplit(":", 1)[0], "1")  # app-a's image under hello's mirror tag
    puller = Prepuller(cache.url, TOKEN, cache.host, DockerPuller(dockerd.base_url), limit=5, only=[HELLO])

    first = puller.once()
    assert first.pulled == [HELLO] and not first.failed
    held = client.images.get(mirror(cache, HELLO))
    assert f"{mirror(cache, HELLO).rsplit(':', 1)[0]}@{seeded.hello.digest}" in held.attrs["RepoDigests"]
    assert puller.once().present == [HELLO]
    assert upstream_reads(seeded.registry)[len(before) :] == []
    puller.close()
