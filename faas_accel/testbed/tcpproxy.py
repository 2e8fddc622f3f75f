"""A TCP proxy on loopback that can slow the server->client direction and cut connections.

Used to make an upstream "die mid-blob" at a moment the test chooses: throttle the
registry's responses, wait until the cache has some of the bytes, then `cut()`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from .procs import free_port


class TcpProxy:
    """Forward 127.0.0.1:<port> to `target`; `rate` bytes/s limits server->client."""

    def __init__(self, target: tuple[str, int], *, rate: float | None = None) -> None:
        self.target = target
        self.rate = rate
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bytes_down = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        self._spawn(self._accept)

    def _spawn(self, fn: object, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns.update((client, server))
            self._spawn(self._pump, client, server, False)
            self._spawn(self._pump, server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        start, sent = time.monotonic(), 0
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if down and self.rate:
                    # time the connection sat idle (keep-alive) is no credit: at most 0.1 s of burst
                    start = max(start, time.monotonic() - sent / self.rate - 0.1)
                    sent += len(data)
                    ahead = sent / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                dst.sendall(data)
                if down:
                    with self._lock:
                        self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Reset every open connection, as a dying server would."""
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump thread blocked in recv()
            except OSError:
                pass
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
        for t in self._threads:
            t.join(5)
