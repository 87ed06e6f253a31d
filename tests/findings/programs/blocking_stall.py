"""A handler whose blocking call is a stall on its own (150 ms, past the
0.1 s threshold), a loop callback that stalls, and an innocent coroutine
that does the same work off the loop (in a thread)."""

import asyncio
import hashlib
import time


def checksum(data: bytes) -> str:
    t = time.monotonic()
    digest = b""
    while time.monotonic() - t < 0.15:
        digest = hashlib.sha256(data + digest).digest()  # mark: culprit
    return digest.hex()


def flush_metrics() -> None:
    time.sleep(0.12)  # mark: callback


async def upload(n: int) -> None:
    await asyncio.sleep(0.01)
    checksum(b"x" * 1000)  # mark: caller
    await asyncio.sleep(0.01)


async def offloaded(n: int) -> None:
    await asyncio.sleep(0.01)
    await asyncio.to_thread(checksum, b"y" * 1000)  # innocent: in a thread


async def main() -> None:
    asyncio.get_running_loop().call_soon(flush_metrics)
    for i in range(2):
        await asyncio.gather(upload(i), offloaded(i))


asyncio.run(main())
