"""`/async-function/<name>[/<path>]`: queue an invocation and answer 202 at once, as the
OpenFaaS gateway and its queue-worker do for faasd.

`POST` is accepted with `202 Accepted` and an `X-Call-Id` header (the caller's, or a new
UUID). Worker threads (`async_workers`, 1 by default like the queue-worker's
`max_inflight`) invoke the function with the same method, path, query, headers and body;
if the call carried `X-Callback-Url`, the function's answer is POSTed there with its headers
plus `X-Call-Id`, `X-Function-Name`, `X-Function-Status` and `X-Duration-Seconds`. An unknown
function is 404 at once; a full queue is 429; a body over MAX_BODY is 413.

The queue lives in the provider's memory (the provider is one process): calls still queued
when it stops are lost, which the log says. No auth, as with `/function/<name>`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from flask import Blueprint, Response, request

from ..httpstream import HOP_BY_HOP, forward_headers
from .api import services
from .errors import FunctionNotFound, NoEndpoints, PayloadTooLarge, QueueFull
from .model import check_namespace

log = logging.getLogger("faas_accel.provider.async")
bp = Blueprint("async", __name__)
MAX_BODY = 8 << 20
PATH_SAFE = "/:@!$&'()*+,;=~"


@dataclass(frozen=True)
class Call:
    """One queued invocation."""

    id: str
    name: str
    path: str
    query: str
    method: str
    headers: dict[str, str]
    body: bytes
    callback: str | None
    queued_at: float


class AsyncQueue:
    """A bounded queue of calls run by `workers` threads (started on the first call)."""

    def __init__(self, run: Callable[[Call], None], *, workers: int = 1, max_queued: int = 1000) -> None:
        self.run = run
        self.workers = workers
        self._calls: queue.Queue[Call | None] = queue.Queue(maxsize=max_queued)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, call: Call) -> None:
        """Queue `call`; QueueFull if the queue holds as many as it may."""
        self._start()
        try:
            self._calls.put_nowait(call)
        except queue.Full:
            waiting = self._calls.maxsize
            raise QueueFull(f"the async queue is full ({waiting} calls waiting); retry later") from None

    def pending(self) -> int:
        return self._calls.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers after the call each is running; log what stays queued."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        left = self._calls.qsize()
        if left:
            log.warning("stopping with %d async call(s) still queued: they are lost", left)
        for _ in threads:
            self._calls.put(None)
        for thread in threads:
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise QueueFull("the provider is stopping")
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"async-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                self.run(call)
            except Exception:  # one failing call must not stop the worker
                log.exception("async call %s to %s failed", call.id, call.name)


def deliver(call: Call, *, endpoint: Callable[[str], int], count: Callable[[str], None],
            session: requests.Session, timeout: float) -> None:  # fmt: skip
    """Run one call against the function and post the answer to its callback, if any."""
    started = time.monotonic()
    answer: requests.Response | None = None
    try:
        port = endpoint(call.name)
        url = f"http://127.0.0.1:{port}/{urllib.parse.quote(call.path, safe=PATH_SAFE)}"
        if call.query:
            url += "?" + call.query
        answer = session.request(
            call.method, url, data=call.body, headers=call.headers, allow_redirects=False,
            timeout=(5, timeout),
        )  # fmt: skip
        count(call.name)
        status, body, headers = answer.status_code, answer.content, _end_to_end(answer.headers)
    except NoEndpoints as exc:
        status, body, headers = NoEndpoints.status, f"{exc}\n".encode(), {}
    except requests.RequestException as exc:
        log.warning("async call %s: %s", call.id, exc)
        status, body, headers = 500, f"Can't reach service for: {call.name}.\n".encode(), {}
    seconds = time.monotonic() - started
    log.info("async call %s to %s: %d in %.3fs", call.id, call.name, status, seconds)
    if call.callback:
        headers.update({
            "X-Call-Id": call.id, "X-Function-Name": call.name, "X-Function-Status": str(status),
            "X-Duration-Seconds": f"{seconds:f}",
        })  # fmt: skip
        try:
            session.post(call.callback, data=body, headers=headers, timeout=(5, 30)).close()
        except requests.RequestException as exc:
            log.warning("async call %s: posting the result to %s failed: %s", call.id, call.callback, exc)


def _end_to_end(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


@bp.route("/async-function/<name>", defaults={"path": ""}, methods=["POST"], strict_slashes=False)
@bp.route("/async-function/<name>/<path:path>", methods=["POST"])
def enqueue(name: str, path: str) -> Response:
    name, _, namespace = name.partition(".")
    check_namespace(namespace or None)
    wiring = services()
    if wiring.provider.store.get(name) is None:
        raise FunctionNotFound(f"function {name} not found")
    body = request.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise PayloadTooLarge(f"an async call's body may be at most {MAX_BODY} bytes")
    headers = forward_headers(request.headers)
    call_id = headers.pop("X-Call-Id", None) or str(uuid.uuid4())
    callback = headers.pop("X-Callback-Url", None)
    headers["X-Call-Id"] = call_id
    wiring.calls.submit(Call(
        id=call_id, name=name, path=path, query=request.query_string.decode("latin-1"),
        method=request.method, headers=headers, body=body, callback=callback,
        queued_at=time.time(),
    ))  # fmt: skip
    return Response(status=202, headers={"X-Call-Id": call_id})
