"""Fault campaign and soak of the NIC cache, printed as a table (issue 16's figures).

    python -m load.soak [--kills 20] [--hit-seconds 300] [--peer-seconds 60] [--clients 64] [--out F]

Everything runs on loopback: CNCF `docker-registry` upstreams (one plain, one with htpasswd),
the cache under gunicorn (`faas-accel cache serve`), a rate-limiting TCP proxy, a tmpfs for
the full-disk run. Sections:

- kill: kill -9 of the filling worker, then of the master, mid-fill, `--kills` times each:
  partial blobs served (a complete-length 200 with wrong bytes), index problems found by a
  digest check afterwards, whether the next pull was whole, temp/lock files left after a
  restart.
- disk: three concurrent misses over the budget on a small tmpfs, then the disk filled up:
  errors that are not OCI errors, corrupt blobs stored, whether misses are stored again once
  space is freed.
- flap: the upstream stopped and started while 16 clients pull blobs that keep being evicted:
  wrong bytes, OCI errors, responses cut short (the protocol's way to fail a stream), other.
- hits: `--clients` clients reading cached blobs for `--hit-seconds`, then a plain
  docker-registry serving the same blobs for `--peer-seconds`: throughput and the ratio,
  RSS and open fds of the cache (start, end), errors.
- private: anonymous and wrong-password clients asking for a private image's manifest and
  every blob, through its repository and by digest through a public one: answers that are
  not 401/404.
Needs root (tmpfs) and the Debian packages `docker-registry` and `skopeo`.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faas_accel.testbed import oci
from faas_accel.testbed.cache import FAAS_ACCEL, Cache
from faas_accel.testbed.procs import pid_alive, run, stop_pid, wait_for
from faas_accel.testbed.registry import Registry, htpasswd_auth
from faas_accel.testbed.tcpproxy import TcpProxy

MB = 1_000_000
UP = "up.lab"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fetch(host: str, path: str, auth: str | None = None, timeout: float = 60) -> tuple[int, bytes, str]:
    """(status, body, outcome): outcome is "ok", "oci" (error JSON), "cut" (stream ended short)
    or "other"."""
    host_, _, port = host.partition(":")
    conn = http.client.HTTPConnection(host_, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": auth} if auth else {})
        resp = conn.getresponse()
        try:
            body = resp.read()
        except (http.client.IncompleteRead, OSError) as exc:
            partial = getattr(exc, "partial", b"")
            return resp.status, partial, "cut"
        if resp.status >= 400:
            try:
                ok = bool(json.loads(body)["errors"][0]["code"])
            except (ValueError, KeyError, IndexError, TypeError):
                ok = False
            return resp.status, body, "oci" if ok else "other"
        return resp.status, body, "ok"
    except (OSError, http.client.HTTPException):
        return 0, b"", "cut"
    finally:
        conn.close()


def tree_stats(pid: int) -> tuple[int, int]:
    """(RSS bytes, open fds) of a process and its children."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    rss = fds = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return rss, fds


def push_layers(registry: Registry, repo: str, count: int, size: int, seed: int) -> list[oci.Layer]:
    layers = [oci.random_layer(size, seed=seed + i) for i in range(count)]
    oci.publish(oci.image(layers), f"{registry.host}/{repo}:1")
    return layers


def _read_into(into: dict[str, Any], host: str, path: str) -> None:
    into["r"] = fetch(host, path)


