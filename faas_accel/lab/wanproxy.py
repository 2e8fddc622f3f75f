"""A delaying TCP proxy: WAN latency in user space, because this kernel has no netem.

Each direction of each connection is a pipeline: a chunk read at time t is written at
t + one_way (half the round trip), in order, without waiting for the previous write's
delay — so latency is added per round trip of the exchange while throughput stays what
the link (shaped by `tc tbf`) allows. A new connection also pays `setup` before its first
byte moves, standing in for the TCP (+TLS) handshakes of a real internet path.

Run: `python -m faas_accel.lab.wanproxy --listen 198.18.0.1:5000 --target 127.0.0.1:5001
--rtt 20ms --setup 20ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time

from nic_cache.units import parse_duration

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, one_way: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

    async def pump_in() -> None:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((time.monotonic() + one_way, data))
            if not data:
                return

    async def pump_out() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    inbound = asyncio.ensure_future(pump_in())
    try:
        await pump_out()
    finally:
        inbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await inbound


async def _handle(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    target: tuple[str, int],
    one_way: float,
    setup: float,
) -> None:
    try:
        if setup > 0:
            await asyncio.sleep(setup)
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(
            _pipe(client_r, server_w, one_way),
            _pipe(server_r, client_w, one_way),
            return_exceptions=True,
        )
    finally:
        for w in (client_w, server_w):
            w.close()


async def serve(listen: tuple[str, int], target: tuple[str, int], rtt: float, setup: float) -> None:
    """Serve until SIGTERM/SIGINT."""
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, target, rtt / 2, setup), *listen, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=_addr)
    parser.add_argument("--target", required=True, type=_addr)
    parser.add_argument("--rtt", default="20ms", type=parse_duration, help="added per round trip")
    parser.add_argument("--setup", default="20ms", type=parse_duration, help="added per connection")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.target, args.rtt, args.setup))


if __name__ == "__main__":
    main()
