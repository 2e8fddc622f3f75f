"""The test support works against the real tools: registry, skopeo, containerd, dockerd."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from faas_accel.dockerd import dockerd_argv
from faas_accel.testbed import oci
from faas_accel.testbed.procs import run, wait_for
from faas_accel.testbed.registry import Registry
from faas_accel.testbed.runtimes import Containerd, Dockerd, NetNS
from tests.conftest import HELLO_TEXT, Seeded

pytestmark = pytest.mark.integration

SEEDED_NAMES = ["lab/hello:1", "lab/multiarch:1", "lab/multilayer:1", "lab/app-a:1", "lab/app-b:1"]


def skopeo_raw(ref: str, *extra: str) -> bytes:
    result = run(["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}"])
    return result.stdout.encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TestOci:
    def test_layers_are_deterministic(self) -> None:
        """The same files give the same layer digest, whatever the order they are given in."""
        one = oci.layer({"b/x": b"1", "a": (b"2", 0o755), "l": oci.Symlink("a")})
        two = oci.layer({"l": oci.Symlink("a"), "a": (b"2", 0o755), "b/x": b"1"})
        assert one.digest == two.digest

    def test_layer_tar_has_parents_owners_and_zero_mtime(self) -> None:
        """Parent directories are 0755 entries and every entry is root-owned at time 0."""
        built = oci.layer({"/usr/bin/tool": (b"#!/bin/sh\n", 0o755)})
        with tarfile.open(fileobj=io.BytesIO(built.bytes)) as tar:
            members = tar.getmembers()
        assert [(m.name, m.isdir(), m.mode) for m in members] == [
            ("usr", True, 0o755),
            ("usr/bin", True, 0o755),
            ("usr/bin/tool", False, 0o755),
        ]
        assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 0)}


class TestSeeded:
    @pytest.mark.parametrize("name", SEEDED_NAMES, ids=SEEDED_NAMES)
    def test_manifest_bytes_round_trip(self, seeded: Seeded, name: str) -> None:
        """The registry serves the exact manifest or index bytes oci.py built."""
        served = skopeo_raw(seeded.ref(name))
        assert sha256(served) == seeded[name].digest
        assert served == seeded[name].bytes

    def test_config_and_children_round_trip(self, seeded: Seeded) -> None:
        """Configs and the index's per-platform manifests keep their digests too."""
        config = skopeo_raw(seeded.ref("lab/hello:1"), "--config")
        assert sha256(config) == seeded.hello.config_digest
        repo = seeded.ref("lab/multiarch:1").rsplit(":", 1)[0]
        for img in seeded.multiarch.images:
            assert sha256(skopeo_raw(f"{repo}@{img.digest}")) == img.digest

    def test_app_images_share_their_base(self, seeded: Seeded) -> None:
        """app-a and app-b have the same first layer and different top layers."""
        assert seeded.app_a.layer_digests[0] == seeded.app_b.layer_digests[0]
        assert seeded.app_a.layer_digests[1] != seeded.app_b.layer_digests[1]


class TestRegistry:
    def test_one_copy_counts_each_blob_once(self, seeded: Seeded, upstream: Registry, tmp_path: Path) -> None:
        """One skopeo copy of lab/hello:1 is one GET per blob in the registry's log."""
        before = upstream.blob_gets()
        source = f"docker://{seeded.ref('lab/hello:1')}"
        run(["skopeo", "copy", "--src-tls-verify=false", source, f"dir:{tmp_path / 'out'}"])
        fetched = upstream.blob_gets() - before
        assert fetched == {digest: 1 for digest in seeded.hello.blob_digests}

    def test_restart_keeps_port_storage_and_counts(
        self, registry_factory: Callable[..., Registry], tmp_path: Path
    ) -> None:
        """After stop() and start() the same URL serves the same content and counts go on."""
        registry = registry_factory()
        small = oci.image([oci.layer({"f": b"restart"})])
        oci.publish(small, f"{registry.host}/lab/restart:1")
        ref = f"{registry.host}/lab/restart@{small.digest}"
        blob = small.layer_digests[0]
        run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{tmp_path}"])

        registry.stop()
        inspect = ["skopeo", "inspect", "--raw", "--tls-verify=false", "--retry-times=0"]
        down = run([*inspect, f"docker://{ref}"], check=False)
        assert down.returncode != 0
        registry.start()

        assert sha256(skopeo_raw(ref)) == small.digest
        assert registry.blob_gets(blob) == {blob: 1}

    def test_http_pushes_upload_mount_and_tag(
        self, registry_factory: Callable[..., Registry], tmp_path: Path
    ) -> None:
        """push_blob uploads bytes or a file in one PUT, a mount is one POST and no upload, and
        the pushed manifest is served byte for byte under its tag."""
        registry = registry_factory()
        img = oci.image([oci.random_layer(50_000, seed=7)])
        layer = img.layers[0]
        (tmp_path / "layer").write_bytes(layer.bytes)
        assert not registry.has_blob("lab/a", layer.digest)

        registry.push_blob("lab/a", layer.digest, tmp_path / "layer")
        registry.push_blob("lab/a", img.config.digest, img.config.bytes)
        registry.push_manifest("lab/a", "1", img.bytes, img.media_type)
        registry.push_blob("lab/b", layer.digest, layer.bytes, mount_from="lab/a")

        assert registry.has_blob("lab/a", layer.digest) and registry.has_blob("lab/b", layer.digest)
        writes = [(r.method, r.path.split("/")[3], r.status) for r in registry.requests()
                  if r.method in ("POST", "PUT")]  # fmt: skip
        assert writes == [("POST", "a", 202), ("PUT", "a", 201), ("POST", "a", 202), ("PUT", "a", 201),
                          ("PUT", "a", 201), ("POST", "b", 201)]  # fmt: skip
        assert skopeo_raw(f"{registry.host}/lab/a:1") == img.bytes

    def test_proxy_mode_is_the_peer_we_measure_against(
        self, registry_factory: Callable[..., Registry], tmp_path: Path
    ) -> None:
        """distribution 2.8 as a pull-through proxy fetches each cold blob twice
        (one stream to the client, one to store) and none when warm."""
        origin = registry_factory()
        peer = registry_factory(proxy=origin.url)
        img = oci.image([oci.random_layer(200_000, seed=42)])
        oci.publish(img, f"{origin.host}/lab/peer:1")
        source = f"docker://{peer.host}/lab/peer:1"

        run(["skopeo", "copy", "--src-tls-verify=false", source, f"dir:{tmp_path / 'cold'}"])
        twice = {digest: 2 for digest in img.blob_digests}
        wait_for(lambda: origin.blob_gets() == twice, 10, "the proxy's second upstream fetch")
        # The proxy logs a scheduler entry once a blob is stored and no longer in flight.
        stored = [f"scheduler entry for lab/peer@{digest}" for digest in img.blob_digests]
        wait_for(lambda: all(s in peer.log.read_text() for s in stored), 10, "blobs stored")
        run(["skopeo", "copy", "--src-tls-verify=false", source, f"dir:{tmp_path / 'warm'}"])

        assert origin.blob_gets() == twice
        assert peer.blob_gets() == {digest: 2 for digest in img.blob_digests}


