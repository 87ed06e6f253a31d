"""Queue backpressure: producers blocked on a full queue, and the slow
consumer whose ``get`` wakes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._findings import Facts, Finding, Rule, Section, Wait, site, waited_on
from .._format import format_duration
from ._activity import Activity, listed, names, top

MIN_TOTAL_NS = 50_000_000
"""Producers blocked below this, in all, on one queue is not a finding."""

PUT = ("Queue.put", "MemoryObjectSendStream.send")
GET = ("Queue.get", "MemoryObjectReceiveStream.receive")


@dataclass
class _Queue:
    waits: int = 0
    total: int = 0
    longest: int = 0
    producers: dict[int, int] = field(default_factory=dict)
    consumers: dict[int, int] = field(default_factory=dict)  # who woke them
    consumer_sites: dict[str, int] = field(default_factory=dict)
    consumers_did: dict[str, int] = field(default_factory=dict)
    lib: str = ""


class QueueRule(Rule):
    """QueueRule finds producers that waited on full queues (``put``), and
    names the consumer whose ``get`` let them go on. A consumer waiting in
    ``get`` on an empty queue is idle, not a fault."""

    def __init__(self, activity: Activity) -> None:
        self._queues: dict[str, _Queue] = {}
        self._activity = activity  # fed by the pass before this rule
        self._gets: dict[int, str] = {}  # consumer -> the site of its last get

    def on_wait(self, w: Wait, facts: Facts) -> None:
        if w.reason != "queue":
            return
        lib = waited_on(w.stack)
        if lib in GET:
            self._gets[w.coro] = site(w.stack)
            return
        if lib not in PUT:
            return  # join(), or no site recorded
        where = site(w.stack) or facts.name(w.coro)
        q = self._queues.get(where)
        if q is None:
            q = self._queues[where] = _Queue(lib=lib)
        d = w.duration
        q.waits += 1
        q.total += d
        q.longest = max(q.longest, d)
        q.producers[w.coro] = q.producers.get(w.coro, 0) + d
        if w.waker >= 0 and w.waker != w.coro:
            q.consumers[w.waker] = q.consumers.get(w.waker, 0) + d
            got = self._gets.get(w.waker)
            if got:
                q.consumer_sites[got] = q.consumer_sites.get(got, 0) + d
            for what, ns in self._activity.during(w.waker, w.start, w.end).items():
                if not what.startswith("queue"):
                    q.consumers_did[what] = q.consumers_did.get(what, 0) + ns

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        self._gets.pop(cid, None)

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        found = []
        for where, q in self._queues.items():
            if q.total < MIN_TOTAL_NS:
                continue
            if q.consumers:
                slow = names(facts, q.consumers, 2)
                summary = (
                    f"queue backpressure: the slow consumer is {slow}; producers "
                    f"at {where} waited on a full queue ({q.lib}) "
                    f"{q.waits} times, {format_duration(q.total)} in all"
                )
            else:
                summary = (
                    f"queue backpressure: producers at {where} waited on a full "
                    f"queue ({q.lib}) {q.waits} times, {format_duration(q.total)} "
                    "in all; no coroutine's get woke them"
                )
            parts = [f"producers: {names(facts, q.producers)}"]
            sites = top(q.consumer_sites, 1)
            if sites:
                parts.append(f"the consumer gets at {sites[0][0]}")
            did = top(q.consumers_did, 2)
            if did:
                parts.append("and between gets awaited " + listed(did))
            found.append(
                Finding(
                    kind="queue",
                    summary=summary,
                    detail="; ".join(parts),
                    cost_ns=q.total,
                    where=where,
                    evidence={
                        "put_at": where,
                        "waits": q.waits,
                        "total_ns": q.total,
                        "longest_ns": q.longest,
                        "producers": sorted(q.producers),
                        "consumers": sorted(q.consumers),
                        "consumer_names": sorted({facts.name(c) for c in q.consumers}),
                        "consumer_awaited": dict(top(q.consumers_did, 5)),
                    },
                )
            )
        return found, []
