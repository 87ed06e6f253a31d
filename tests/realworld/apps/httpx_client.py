"""httpx's AsyncClient with a pool of 2 connections and more concurrent requests.

    python httpx_client.py URL (--requests N | --seconds S) [--workers W]
                           [--trace FILE]

W workers share one AsyncClient limited to 2 connections, so the others
wait in httpcore's pool for a connection. Prints a JSON line: the requests
made and how many answered 200. With ``--trace`` the program traces itself
through the library, with ``block_stacks=True`` (what `aiotrace profile`
asks for), instead of being run under `aiotrace run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx


class Budget:
    """How many requests remain, or until when to go on."""

    def __init__(self, n: int | None, seconds: float | None) -> None:
        self.n = n
        self.deadline = (
            None if seconds is None else asyncio.get_running_loop().time() + seconds
        )

    def take(self) -> bool:
        if self.deadline is not None:
            return asyncio.get_running_loop().time() < self.deadline
        assert self.n is not None
        if self.n <= 0:
            return False
        self.n -= 1
        return True


async def httpx_worker(
    client: httpx.AsyncClient, url: str, budget: Budget
) -> list[int]:
    statuses = []
    while budget.take():
        r = await client.get(url)
        statuses.append(r.status_code)
    return statuses


async def main(url: str, n: int | None, seconds: float | None, workers: int) -> None:
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        budget = Budget(n, seconds)
        results = await asyncio.gather(
            *(httpx_worker(client, url, budget) for _ in range(workers))
        )
    statuses = [s for r in results for s in r]
    print(
        json.dumps({"requests": len(statuses), "ok": statuses.count(200)}), flush=True
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--requests", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--trace")
    a = p.parse_args()
    if a.trace is None:
        asyncio.run(main(a.url, a.requests, a.seconds, a.workers))
    else:
        import aiotrace

        with aiotrace.tracing(a.trace, block_stacks=True):
            asyncio.run(main(a.url, a.requests, a.seconds, a.workers))