class TestContainerd:
    def test_pull_and_run_hello(self, seeded: Seeded, containerd_factory: Callable[..., Containerd]) -> None:
        """containerd pulls lab/hello:1 over plain HTTP and runs it."""
        ctrd = containerd_factory()
        ref = seeded.ref("lab/hello:1")
        ctrd.pull(ref)
        assert ctrd.image_digest(ref) == seeded.hello.digest
        out = ctrd.ctr("run", "--rm", ref, "hello-1").stdout
        assert out.strip() == HELLO_TEXT

    def test_runs_inside_a_network_namespace(
        self,
        seeded: Seeded,
        tmp_path: Path,
        containerd_factory: Callable[..., Containerd],
        netns_factory: Callable[[], NetNS],
    ) -> None:
        """A containerd started in a netns (nsenter, not ip netns exec) can run containers."""
        ns = netns_factory()
        ctrd = containerd_factory(netns=ns.name)
        layout = oci.write_layout(tmp_path / "layout", "1", seeded.hello)
        archive = tmp_path / "hello.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(layout, arcname=".")
        ctrd.ctr("images", "import", "--base-name", "lab.test/hello", str(archive))

        assert ctrd.proc is not None
        daemon_net = os.readlink(f"/proc/{ctrd.proc.pid}/ns/net")
        assert daemon_net == f"net:[{os.stat(ns.path).st_ino}]"
        out = ctrd.ctr("run", "--rm", "lab.test/hello:1", "hello-ns").stdout
        assert out.strip() == HELLO_TEXT
        links = ctrd.ctr("run", "--rm", "--net-host", "lab.test/hello:1", "links", "cat", "/proc/net/dev")
        assert [line.split(":")[0].strip() for line in links.stdout.splitlines()[2:]] == ["lo"]


class TestDockerd:
    def test_pull_and_run_hello(self, seeded: Seeded, dockerd_factory: Callable[..., Dockerd]) -> None:
        """dockerd pulls 127.0.0.1:PORT/lab/hello:1 and runs it with no network."""
        dockerd = dockerd_factory({"insecure-registries": [seeded.registry.host]})
        client = dockerd.client()
        repo = seeded.ref("lab/hello:1").rsplit(":", 1)[0]
        pulled = client.images.pull(repo, tag="1")
        assert pulled.id == seeded.hello.config_digest
        out = client.containers.run(f"{repo}:1", network_mode="none", remove=True)
        assert out.decode().strip() == HELLO_TEXT


class TestDockerdArgv:
    @pytest.mark.parametrize("namespace", [None, "vm1"], ids=["own-containerd", "shared-containerd"])
    def test_never_a_bridge_or_iptables_and_private_roots(self, namespace: str | None) -> None:
        """Every dockerd the project starts gets the hard rule's flags and the caller's roots."""
        argv = dockerd_argv(data_root="/d", exec_root="/e", pidfile="/e.pid", sock="/s.sock",
                            config="/c.json", containerd_namespace=namespace, extra=["--debug"])  # fmt: skip
        assert argv[:4] == ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"]
        assert {"--data-root=/d", "--exec-root=/e", "--pidfile=/e.pid", "-H=unix:///s.sock",
                "--config-file=/c.json"} <= set(argv)  # fmt: skip
        spaced = [a for a in argv if a.startswith("--containerd")]
        expected = [f"--containerd-namespace={namespace}",
                    f"--containerd-plugins-namespace={namespace}-plugins"]
        assert spaced == (expected if namespace else [])
        assert argv[-1] == "--debug"
