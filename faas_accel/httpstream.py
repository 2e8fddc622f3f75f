"""Streaming HTTP relay pieces shared by the hook and the provider's function proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests
from flask import request

CHUNK = 65536
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
})  # fmt: skip


class SizedBody:
    """A request body as a file-like with a length, so requests streams it with Content-Length
    (some servers cannot read chunked bodies)."""

    def __init__(self, stream: Any, length: int) -> None:
        self._stream, self._length = stream, length

    def __len__(self) -> int:
        return self._length

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._stream.read(n if n is not None and n >= 0 else CHUNK)
        return data


def request_body() -> Any:
    """The incoming body to forward: sized if the client sent a length, chunked if it sent
    chunks, an explicit empty body for `Content-Length: 0` (a POST without it is ambiguous)."""
    if request.content_length is not None:
        return SizedBody(request.stream, request.content_length) if request.content_length else b""
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return iter(lambda: request.stream.read(CHUNK), b"")
    return None


def forward_headers(headers: Any) -> dict[str, str]:
    """End-to-end headers only."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


def response_chunks(upstream: requests.Response) -> Iterator[bytes]:
    """The upstream body as it arrives, bytes untouched (no content decoding); closes it."""
    try:
        if upstream.headers.get("Content-Length") is not None:
            yield from upstream.raw.stream(CHUNK, decode_content=False)
            return
        while True:  # chunked or close-delimited: hand on whatever has arrived
            data = upstream.raw.read1(CHUNK, decode_content=False)
            if not data:
                return
            yield data
    finally:
        upstream.close()
