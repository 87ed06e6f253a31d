"""A cache with a concurrent-fill race, found by ``aiotrace.tracetest``.

Two clients ask a cache for the same key; the cache asks a slow database on
a miss. ``RacyCache`` checks, then awaits the database, then fills: a
second client that comes while the first is waiting misses too, and the
database is asked twice (the second answer overwrites the first, so the
clients can even see different values). ``Cache`` keeps one load per key in
flight and every client awaits it.

With the default scheduling the race stays hidden: alice's load finishes
long before bob arrives. ``tracetest.verify`` re-runs the scenario once per
event, holding that event back; holding back the database's answer to
alice lets bob arrive first, and the racy cache fails.

Run it with ``python examples/tracetest_example.py``; it prints what verify
finds for each cache, and exits 0 when the racy cache fails and the fixed
one passes, as they should.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from aiotrace import probe, tracetest


@probe.tracepoint
async def trace_load(key: str) -> None:
    """The database is asked for ``key``."""


@probe.tracepoint
async def trace_served(client: str, key: str, value: str) -> None:
    """``client`` got ``value`` for ``key``."""


class Database:
    """Database answers each key with its version: one more for each load."""

    def __init__(self) -> None:
        self.loads = 0

    async def load(self, key: str) -> str:
        """Returns ``key``'s value, after a round trip."""
        self.loads += 1
        version = self.loads
        await trace_load(key)
        await asyncio.sleep(0)  # the round trip
        return f"{key}:v{version}"


class RacyCache:
    """RacyCache checks, then fills, with an await in between: a race."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str:
        """Returns the cached value of ``key``, loading it on a miss."""
        if key in self._values:
            return self._values[key]
        value = await self._db.load(key)  # another client may miss meanwhile
        self._values[key] = value
        return value


class Cache:
    """Cache keeps one load per key in flight; every client awaits it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._loads: dict[str, asyncio.Task[str]] = {}

    async def get(self, key: str) -> str:
        """Returns the cached value of ``key``, loading it once."""
        load = self._loads.get(key)
        if load is None:
            load = asyncio.create_task(self._db.load(key), name=f"load {key}")
            self._loads[key] = load
        return await asyncio.shield(load)


async def serve(cache: RacyCache | Cache, client: str, key: str, after: float) -> None:
    """A client arrives after ``after`` seconds and asks for ``key``."""
    await asyncio.sleep(after)
    value = await cache.get(key)
    await trace_served(client, key, value)


@dataclass(frozen=True)
class Load:
    """The database was asked for ``key``."""

    key: str


@dataclass(frozen=True)
class Served:
    """``client`` got ``value`` for ``key``."""

    client: str
    key: str
    value: str


BOB_ARRIVES = 0.05
"""When bob asks, in seconds: after alice is served, unless her load is slow."""
DELAY = 0.2
"""How long verify holds back each event: longer than bob takes to arrive."""
TIMEOUT = 1.0
"""The deadlock timeout of the example's runs."""


def scenario(
    cache_type: type[RacyCache] | type[Cache],
) -> tracetest.Body:
    """Returns the test body: alice, then bob, get "k"; one load, one value.

    Streams: "db" for loads, and one per client for what it was served.
    Each stream is ordered by causality: a client is served once, and the
    test expects a single load.
    """

    async def body(t: tracetest.T) -> None:
        t.attach(trace_load, stream="db", event=Load)
        t.attach(trace_served, stream=lambda ev: ev.client, event=Served)
        cache = cache_type(Database())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve(cache, "alice", "k", 0), name="alice")
            tg.create_task(serve(cache, "bob", "k", BOB_ARRIVES), name="bob")
            await t.expect("db", Load("k"))
            await t.expect("alice", Served("alice", "k", "k:v1"))
            await t.expect("bob", Served("bob", "k", "k:v1"))

    return body


async def check(cache_type: type[RacyCache] | type[Cache]) -> str | None:
    """Verifies the scenario for ``cache_type``; returns the failure, or None."""
    try:
        await tracetest.verify(scenario(cache_type), timeout=TIMEOUT, delay=DELAY)
    except tracetest.Failure as failure:
        return str(failure)
    return None


async def main() -> int:
    """Verifies both caches; returns 0 if only the racy one fails."""
    racy = await check(RacyCache)
    print("RacyCache:", "passed" if racy is None else f"FAILED\n{racy}")
    fixed = await check(Cache)
    print("Cache:", "passed" if fixed is None else f"FAILED\n{fixed}")
    return 0 if racy is not None and fixed is None else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
