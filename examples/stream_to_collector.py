"""Stream a live trace over TCP to a collector that reads it as it arrives.

The traced program writes its trace to an anyio TCP stream with
``async with aiotrace.tracing(stream)``; the collector, here in the same
process for the sake of the example, reads events with
``aiotrace.reader.AsyncReader`` while the program runs.

Run it with ``python examples/stream_to_collector.py``; it prints the events
the collector received and a count by kind.
"""

from __future__ import annotations

import collections

import anyio
import anyio.abc

import aiotrace
from aiotrace import reader


async def collect(stream: anyio.abc.ByteReceiveStream, out: list[reader.Event]) -> None:
    """Reads one trace from ``stream`` until it ends."""
    async for ev in reader.AsyncReader(stream):
        out.append(ev)


async def traced_program(orders: int) -> None:
    """Some concurrent work that logs what it does."""

    async def worker(n: int) -> None:
        aiotrace.logf("order", "%d: start", n)
        await anyio.sleep(0.001 * n)
        aiotrace.logf("order", "%d: done", n)

    async with anyio.create_task_group() as tg:
        for n in range(orders):
            tg.start_soon(worker, n)


async def main(orders: int = 5) -> list[reader.Event]:
    """Runs a collector on 127.0.0.1 and a traced program streaming to it."""
    received: list[reader.Event] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    done = anyio.Event()

    async def handle(conn: anyio.abc.SocketStream) -> None:
        async with conn:
            await collect(conn, received)
        done.set()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            async with aiotrace.tracing(stream):
                await traced_program(orders)
            await stream.send_eof()
        await done.wait()
        tg.cancel_scope.cancel()
    return received


if __name__ == "__main__":
    events = anyio.run(main)
    for ev in events:
        print(ev)
    print(dict(collections.Counter(ev.kind.name for ev in events)))
