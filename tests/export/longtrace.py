"""A long synthetic server trace, written with the writer's own Encoder, and
decoders for the report's embedded timeline.

One loop serves a request every ``1 / per_second`` seconds for ``seconds``
seconds (one generation per second): each request is a coroutine
``handle_request`` in a user task ``request`` that runs 30 µs, waits 270 µs
for I/O and runs 20 µs more. Late in the trace, three things worth seeing
happen: ``slow_query`` waits 300 ms on a lock (at ``seconds - 3`` s), and
``blocking_call`` stalls the loop for 200 ms (at ``seconds - 2`` s), in a
user task ``report``. Times are explicit, so the bytes depend only on the
arguments.
"""

from __future__ import annotations

import base64
import itertools
import random
import zlib
from pathlib import Path
from typing import Any

from aiotrace._encode import Encoder
from aiotrace._format.framing import HEADER
from aiotrace._format.spec import C, LoopState, ResourceKind

LOOP = 1
THREAD = 100
WALL0 = 1_795_000_000_000_000_000
SLOW_WAIT_NS = 300_000_000
JITTER_BUDGET = 136_000
"""A page budget too small for the jittered 30 s trace at 1 µs (its rows and
index take about 1.1 MB then) and big enough for 512 µs (about 106 KB)."""
STALL_NS = 200_000_000


def _request(
    ev: list[tuple[Any, ...]],
    t: int,
    cid: int,
    task: int,
    a: int = 30_000,
    w: int = 268_000,
    b: int = 20_000,
) -> None:
    # A first step of about a, an I/O wait of about w, a second step of b.
    c = C
    run = t + 2_000 + a + w
    ev += [
        (c["LoopRun"], t, LOOP),
        (c["CoroCreate"], t + 200, cid, None),
        (c["Label"], t + 300, ResourceKind.COROUTINE, cid, "handle_request"),
        (c["CoroStart"], t + 1_000, cid),
        (c["TaskBegin"], t + 2_000, task, 0, "request", None),
        (c["CoroBlock"], t + 1_000 + a, cid, "io", None),
        (c["LoopIdle"], t + 2_000 + a, LOOP),
        (c["LoopRun"], run, LOOP),
        (c["CoroUnblock"], run + 500, cid, "io"),
        (c["CoroStart"], run + 1_000, cid),
        (c["TaskEnd"], run + b - 2_000, task, None),
        (c["CoroEnd"], run + 1_000 + b, cid, "returned"),
        (c["LoopIdle"], run + 2_000 + b, LOOP),
    ]


