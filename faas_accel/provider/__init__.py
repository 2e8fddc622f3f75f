"""A faas-provider with faasd's semantics, one per VM, driving containerd (ctr) or dockerd.

`app.create_app` wires the HTTP API (`api.py`, `proxy.py`) to the core (`service.py`), which
keeps function records (`store.py`) and drives a `runtime.Runtime` (`containerd.py`,
`docker_runtime.py`).
"""
