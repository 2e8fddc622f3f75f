"""faas-accel on faas-netes: Kubernetes manifests rendered from one values file.

Pure (but for `load_values`, which reads the file). `render(values)` returns two files:

- `faas-accel.yaml` (`kubectl apply -f`): a namespace, a ServiceAccount, the cache's
  ConfigMap and a DaemonSet running the cache on every node with `hostNetwork` (it stands
  for that server's NIC: containerd reaches it on 127.0.0.1). Its first init container
  writes containerd's `hosts.toml` for every upstream into the node's `certs.d`, as
  Spegel's configuration init container does; a second hands the hostPath data directory
  to the cache's non-root user. A prewarm scheduler runs beside each cache (each node's
  cache grants its own lease).
- `gateway-patch.yaml` (`kubectl patch deployment gateway --patch-file`): the hook as a
  sidecar of the OpenFaaS gateway pod, between the gateway and faas-netes; the gateway's
  `functions_provider_url` points at it. The hook prefetches into its own node's cache and
  rewrites images to `127.0.0.1:<port>/<registry>/...`, which every node resolves to its
  own cache.

No component calls the Kubernetes API, so RBAC is a ServiceAccount without a mounted
token and no Role at all: there is nothing to grant.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..mirror_config import plan as mirror_config
from .errors import InvalidValue
from .kube_values import load_values, merge_values

__all__ = ["gateway_patch", "load_values", "manifests", "merge_values", "render"]

APP = "faas-accel"
NONROOT = 65532


def render(values: dict[str, Any]) -> dict[str, str]:
    """`{"faas-accel.yaml": ..., "gateway-patch.yaml": ...}` for `values` (from merge_values)."""
    docs = manifests(values)
    return {
        "faas-accel.yaml": _dump_all(docs),
        "gateway-patch.yaml": _dump_all([gateway_patch(values)]),
    }


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    """What `kubectl apply` gets: namespace, ServiceAccount, ConfigMap, DaemonSet."""
    ns = values["namespace"]
    meta = {"namespace": ns, "labels": _labels("cache")}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {
                    **_labels("cache"),
                    # hostNetwork and hostPath (the node's certs.d and data directory)
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": f"{APP}-cache", **meta},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{APP}-cache", **meta},
            "data": {"nic-cache.yml": cache_config(values), "prewarm.yml": prewarm_config(values)},
        },
        daemonset(values),
    ]


def cache_config(values: dict[str, Any]) -> str:
    """nic-cache.yml for every node's cache."""
    cache = values["cache"]
    registries = _registries(values)
    doc = {
        "listen": f"0.0.0.0:{cache['port']}",
        "data_dir": cache["dataDir"],
        "capacity": cache["capacity"],
        "admin_token": "${NIC_CACHE_ADMIN_TOKEN}",
        "default_upstream": registries[0].host,
        "upstreams": {r.host: {"url": r.server} for r in registries},
        "workers": cache["workers"],
        "threads": cache["threads"],
        "status_page": cache["statusPage"],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def prewarm_config(values: dict[str, Any]) -> str:
    """prewarm.yml for the scheduler beside each cache."""
    doc = {
        "cache": {"url": f"http://127.0.0.1:{values['cache']['port']}", "token": "${NIC_CACHE_ADMIN_TOKEN}"},
        "limits": values["prewarm"]["limits"],
        "schedules": values["prewarm"]["schedules"],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def daemonset(values: dict[str, Any]) -> dict[str, Any]:
    """The cache on every node, with its hosts.toml and data-dir init containers."""
    cache, port = values["cache"], values["cache"]["port"]
    mirror = f"http://127.0.0.1:{port}"
    hosts_args = ["mirror-config", "containerd", "--mirror", mirror, "--config-path", "/host/certs.d"]
    for r in (*_registries(values), _local(port)):
        hosts_args += ["--registry", f"{r.host}={r.server}"]
    probe = {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 10, "timeoutSeconds": 5}
    containers = [
        {
            **_container(
                values,
                "cache",
                ["cache", "serve", "--config", "/etc/faas-accel/nic-cache.yml"],
                cache["resources"],
            ),
            "ports": [{"name": "registry", "containerPort": port, "hostPort": port}],
            # verify_on_start checks every stored blob's size before the port answers
            "startupProbe": {**probe, "failureThreshold": 60},
            "readinessProbe": probe,
            "livenessProbe": {**probe, "failureThreshold": 6},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/faas-accel", "readOnly": True},
                {"name": "data", "mountPath": cache["dataDir"]},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
    ]
    if values["prewarm"]["enabled"]:
        containers.append(
            {
                **_container(
                    values,
                    "prewarm",
                    ["prewarm", "run", "--config", "/etc/faas-accel/prewarm.yml"],
                    values["prewarm"]["resources"],
                ),
                "volumeMounts": [{"name": "config", "mountPath": "/etc/faas-accel", "readOnly": True}],
            }
        )
    root = {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
    }
    init = [
        {
            "name": "hosts-toml",
            "image": values["image"],
            "imagePullPolicy": values["imagePullPolicy"],
            "command": ["faas-accel", *hosts_args],
            "securityContext": {**root, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "certs-d", "mountPath": "/host/certs.d"}],
        },
        {
            "name": "data-dir",
            "image": values["image"],
            "imagePullPolicy": values["imagePullPolicy"],
            "command": ["chown", f"{NONROOT}:{NONROOT}", cache["dataDir"]],
            "securityContext": root,
            "volumeMounts": [{"name": "data", "mountPath": cache["dataDir"]}],
        },
    ]
    pod = {
        "serviceAccountName": f"{APP}-cache",
        "automountServiceAccountToken": False,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "priorityClassName": "system-node-critical",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": cache["nodeSelector"],
        "tolerations": cache["tolerations"],
        "initContainers": init,
        "containers": containers,
        "terminationGracePeriodSeconds": 45,
        "volumes": [
            {"name": "config", "configMap": {"name": f"{APP}-cache"}},
            {"name": "data", "hostPath": {"path": cache["dataDir"], "type": "DirectoryOrCreate"}},
            {
                "name": "certs-d",
                "hostPath": {"path": values["containerd"]["configPath"], "type": "DirectoryOrCreate"},
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    selector = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "cache"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": f"{APP}-cache", "namespace": values["namespace"], "labels": _labels("cache")},
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": _labels("cache")}, "spec": pod},
        },
    }


def gateway_patch(values: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of faas-netes' gateway Deployment: the hook sidecar, and the
    gateway's `functions_provider_url` pointed at it."""
    gw, port = values["gateway"], values["cache"]["port"]
    hook = _container(
        values,
        "faas-accel-hook",
        [
            "hook",
            "serve",
            "--provider",
            f"http://127.0.0.1:{gw['providerPort']}",
            "--cache",
            f"http://$(HOST_IP):{port}",
            "--mirror-host",
            f"127.0.0.1:{port}",
            "--bind",
            f"127.0.0.1:{gw['hookPort']}",
        ],
        gw["resources"],
    )
    hook["env"] = [
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        *hook["env"],
    ]
    tcp = {"tcpSocket": {"port": gw["hookPort"]}, "periodSeconds": 10}
    hook.update(
        {
            "readinessProbe": tcp,
            "livenessProbe": {**tcp, "failureThreshold": 6},
            "volumeMounts": [{"name": "faas-accel-tmp", "mountPath": "/tmp"}],
        }
    )
    return {
        "metadata": {"annotations": {"faas-accel/patched": "hook sidecar; functions_provider_url -> hook"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "gateway",
                            "env": [
                                {
                                    "name": "functions_provider_url",
                                    "value": f"http://127.0.0.1:{gw['hookPort']}/",
                                }
                            ],
                        },
                        hook,
                    ],
                    "volumes": [{"name": "faas-accel-tmp", "emptyDir": {}}],
                }
            }
        },
    }


def _container(values: dict[str, Any], name: str, args: list[str], resources: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": values["image"],
        "imagePullPolicy": values["imagePullPolicy"],
        "command": ["faas-accel", *args],
        "env": [
            {
                "name": "NIC_CACHE_ADMIN_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": values["adminTokenSecret"], "key": "token"}},
            }
        ],
        "resources": resources,
        "securityContext": {
            "runAsUser": NONROOT,
            "runAsGroup": NONROOT,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _registries(values: dict[str, Any]) -> tuple[mirror_config.Registry, ...]:
    ups = values["cache"]["upstreams"]
    try:
        return mirror_config.parse_registries(f"{host}={url}" for host, url in ups.items())
    except mirror_config.InvalidArgument as exc:
        raise InvalidValue(f"cache.upstreams: {exc}") from exc


def _local(port: int) -> mirror_config.Registry:
    """The hook's rewritten references name 127.0.0.1:<port>: plain HTTP to the node's cache."""
    return mirror_config.Registry(host=f"127.0.0.1:{port}", server=f"http://127.0.0.1:{port}")


def _labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "openfaas",
    }


class _Dumper(yaml.SafeDumper):
    """Writes repeated values out in full: no `&id001` anchors in a manifest."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump_all(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