def _filling(cache: Cache) -> bool:
    """Whether a part file in the cache's tmp/ holds half a MB already."""
    tmp = cache.data_dir / "tmp"
    sizes = [
        os.path.getsize(tmp / n) for n in cache.tmp_files() if n.endswith(".part") and (tmp / n).exists()
    ]
    return any(size > MB // 2 for size in sizes)


def verify(cache: Cache) -> tuple[int, str]:
    result = run([*FAAS_ACCEL, "cache", "verify", "--json", "--config", str(cache.config_path)], check=False)
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return len(report.get("quarantined", [])) + int(report.get("dropped", 0)), result.stdout[-300:]


def leftovers(cache: Cache) -> int:
    cache.stop()
    cache.start()
    return len(cache.tmp_files(locks=True))


# -- sections ---------------------------------------------------------------------------------


def kill_section(registry: Registry, kills: int) -> dict[str, Any]:
    layers = push_layers(registry, "soak/kill", 2 * kills, 3 * MB, seed=int(time.time()) % 100000)
    slow = TcpProxy(("127.0.0.1", registry.port), rate=3 * MB)
    out: dict[str, Any] = {}
    try:
        for kind in ("worker", "master"):
            cache = Cache({UP: slow.url}, workers=2).start()
            partial = next_bad = bind_fail = 0
            orphans: list[int] = []
            try:
                for i in range(kills):
                    layer = layers[i if kind == "worker" else kills + i]
                    path = f"/v2/{UP}/soak/kill/blobs/{layer.digest}"
                    got: dict[str, Any] = {}
                    reader = threading.Thread(target=_read_into, args=(got, cache.host, path))
                    reader.start()
                    wait_for(lambda c=cache: _filling(c), 30, "half a MB filled")
                    if kind == "worker":
                        for pid in cache.worker_pids():
                            os.kill(pid, signal.SIGKILL)
                    else:
                        assert cache.proc is not None
                        orphans += cache.worker_pids()
                        os.kill(cache.proc.pid, signal.SIGKILL)
                        cache.proc.popen.wait()
                        try:
                            cache.start(timeout=15)
                        except Exception:
                            bind_fail += 1
                            cache.start(timeout=60)
                    reader.join(120)
                    status, body, outcome = got.get("r", (0, b"", "cut"))
                    if outcome == "ok" and len(body) == layer.size and sha(body) != layer.digest:
                        partial += 1
                    if outcome == "ok" and len(body) != layer.size:
                        partial += 1
                    wait_for(cache.worker_pids, 30, "workers")
                    status, body, outcome = fetch(cache.host, path)
                    if not (status == 200 and sha(body) == layer.digest):
                        next_bad += 1
                wait_for(lambda left=tuple(orphans): not any(map(pid_alive, left)), 60, "orphans to exit")
                bad_index, _ = verify(cache)
                out[kind] = {"rounds": kills, "partial_served": partial, "index_errors": bad_index,
                             "next_pull_failed": next_bad, "restart_bind_failures": bind_fail,
                             "leftover_files": leftovers(cache)}  # fmt: skip
            finally:
                for pid in orphans:
                    if pid_alive(pid):
                        stop_pid(pid)
                cache.close()
    finally:
        slow.close()
    return out


def disk_section(registry: Registry) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="soak-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], check=True)
    layers = push_layers(registry, "soak/disk", 6, 12 * MB, seed=77000 + int(time.time()) % 1000)
    slow = TcpProxy(("127.0.0.1", registry.port), rate=6 * MB)
    cache = Cache({UP: slow.url}, data_dir=where / "data", extra={"capacity": "48MiB"})
    outcomes: Counter[str] = Counter()
    wrong = 0
    try:
        cache.start()

        def pull(layer: oci.Layer) -> None:
            nonlocal wrong
            _, body, outcome = fetch(cache.host, f"/v2/{UP}/soak/disk/blobs/{layer.digest}")
            outcomes[outcome] += 1
            if outcome == "ok" and sha(body) != layer.digest:
                wrong += 1

        threads = [threading.Thread(target=pull, args=(layer,)) for layer in layers[:3]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        cache.wait_idle()
        with open(where / "ballast", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
                    fh.flush()
            except OSError:
                pass
        for layer in layers:  # hits and misses on a full disk
            pull(layer)
        healthy = fetch(cache.host, "/healthz")[0] == 200
        os.unlink(where / "ballast")
        cache.wait_idle()
        for layer in layers[3:]:
            pull(layer)
        cache.wait_idle()
        stored_after = len(cache.stored_blobs() & {layer.digest for layer in layers})
        corrupt, _ = verify(cache)
        return {"requests": sum(outcomes.values()), "non_oci_errors": outcomes["other"],
                "cut_short": outcomes["cut"], "wrong_bytes": wrong, "corrupt_stored": corrupt,
                "healthz_ok_when_full": healthy, "stored_after_space_freed": stored_after,
                "passthrough": cache.metric("nic_cache_passthrough_total")}  # fmt: skip
    finally:
        cache.close()
        slow.close()
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def flap_section(registry: Registry, clients: int = 16, seconds: float = 30.0) -> dict[str, Any]:
    layers = push_layers(registry, "soak/flap", 12, 2 * MB, seed=88000 + int(time.time()) % 1000)
    cache = Cache({UP: registry.url}, extra={"capacity": "12MiB"}).start()
    outcomes: Counter[str] = Counter()
    wrong = 0
    stop = time.monotonic() + seconds
    try:

        def client(i: int) -> None:
            nonlocal wrong
            n = i
            while time.monotonic() < stop:
                layer = layers[n % len(layers)]
                n += 7
                _, body, outcome = fetch(cache.host, f"/v2/{UP}/soak/flap/blobs/{layer.digest}", timeout=30)
                outcomes[outcome] += 1
                if outcome == "ok" and sha(body) != layer.digest:
                    wrong += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        flaps = 0
        while time.monotonic() < stop - 2:
            time.sleep(1.5)
            registry.stop()
            time.sleep(1.0)
            registry.start()
            flaps += 1
        for t in threads:
            t.join(60)
        corrupt, _ = verify(cache)
        return {"clients": clients, "seconds": seconds, "flaps": flaps, "ok": outcomes["ok"],
                "oci_errors": outcomes["oci"], "cut_short": outcomes["cut"],
                "other_errors": outcomes["other"],
                "wrong_bytes": wrong, "corrupt_stored": corrupt}  # fmt: skip
    finally:
        registry.start()
        cache.close()


def _hammer(host: str, paths: list[str], clients: int, seconds: float) -> tuple[float, int, int]:
    """(MB/s, requests, errors) of `clients` threads reading `paths` for `seconds`."""
    total = Counter[str]()
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(i: int) -> None:
        h, _, p = host.partition(":")
        conn = http.client.HTTPConnection(h, int(p), timeout=30)
        n, got, errs = i, 0, 0
        while time.monotonic() < stop:
            try:
                conn.request("GET", paths[n % len(paths)])
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    errs += 1
                got += len(data)
            except (OSError, http.client.HTTPException):
                errs += 1
                conn.close()
                conn = http.client.HTTPConnection(h, int(p), timeout=30)
            n += 1
        conn.close()
        with lock:
            total["bytes"] += got
            total["requests"] += n - i
            total["errors"] += errs

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return total["bytes"] / (time.monotonic() - t0) / MB, total["requests"], total["errors"]


def hits_section(registry: Registry, clients: int, seconds: float, peer_seconds: float) -> dict[str, Any]:
    layers = push_layers(registry, "soak/hits", 8, 1 * MB, seed=99000)
    cache = Cache({UP: registry.url}, workers=4, threads=32).start()
    try:
        paths = [f"/v2/{UP}/soak/hits/blobs/{layer.digest}" for layer in layers]
        for p in paths:
            fetch(cache.host, p)
        cache.wait_idle()
        assert cache.proc is not None
        _hammer(cache.host, paths, clients, min(10.0, seconds / 10))  # warm-up: threads, connections
        rss0, fds0 = tree_stats(cache.proc.pid)
        rate, requests_, errors = _hammer(cache.host, paths, clients, seconds)
        rss1, fds1 = tree_stats(cache.proc.pid)
        peer_paths = [f"/v2/soak/hits/blobs/{layer.digest}" for layer in layers]
        peer_rate, _, peer_errors = _hammer(registry.host, peer_paths, clients, peer_seconds)
        return {"clients": clients, "seconds": seconds, "cache_MBps": round(rate, 1), "requests": requests_,
                "errors": errors, "peer_seconds": peer_seconds, "peer_MBps": round(peer_rate, 1),
                "peer_errors": peer_errors, "ratio": round(rate / peer_rate, 2) if peer_rate else None,
                "rss_MB_start": round(rss0 / MB, 1), "rss_MB_end": round(rss1 / MB, 1),
                "fds_start": fds0, "fds_end": fds1}  # fmt: skip
    finally:
        cache.close()


def private_section(public: Registry) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="soak-private-"))
    private = Registry(auth=htpasswd_auth(workdir, {"alice": "alicepw", "pusher": "pusherpw"})).start()
    try:
        image = oci.image([oci.random_layer(500_000, seed=4242), oci.random_layer(300_000, seed=4243)])
        oci.publish(image, f"{private.host}/lab/private:1", creds="pusher:pusherpw")
        own = {"username": "alice", "password": "alicepw"}
        cache = Cache({}, extra={"upstreams": {"priv.lab": {"url": private.url, **own},
                                               UP: {"url": public.url}}}).start()  # fmt: skip
        try:
            import base64

            wrong = "Basic " + base64.b64encode(b"mallory:wrong").decode()
            alice = "Basic " + base64.b64encode(b"alice:alicepw").decode()
            asked = leaked = 0
            for phase in ("uncached", "cached"):
                for auth in (None, wrong):
                    paths = [
                        "/v2/priv.lab/lab/private/manifests/1",
                        f"/v2/priv.lab/lab/private/manifests/{image.digest}",
                    ]
                    paths += [f"/v2/priv.lab/lab/private/blobs/{d}" for d in image.blob_digests]
                    paths += [f"/v2/{UP}/soak/hits/blobs/{d}" for d in image.blob_digests]
                    paths += [f"/v2/soak/hits/blobs/{d}?ns={UP}" for d in image.blob_digests]
                    for p in paths:
                        status = fetch(cache.host, p, auth)[0]
                        asked += 1
                        leaked += status not in (401, 404)
                if phase == "uncached":
                    for p in ["/v2/priv.lab/lab/private/manifests/1"] + [
                        f"/v2/priv.lab/lab/private/blobs/{d}" for d in image.blob_digests
                    ]:
                        assert fetch(cache.host, p, alice)[0] == 200
            return {"requests": asked, "not_401_or_404": leaked}
        finally:
            cache.close()
    finally:
        private.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--hit-seconds", type=float, default=300)
    ap.add_argument("--peer-seconds", type=float, default=60)
    ap.add_argument("--flap-seconds", type=float, default=30)
    ap.add_argument("--only", action="append", choices=["kill", "disk", "flap", "hits", "private"])
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("load.soak needs root (tmpfs for the full-disk run)", file=sys.stderr)
        return 2
    sections: dict[str, Callable[[Registry], dict[str, Any]]] = {
        "kill": lambda r: kill_section(r, args.kills),
        "disk": disk_section,
        "flap": lambda r: flap_section(r, seconds=args.flap_seconds),
        "hits": lambda r: hits_section(r, args.clients, args.hit_seconds, args.peer_seconds),
        "private": private_section,
    }
    figures: dict[str, Any] = {}
    with Registry() as registry:
        for name in args.only or list(sections):
            t0 = time.monotonic()
            figures[name] = sections[name](registry)
            figures[name]["section_seconds"] = round(time.monotonic() - t0, 1)
            print(f"{name}: {json.dumps(figures[name])}", flush=True)
    print()
    print(f"{'section':<10} {'figure':<26} value")
    for name, values in figures.items():
        for key, value in values.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    print(f"{name + '/' + key:<10} {k:<26} {v}")
            else:
                print(f"{name:<10} {key:<26} {value}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
