"""A TCP proxy that adds a fixed one-way delay in each direction, for benchmarks under network latency.

    python Benchmarks/delay_proxy.py --listen PORT --target HOST:PORT --delay-ms 0.5

Where the kernel has the netem queueing discipline, `tc qdisc add dev veth0 root netem delay 1ms` on a veth pair
into a network namespace is the better tool; this proxy stands in where netem is missing (it costs some CPU of
its own). Each chunk read is written to the other side `delay` after it arrived, in order, without throttling:
a round trip through the proxy takes at least 2 × delay longer.
"""

from __future__ import annotations

import argparse
import asyncio
import time


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float):
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                break
    except (ConnectionError, asyncio.CancelledError):
        await queue.put((0, b""))
    await sender


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--delay-ms", type=float, default=0.5)
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    delay = a.delay_ms / 1000

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer, delay), pipe(server_reader, client_writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", a.listen)
    print(f"delay proxy on 127.0.0.1:{a.listen} -> {a.target}, {a.delay_ms} ms each way", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
