"""bench_block_stacks: what ``block_stacks=True`` costs, to choose its default.

Run: ``python bench/bench_block_stacks.py [--rounds N] [--quick]`` (about
2 min).

With ``block_stacks=True`` the tracer walks a blocked coroutine's await
chain once more to keep each frame's line, and the trace carries that stack
on every CoroBlock. Programs, each run whole by ``asyncio.run`` with every
step ending in a block (the case block stacks cost most):
**queue ping-pong**, two coroutines passing an item back and forth through
two ``asyncio.Queue`` (await chains 2 deep); **deep queue ping-pong**, the
same with each ``get`` 8 coroutines down (chains 9 deep); **event fan-out**,
50 coroutines waiting on an ``asyncio.Event`` that is set and cleared.

Once per round each, in an order rotating from round to round: untraced;
traced to a file with the default options (``block_stacks=False``); traced
with ``block_stacks=True``. Wall time of entering ``tracing()`` to leaving it
(stop() encodes what is left). Reported, the median over rounds of the
ratios taken within each round: each traced run to untraced, and
block_stacks=True to block_stacks=False, with the ns added per block and
the trace bytes per block. Times are the process's CPU time (every thread),
not wall time: on a loaded machine wall time mostly measures the other
processes. Ratios within a round are what to read.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

from _common import arguments, environment

import aiotrace
from aiotrace._loop._reasons import Classifier
from aiotrace.reader import CoroState, EventKind, read_events, validate

Main = Coroutine[Any, Any, int]


async def _deep_get(q: asyncio.Queue[int], depth: int) -> int:
    if depth == 0:
        return await q.get()
    return await _deep_get(q, depth - 1)


async def _ping_pong(n: int, depth: int) -> int:
    there: asyncio.Queue[int] = asyncio.Queue()
    back: asyncio.Queue[int] = asyncio.Queue()

    async def serve() -> None:
        for i in range(n):
            there.put_nowait(i)
            await _deep_get(back, depth)

    async def answer() -> None:
        for _ in range(n):
            back.put_nowait(await _deep_get(there, depth))

    await asyncio.gather(serve(), answer())
    return 2 * n


async def queue_ping_pong(n: int) -> int:
    return await _ping_pong(n, 0)


async def deep_queue_ping_pong(n: int) -> int:
    return await _ping_pong(n, 7)


async def event_fan_out(n: int) -> int:
    ev = asyncio.Event()
    rounds = n // 50

    async def waiter() -> None:
        for _ in range(rounds):
            await ev.wait()
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(waiter()) for _ in range(50)]
    for _ in range(rounds):
        await asyncio.sleep(0)
        ev.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        ev.clear()
    await asyncio.gather(*tasks)
    return 50 * rounds


WORKLOADS: tuple[tuple[str, Callable[[int], Main], int], ...] = (
    ("queue ping-pong", queue_ping_pong, 30_000),
    ("deep queue ping-pong", deep_queue_ping_pong, 15_000),
    ("event fan-out", event_fan_out, 30_000),
)
MODES = ("untraced", "no sites", "block_stacks=False", "block_stacks=True")
"""``no sites``: the defaults with each wait's site (the library function
and the awaiting line, recorded since the findings) left out, to measure
what the site costs."""


def _no_site(self: Any, lib: Any, caller: Any) -> None:
    return None


def once(main: Callable[[int], Main], n: int, mode: str, path: str) -> float:
    """Runs one workload once in ``mode``; returns the process's CPU time
    (all its threads: the drain and writer threads too) in seconds."""
    t0 = time.process_time()
    if mode == "untraced":
        asyncio.run(main(n))
    elif mode == "no sites":
        site = Classifier._site
        Classifier._site = _no_site  # type: ignore[method-assign]
        try:
            with aiotrace.tracing(path):
                asyncio.run(main(n))
        finally:
            Classifier._site = site  # type: ignore[method-assign]
    else:
        with aiotrace.tracing(path, block_stacks=mode == "block_stacks=True"):
            asyncio.run(main(n))
    return time.process_time() - t0


def blocks_of(path: str) -> tuple[int, int, bool]:
    """(blocks, blocks with a stack, valid) in the trace at ``path``."""
    events = read_events(path)
    blocks = [
        ev.state_transition
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.new is CoroState.WAITING
    ]
    return len(blocks), sum(1 for b in blocks if b.stack), validate(events) == []


def main() -> None:
    """Runs the rounds and prints one row per workload."""
    args = arguments(__doc__ or "", rounds=9)
    print(environment())
    print(f"rounds: {args.rounds}, interleaved; medians of per-round ratios")
    header = (
        f"{'workload':22} {'untraced cpu ms':>15} {'no sites':>8} {'default':>8} "
        f"{'stacks':>8} {'sites +ns/block':>15} "
        f"{'stacks/default':>14} {'+ns/block':>9} {'bytes/block':>18}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as d:
        for name, fn, full in WORKLOADS:
            n = full // 10 if args.quick else full
            times: dict[str, list[float]] = {m: [] for m in MODES}
            size: dict[str, int] = {}
            info: dict[str, tuple[int, int, bool]] = {}
            once(fn, n // 10, "untraced", os.path.join(d, "warm.trace"))
            for r in range(args.rounds):
                order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
                for mode in order:
                    path = os.path.join(d, f"{mode}.trace")
                    times[mode].append(once(fn, n, mode, path))
                    if mode != "untraced" and mode not in info:
                        info[mode] = blocks_of(path)
                        size[mode] = os.path.getsize(path)
            base = times["untraced"]
            off, on = times["block_stacks=False"], times["block_stacks=True"]
            bare = times["no sites"]
            ratio_bare = statistics.median(
                a / b for a, b in zip(bare, base, strict=True)
            )
            site_ns = statistics.median(
                (a - b) / info["no sites"][0] * 1e9
                for a, b in zip(off, bare, strict=True)
            )
            ratio_off = statistics.median(a / b for a, b in zip(off, base, strict=True))
            ratio_on = statistics.median(a / b for a, b in zip(on, base, strict=True))
            on_off = statistics.median(a / b for a, b in zip(on, off, strict=True))
            blocks = info["block_stacks=True"][0]
            added = statistics.median(
                (a - b) / blocks * 1e9 for a, b in zip(on, off, strict=True)
            )
            bpb_off = size["block_stacks=False"] / info["block_stacks=False"][0]
            bpb_on = size["block_stacks=True"] / blocks
            assert info["block_stacks=True"][1] == blocks, "a block without a stack"
            assert info["no sites"][1] == 0, "a stack without sites"
            assert info["block_stacks=False"][1] == info["block_stacks=False"][0]
            assert all(v[2] for v in info.values()), "a trace did not validate"
            print(
                f"{name:22} {statistics.median(base) * 1e3:15.0f} "
                f"{ratio_bare:7.2f}x {ratio_off:7.2f}x {ratio_on:7.2f}x "
                f"{site_ns:15.0f} {on_off:13.3f}x "
                f"{added:9.0f} {bpb_off:8.1f} -> {bpb_on:6.1f}"
            )


if __name__ == "__main__":
    main()
