"""redis-py's asyncio client against a real redis-server, from a connection pool.

    python redis_client.py PORT (--ops N | --seconds S) [--workers W]

W workers share a ConnectionPool of at most W connections (redis-py's
BlockingConnectionPool, with fewer connections than workers, leaves a
waiter without a connection for seconds even untraced: 8 workers on 4
connections time out after 3 s within the first 3 s). Each operation is a SET, a GET
and an INCR, every tenth a pipeline too. Prints a JSON line: the operations
done and the final counter.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import redis.asyncio as redis


class Budget:
    """How many operations remain, or until when to go on."""

    def __init__(self, ops: int | None, seconds: float | None) -> None:
        self.ops = ops
        self.deadline = (
            None if seconds is None else asyncio.get_running_loop().time() + seconds
        )

    def take(self) -> bool:
        if self.deadline is not None:
            return asyncio.get_running_loop().time() < self.deadline
        assert self.ops is not None
        if self.ops <= 0:
            return False
        self.ops -= 1
        return True


async def redis_worker(client: redis.Redis, wid: int, budget: Budget) -> int:
    done = 0
    while budget.take():
        key = f"aiotrace:w{wid}"
        await client.set(key, str(done))
        value = await client.get(key)
        assert value == str(done).encode(), value
        await client.incr("aiotrace:counter")
        if done % 10 == 0:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(f"{key}:p", "x").get(f"{key}:p")
                assert await pipe.execute() == [True, b"x"]
        done += 1
    return done


async def main(port: int, ops: int | None, seconds: float | None, workers: int) -> None:
    pool = redis.ConnectionPool(host="127.0.0.1", port=port, max_connections=workers)
    client = redis.Redis(connection_pool=pool)
    try:
        await client.delete("aiotrace:counter")
        budget = Budget(ops, seconds)
        counts = await asyncio.gather(
            *(redis_worker(client, w, budget) for w in range(workers))
        )
        counter = int(await client.get("aiotrace:counter") or 0)
    finally:
        await client.aclose()
    print(json.dumps({"ops": sum(counts), "counter": counter}), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--ops", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--workers", type=int, default=8)
    a = p.parse_args()
    asyncio.run(main(a.port, a.ops, a.seconds, a.workers))
