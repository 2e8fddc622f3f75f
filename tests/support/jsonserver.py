"""A stand-in JSON server on 127.0.0.1 for clients under test (the NIC's admin API)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (method, path with query, request headers, request body) -> (status, response body)
Answer = Callable[[str, str, Mapping[str, str], bytes], tuple[int, bytes]]


@contextlib.contextmanager
def serving(answer: Answer) -> Iterator[str]:
    """Serve every request with `answer` (as application/json); yields the server's URL and
    shuts it down, joined, afterwards."""

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            sent = self.rfile.read(length) if length else b""
            status, body = answer(self.command, self.path, dict(self.headers), sent)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = handle_one

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
