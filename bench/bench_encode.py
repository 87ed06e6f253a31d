"""bench_encode: encoder throughput and trace size in bytes per event.

Run: ``python bench/bench_encode.py [--rounds N] [--quick]`` (about 5 s).

1. Throughput of ``Encoder.encode_batch`` (events/s, output MB/s, ns/event)
   on synthetic workloads (see ``bench/_common.py``), fed as the drainer
   feeds it: chunks of ``BATCH_EVENTS`` events, a new generation every
   1 MiB of output. Workloads, interleaved per round:

   - ``scheduling``: ~100 coroutines ping-ponging with ``sleep(0)``, queues
     and short sleeps: CoroStart / CoroYield(stack None) / CoroBlock(reason
     "queue" or "sleep", stack None) / CoroUnblock(reason "") / LoopRun /
     LoopIdle; small integer coroutine ids; 1-20 us between events (seeded).
   - ``annotated``: the same mixed with Log (4 categories, half the messages
     unique) and RegionBegin/RegionEnd (4 types).
   - ``scheduling, id()-sized ids``: ``scheduling`` with 64-bit coroutine ids,
     to show what using ``id(coro)`` as the id would cost.

2. Bytes per event of each workload: all frames (generation, string table,
   batch frames and their 9-byte heads) over the number of events, and the
   average encoded size of each event type.

3. Bytes per event of real traces: a real asyncio program (100 coroutines
   ping-ponging with ``await asyncio.sleep(0)``, calling ``aiotrace.log``
   every 10th iteration) traced to a MemorySink. The scheduling hook does
   not exist yet, so these traces hold only the logs (and thread labels).
   A third program installs a bench-only stand-in scheduling hook (a task
   factory that wraps each coroutine and records CoroStart / CoroYield /
   CoroBlock / CoroUnblock / CoroEnd with real timestamps), to check the
   synthetic workload's assumptions against real time deltas.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import statistics
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import msgpack
from _common import (
    CORO_BLOCK,
    CORO_START,
    CORO_UNBLOCK,
    CORO_YIELD,
    Event,
    NoiseProbe,
    annotated_events,
    arguments,
    environment,
    event_mix,
    print_table,
    scheduling_events,
    summarize,
)

import aiotrace
from aiotrace import _recorder
from aiotrace._drain import BATCH_EVENTS
from aiotrace._encode import Encoder
from aiotrace._format.framing import FRAME_HEAD, HEADER, FrameKind
from aiotrace._format.spec import BY_CODE, C
from aiotrace.reader import Reader
from aiotrace.sinks import MemorySink

GENERATION_BYTES = 1 << 20
"""Output size after which the drainer starts a new generation (its default)."""

CORO_END = C["CoroEnd"]
CORO_CREATE = C["CoroCreate"]


def encode(events: list[Event]) -> bytes:
    """Encodes ``events`` into a whole trace, as the drainer would."""
    enc = Encoder()
    parts = [HEADER, enc.begin_generation(0)]
    for i in range(0, len(events), BATCH_EVENTS):
        parts.append(enc.encode_batch(1, "MainThread", events[i : i + BATCH_EVENTS]))
        if enc.bytes >= GENERATION_BYTES:
            parts.append(enc.end_generation())
            parts.append(enc.begin_generation(0))
    parts.append(enc.end_generation())
    parts.append(enc.end_trace(0))
    return b"".join(parts)


def time_encode(events: list[Event]) -> float:
    """Returns the seconds ``encode(events)`` takes."""
    t0 = time.perf_counter_ns()
    encode(events)
    return (time.perf_counter_ns() - t0) / 1e9


def frames(trace: bytes) -> Generator[tuple[int, bytes], None, None]:
    """Yields (kind, payload) for each frame of a trace."""
    pos = len(HEADER)
    while pos < len(trace):
        kind, length, _ = FRAME_HEAD.unpack_from(trace, pos)
        pos += FRAME_HEAD.size
        yield kind, trace[pos : pos + length]
        pos += length


def sizes_by_type(trace: bytes) -> dict[str, tuple[int, float]]:
    """Returns, per event type, its count and average encoded size in bytes.

    The size of an event is that of its msgpack array in a BATCH frame;
    frame heads, batch heads and tables are not in it.
    """
    total: dict[int, list[int]] = {}
    for kind, payload in frames(trace):
        if kind != FrameKind.BATCH:
            continue
        for ev in msgpack.unpackb(payload, use_list=False)[2:]:
            acc = total.setdefault(ev[0], [0, 0])
            acc[0] += 1
            acc[1] += len(msgpack.packb(ev))
    return {
        BY_CODE[code].name: (n, size / n)
        for code, (n, size) in sorted(total.items(), key=lambda kv: -kv[1][0])
    }


def overhead(trace: bytes) -> dict[str, int]:
    """Returns the bytes of each frame kind (heads included) in a trace."""
    out: dict[str, int] = {"header": len(HEADER)}
    for kind, payload in frames(trace):
        name = FrameKind(kind).name
        out[name] = out.get(name, 0) + FRAME_HEAD.size + len(payload)
    return out


# --------------------------------------------------------------------------
# Real programs


class StandInHook(Coroutine[Any, Any, Any]):
    """StandInHook wraps a task's coroutine and records its transitions.

    A bench-only stand-in for the execution tracer's scheduling hook: each
    step records CoroStart, then CoroYield (the coroutine yielded None, as
    ``sleep(0)`` does), CoroBlock "future" (it awaits a future; CoroUnblock
    follows from the future's done callback) or CoroEnd.
    """

    __slots__ = ("_coro", "_id")

    _ids = itertools.count(1)

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._id = next(self._ids)
        _record(CORO_CREATE, self._id, None)

    def send(self, value: Any) -> Any:
        return self._step(self._coro.send, value)

    def throw(self, *exc: Any) -> Any:
        return self._step(self._coro.throw, *exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def _step(self, fn: Callable[..., Any], *args: Any) -> Any:
        cid = self._id
        _record(CORO_START, cid)
        try:
            out = fn(*args)
        except BaseException:
            _record(CORO_END, cid, "return")
            raise
        if out is None:
            _record(CORO_YIELD, cid, None)
        else:
            _record(CORO_BLOCK, cid, "future", None)
            out.add_done_callback(lambda _: _record(CORO_UNBLOCK, cid, ""))
        return out


def _record(code: int, *args: Any) -> None:
    rec = _recorder.active
    if rec is not None:
        rec.events().append((code, _recorder.clock(), *args))


def _task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
) -> asyncio.Task[Any]:
    return asyncio.Task(StandInHook(coro), loop=loop, **kwargs)


async def sleep0_pingpong(coroutines: int, iterations: int, unique: bool) -> None:
    """``coroutines`` workers loop on ``await asyncio.sleep(0)`` and log."""

    async def worker(i: int) -> None:
        for k in range(iterations):
            await asyncio.sleep(0)
            if k % 10 == 0:
                aiotrace.log("pingpong", f"worker {i} at {k}" if unique else "tick")

    await asyncio.gather(*(worker(i) for i in range(coroutines)))


async def queue_pingpong(pairs: int, iterations: int) -> None:
    """``pairs`` pairs of workers pass a token back and forth on queues."""

    async def player(inbox: asyncio.Queue[int], outbox: asyncio.Queue[int]) -> None:
        for _ in range(iterations):
            token = await inbox.get()
            await outbox.put(token + 1)

    tasks = []
    for _ in range(pairs):
        a: asyncio.Queue[int] = asyncio.Queue()
        b: asyncio.Queue[int] = asyncio.Queue()
        a.put_nowait(0)
        tasks.append(player(a, b))
        tasks.append(player(b, a))
    await asyncio.gather(*tasks)


async def hooked(program: Coroutine[Any, Any, None]) -> None:
    """Runs ``program`` with the stand-in hook on every task it creates."""
    asyncio.get_running_loop().set_task_factory(_task_factory)
    await program


def real_trace(
    main: Callable[[], Coroutine[Any, Any, None]],
) -> tuple[int, int, float]:
    """Traces ``asyncio.run(main())``.

    Returns:
        The trace's events and bytes, and the median time between
        consecutive events of a thread, in microseconds.
    """
    sink = MemorySink()
    with aiotrace.tracing(sink):
        asyncio.run(main())
    data = sink.getvalue()
    last: dict[int, int] = {}
    gaps: list[int] = []
    events = 0
    for ev in Reader(io.BytesIO(data)).raw():
        events += 1
        prev = last.get(ev.thread)
        if prev is not None:
            gaps.append(ev.time - prev)
        last[ev.thread] = ev.time
    return events, len(data), statistics.median(gaps) / 1e3 if gaps else 0.0


# --------------------------------------------------------------------------


def main() -> None:
    args = arguments(__doc__ or "", rounds=9)
    n = 50_000 if args.quick else 200_000
    print(f"bench_encode  {environment()}")
    workloads: dict[str, list[Event]] = {
        "scheduling": scheduling_events(n),
        "annotated": annotated_events(n),
        "scheduling, id()-sized ids": scheduling_events(n, wide_ids=True),
    }
    for name, evs in workloads.items():
        print(f"{name}: {event_mix(evs)}")
    print(f"{args.rounds} interleaved rounds of {n} events per workload")

    for evs in workloads.values():  # warm up
        encode(evs[:BATCH_EVENTS])
    seconds: dict[str, list[float]] = {k: [] for k in workloads}
    probe = NoiseProbe()
    for r in range(args.rounds):
        probe.sample()
        names = list(workloads)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            seconds[name].append(time_encode(workloads[name]))

    rows = []
    traces = {name: encode(evs) for name, evs in workloads.items()}
    for name, evs in workloads.items():
        s = summarize([len(evs) / x for x in seconds[name]])
        size = len(traces[name])
        rows.append(
            [
                name,
                f"{s.median / 1e6:.2f}",
                f"{s.lo / 1e6:.2f}-{s.hi / 1e6:.2f}",
                f"{s.median * size / len(evs) / 1e6:.1f}",
                f"{1e9 / s.median:.0f}",
                f"{size / len(evs):.2f}",
            ]
        )
    print_table(
        "Encoder.encode_batch throughput and size (median over rounds)",
        ["workload", "M ev/s", "min-max", "MB/s out", "ns/ev", "bytes/ev"],
        rows,
    )
    print(probe.report())

    for name in ("scheduling", "annotated"):
        kinds = overhead(traces[name])
        nev = len(workloads[name])
        by_type = sizes_by_type(traces[name])
        rows = [
            [t, f"{100 * k / nev:.1f}%", f"{size:.2f}"]
            for t, (k, size) in by_type.items()
        ]
        body = sum(k * size for k, size in by_type.values())
        rows.append(["all events (msgpack arrays only)", "100%", f"{body / nev:.2f}"])
        small = 0.0
        for kind, nbytes in kinds.items():
            extra = nbytes - body if kind == "BATCH" else nbytes
            if kind not in ("BATCH", "STRINGS", "STACKS"):
                small += extra
                continue
            label = "BATCH heads (frame + [thread, base])" if kind == "BATCH" else kind
            rows.append([f"+ {label}", "", f"{extra / nev:.2f}"])
        rows.append(["+ header, GENERATION*, TRACE_END", "", f"{small / nev:.2f}"])
        rows.append(["= whole trace", "", f"{len(traces[name]) / nev:.2f}"])
        print_table(
            f"Bytes per event by type: {name}",
            ["event type / frame", "share", "bytes/ev"],
            rows,
        )

    scale = 4 if args.quick else 1
    iters = 2000 // scale
    programs: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "sleep(0) x100, logs only, message 'tick'": lambda: sleep0_pingpong(
            100, iters, unique=False
        ),
        "sleep(0) x100, logs only, unique messages": lambda: sleep0_pingpong(
            100, iters, unique=True
        ),
        "sleep(0) x100 + logs, stand-in hook": lambda: hooked(
            sleep0_pingpong(100, iters // 4, unique=False)
        ),
        "queue ping-pong x50 pairs, stand-in hook": lambda: hooked(
            queue_pingpong(50, iters // 4)
        ),
    }
    rows = []
    for name, prog in programs.items():
        events, nbytes, gap = real_trace(prog)
        rows.append(
            [name, f"{events}", f"{nbytes}", f"{nbytes / events:.2f}", f"{gap:.1f}"]
        )
    print_table(
        "Real traces (asyncio programs traced to a MemorySink)",
        ["program", "events", "bytes", "bytes/ev", "median gap us"],
        rows,
    )
    print(
        "Without a scheduling hook in aiotrace yet, real traces hold only logs;\n"
        "the stand-in hook rows use a bench-only task factory (see the docstring)."
    )


if __name__ == "__main__":
    main()