def write_server_trace(
    path: Path, *, seconds: int = 30, per_second: int = 1000, jitter: int = 0
) -> dict[str, int]:
    """Writes the trace; returns the ids and times of what is worth seeing.

    With ``jitter`` (a seed), each request's steps and wait vary (steps
    5-60 µs and 5-40 µs, waits 50-880 µs at 1000 requests a second),
    drawn from ``random.Random(jitter)``, and nothing is planted: a trace
    that deflates as a real one does, with requests that outlast 512 µs.

    Returns:
        ``slow`` and ``stall``: the coroutine ids of ``slow_query`` and
        ``blocking_call``; ``slow_at`` and ``stall_at``: when they begin,
        in ns since the trace's first event; ``coroutines``: how many.
    """
    enc = Encoder()
    parts = [HEADER]
    ids = itertools.count(1)
    tasks = itertools.count(1)
    gap = 1_000_000_000 // per_second
    first = 1_000_000_000 + 1
    found: dict[str, int] = {}
    rng = random.Random(jitter)
    for g in range(seconds):
        now = 1_000_000_000 * (g + 1)
        parts.append(enc.begin_generation(0, now=now, wall=WALL0 + now))
        ev: list[tuple[Any, ...]] = [(C["LoopStatus"], now + 1, LOOP, LoopState.IDLE)]
        skip = range(0)
        for i in range(per_second):
            t = now + 1_000 + i * gap
            if i in skip:
                continue
            if jitter:
                span = gap - 120_000
                _request(
                    ev,
                    t,
                    next(ids),
                    next(tasks),
                    rng.randrange(5_000, 60_000),
                    rng.randrange(span // 20, span),
                    rng.randrange(5_000, 40_000),
                )
                continue
            _request(ev, t, next(ids), next(tasks))
            if g == seconds - 3 and i == per_second // 10:
                found["slow"] = cid = next(ids)
                t0 = t + gap // 2
                found["slow_at"] = t0 - first
                end = t0 + SLOW_WAIT_NS
                ev += [
                    (C["LoopRun"], t0, LOOP),
                    (C["CoroCreate"], t0 + 100, cid, None),
                    (C["Label"], t0 + 200, ResourceKind.COROUTINE, cid, "slow_query"),
                    (C["CoroStart"], t0 + 300, cid),
                    (C["CoroBlock"], t0 + 50_000, cid, "lock", None),
                    (C["LoopIdle"], t0 + 51_000, LOOP),
                ]
                slow_end = [
                    (C["LoopRun"], end, LOOP),
                    (C["CoroUnblock"], end + 100, cid, "lock"),
                    (C["CoroStart"], end + 200, cid),
                    (C["CoroEnd"], end + 20_000, cid, "returned"),
                    (C["LoopIdle"], end + 21_000, LOOP),
                ]
                slow_slot = i + SLOW_WAIT_NS // gap
            elif g == seconds - 3 and found.get("slow") and i == slow_slot:
                ev += slow_end
            if g == seconds - 2 and i == per_second // 2:
                found["stall"] = cid = next(ids)
                task = next(tasks)
                t0 = t + gap // 2
                found["stall_at"] = t0 - first
                end = t0 + STALL_NS
                ev += [
                    (C["LoopRun"], t0, LOOP),
                    (C["CoroCreate"], t0 + 100, cid, None),
                    (
                        C["Label"],
                        t0 + 200,
                        ResourceKind.COROUTINE,
                        cid,
                        "blocking_call",
                    ),
                    (
                        C["RangeBegin"],
                        t0 + 300,
                        "loop stall",
                        ResourceKind.LOOP,
                        LOOP,
                        None,
                    ),
                    (C["CoroStart"], t0 + 300, cid),
                    (C["TaskBegin"], t0 + 400, task, 0, "report", None),
                    (C["TaskEnd"], end, task, None),
                    (C["CoroEnd"], end + 100, cid, "returned"),
                    (
                        C["RangeEnd"],
                        end + 100,
                        "loop stall",
                        ResourceKind.LOOP,
                        LOOP,
                        None,
                    ),
                    (C["LoopIdle"], end + 200, LOOP),
                ]
                skip = range(i + 1, i + 1 + STALL_NS // gap + 1)
        parts.append(enc.encode_batch(THREAD, "MainThread", ev))
        parts.append(enc.end_generation())
    parts.append(enc.end_trace(0))
    path.write_bytes(b"".join(parts))
    found["coroutines"] = next(ids) - 1
    return found


def _varints(data: bytes) -> list[int]:
    out = []
    v = shift = 0
    for b in data:
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            out.append(v)
            v = shift = 0
    assert shift == 0, "a varint is cut short"
    return out


def _unzigzag(z: int) -> int:
    return -(z + 1) // 2 if z & 1 else z // 2


def decode_level(b64: str, res_ns: int) -> list[tuple[int, int, int, int, int, int]]:
    """A row's level as the page embeds it (deflated varints in base64),
    decoded: (start, end, kind, name, count, fill) per span, in ns, in the
    order written (fill: 15 for a span, the share its spans cover in 16ths
    for a block)."""
    vs = _varints(zlib.decompress(base64.b64decode(b64)))
    spans = []
    i = q = 0
    while i < len(vs):
        q += _unzigzag(vs[i])
        dur, head = vs[i + 1], vs[i + 2]
        i += 3
        count, fill = 1, 15
        if head & 1:
            count, fill = vs[i] >> 4, vs[i] & 15
            i += 1
        spans.append(
            (q * res_ns, (q + dur) * res_ns, (head >> 1) & 15, head >> 5, count, fill)
        )
    return spans


def decode_index(tables: list[dict[str, Any]], res_ns: int) -> list[dict[str, int]]:
    """The search index as the page embeds it: start and end (ns, to the
    index's resolution), name, id, task (0 or 1) and row (-1: none) per
    entry, coroutines first, each table in the order its entries began."""
    signed = (True, False, False, True, False)
    out = []
    for kind, t in enumerate(tables):
        b = zlib.decompress(base64.b64decode(t["data"]))
        n = t["entries"]
        assert len(b) == n * sum(t["widths"])
        cols = []
        off = 0
        for c, w in enumerate(t["widths"]):
            vals = []
            for i in range(n):
                v = sum(b[off + j * n + i] << (8 * j) for j in range(w))
                if signed[c] and v >= 1 << (8 * w - 1):
                    v -= 1 << (8 * w)
                vals.append(v)
            off += w * n
            cols.append(vals)
        s = rid = 0
        for i in range(n):
            s += cols[0][i]
            rid += cols[3][i]
            out.append(
                {
                    "start": s * res_ns,
                    "end": (s + cols[1][i]) * res_ns,
                    "name": cols[2][i],
                    "id": rid,
                    "task": kind,
                    "row": cols[4][i] - 1,
                }
            )
    return out
