"""faas_watchdog: the function server of the runtime layer (standard library only).

It plays of-watchdog's part for python3-http functions: ``python3.11 -m faas_watchdog``
imports ``function.handler`` from the working directory and serves its
``handle(event, context)`` over HTTP/1.1 on ``$port`` (of-watchdog's variable), else
``$PORT``, else 8080. ``GET /_/health`` answers 200 once the handler is loaded; every
other method and path calls the handler.

Handler results, python3-http style:

- a dict with any of ``statusCode``, ``body``, ``headers``: that response (a dict or
  list body is sent as JSON, bytes as they are, anything else as text);
- ``None``: 200 with an empty body;
- ``str``: text/plain; ``bytes``: application/octet-stream; any other dict or list: JSON;
- ``(body, status)`` or ``(body, status, headers)``.

An exception in the handler is a 500 whose body names it. Request bodies may be
chunked (gateways and providers forward them so). On SIGTERM or SIGINT the server
stops accepting, gives requests in flight up to ``$FAAS_SHUTDOWN_GRACE`` seconds
(default 5) and exits 0; it installs its own handlers, so this also holds as PID 1,
where the kernel would otherwise ignore SIGTERM. It never resolves its own name: the
standard ``HTTPServer.server_bind`` calls ``getfqdn``, which can stall for seconds
without DNS.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import signal
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

DEFAULT_PORT = 8080
DEFAULT_GRACE = 5.0
HEALTH_PATH = "/_/health"
MAX_LINE = 65536
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Event:
    """What the handler gets: ``body`` (bytes), ``headers`` (case-insensitive),
    ``method``, ``query`` (name -> first value) and ``path``."""

    def __init__(self, body: bytes, headers: Message | Mapping[str, str], method: str,
                 query: dict[str, str], path: str) -> None:
        self.body = body
        self.headers = headers
        self.method = method
        self.query = query
        self.path = path


class Context:
    """The handler's second argument: ``hostname``, as in python3-http."""

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname or os.environ.get("HOSTNAME", "localhost")


Handle = Callable[[Event, Context], Any]


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class BadRequest(ValueError):
    """The request cannot be read (a broken chunked body, a bad Content-Length)."""


def port_from_env(environ: Mapping[str, str]) -> int:
    """``port`` (of-watchdog's name), else ``PORT``, else 8080."""
    raw = environ.get("port") or environ.get("PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"port {raw!r} is not a number") from None
    if not 0 <= port < 65536:
        raise ValueError(f"port {port} is out of range")
    return port


def _encode_body(body: Any, headers: list[tuple[str, str]]) -> tuple[bytes, str]:
    """The bytes to send and the content type to use when the handler set none."""
    if body is None:
        return b"", "text/plain; charset=utf-8"
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), "application/octet-stream"
    if isinstance(body, dict | list):
        return json.dumps(body).encode(), "application/json"
    return str(body).encode(), "text/plain; charset=utf-8"


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]


def _response(status: int, body: Any, headers: Any) -> Response:
    pairs = _header_pairs(headers)
    data, default_type = _encode_body(body, pairs)
    if not any(k.lower() == "content-type" for k, _ in pairs):
        pairs.append(("Content-Type", default_type))
    return Response(int(status), data, pairs)


def to_response(result: Any) -> Response:
    """Turn whatever the handler returned into a response (see the module docstring)."""
    if isinstance(result, Response):
        return result
    if isinstance(result, dict) and {"statusCode", "body", "headers"} & result.keys():
        return _response(result.get("statusCode", 200), result.get("body"), result.get("headers"))
    if isinstance(result, tuple) and 2 <= len(result) <= 3:
        return _response(result[1], result[0], result[2] if len(result) == 3 else None)
    return _response(200, result, None)


def read_chunked(stream: BinaryIO | io.BufferedIOBase) -> bytes:
    """Read a ``Transfer-Encoding: chunked`` body (and its trailers) from ``stream``."""
    parts: list[bytes] = []
    while True:
        line = stream.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise BadRequest("chunked body ended early")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(f"bad chunk size line {line[:40]!r}") from None
        if size < 0:
            raise BadRequest("negative chunk size")
        if size == 0:
            while stream.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailers: nothing here uses them
            return b"".join(parts)
        data = stream.read(size)
        if len(data) != size or stream.readline(MAX_LINE) not in (b"\r\n", b"\n"):
            raise BadRequest("chunk shorter than its size")
        parts.append(data)


class FunctionServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server calling ``handle`` for every request but health checks."""

    daemon_threads = True  # idle keep-alive connections must not hold up an exit
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handle: Handle, *, context: Context | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.handle_function = handle
        self.context = context or Context()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__(address, FunctionRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(host): a DNS lookup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @contextlib.contextmanager
    def request_in_flight(self) -> Any:
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


class FunctionRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faas_watchdog"
    timeout = 120  # seconds an idle keep-alive connection is kept
    # headers and body go out in separate writes: with Nagle on, a kept-alive connection
    # waits for the peer's delayed ACK (40 ms) before sending the body (Go's of-watchdog
    # sets TCP_NODELAY as well)
    disable_nagle_algorithm = True
    server: FunctionServer

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return read_chunked(self.rfile)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise BadRequest(f"bad Content-Length {length!r}") from None
        if size < 0:
            raise BadRequest(f"bad Content-Length {length!r}")
        body = self.rfile.read(size)
        if len(body) != size:
            raise BadRequest("body shorter than its Content-Length")
        return body

    def _dispatch(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        if url.path == HEALTH_PATH and self.command in ("GET", "HEAD"):
            self._send(Response(200, b"OK", [("Content-Type", "text/plain")]))
            return
        with self.server.request_in_flight():
            try:
                body = self._read_body()
            except BadRequest as exc:
                self.close_connection = True
                self._send(_response(400, f"bad request: {exc}\n", None))
                return
            event = Event(body, self.headers, self.command, dict(parse_qsl(url.query)), url.path)
            try:
                response = to_response(self.server.handle_function(event, self.server.context))
            except Exception as exc:  # the function's bug: report it, keep serving
                self.server.log(traceback.format_exc().rstrip())
                response = _response(500, f"{type(exc).__name__}: {exc}\n", None)
            self._send(response)
            self.server.log(
                f"{self.command} {url.path} - {response.status} - {len(response.body)}B "
                f"({time.monotonic() - started:.4f}s)"
            )

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass  # _dispatch logs one line per call, health checks none

    def log_error(self, format: str, *args: Any) -> None:
        self.server.log(format % args)


def load_handler(module: str = "function.handler") -> Handle:
    """``handle`` from ``module``."""
    handle = getattr(importlib.import_module(module), "handle", None)
    if not callable(handle):
        raise TypeError(f"{module} has no handle(event, context) function")
    return handle  # type: ignore[no-any-return]


def serve(server: FunctionServer, *, grace: float = DEFAULT_GRACE) -> int:
    """Serve until SIGTERM or SIGINT, then drain for up to ``grace`` seconds and close.

    Must run in the main thread (it installs signal handlers; the previous ones are
    restored on return). Returns the exit status: 0.
    """
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    # The C-level handler writes each signal to wake_w: no Python lock is touched in a
    # handler, so a signal can never land inside one held by the main thread.
    previous_fd = signal.set_wakeup_fd(wake_w)
    previous = {signum: signal.signal(signum, _ignore) for signum in SIGNALS}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="faas_watchdog", daemon=True)
    thread.start()
    try:
        while (signum := os.read(wake_r, 1)[0]) not in SIGNALS:
            pass  # another signal someone else handles
        server.log(f"faas_watchdog: {signal.Signals(signum).name}, shutting down")
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)
    server.shutdown()
    if not server.wait_idle(grace):
        server.log(f"faas_watchdog: requests still in flight after {grace}s, exiting anyway")
    server.server_close()
    thread.join(timeout=1)
    return 0


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing: the wakeup fd does the work."""


def _exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faas_watchdog", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--handler", default=os.environ.get("FAAS_HANDLER", "function.handler"),
                        help="module with handle(event, context) (default: function.handler)")
    parser.add_argument("--root", default=os.getcwd(), help="folder to import it from (default: cwd)")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    args = parser.parse_args(argv)
    # Until serve() takes over, a stop request simply ends the process: as PID 1 an
    # unhandled SIGTERM would be ignored, and a slow import must not make it so.
    for signum in SIGNALS:
        signal.signal(signum, _exit_now)
    try:
        port = port_from_env(os.environ)
        grace = float(os.environ.get("FAAS_SHUTDOWN_GRACE", DEFAULT_GRACE))
    except ValueError as exc:
        print(f"faas_watchdog: {exc}", file=sys.stderr)
        return 2
    sys.path.insert(0, args.root)
    try:
        handle = load_handler(args.handler)
    except Exception:
        traceback.print_exc()
        return 1
    server = FunctionServer((args.bind, port), handle)
    server.log(f"faas_watchdog: serving {args.handler}.handle on {args.bind}:{server.port}")
    return serve(server, grace=grace)


if __name__ == "__main__":
    sys.exit(main())
