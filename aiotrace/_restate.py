"""What is alive at a generation's start, restated so the generation stands alone.

A ``StateTracker`` follows the events the drainer encodes: each coroutine's
state (with the reason and stack of its last block), each loop's state and
thread, the coroutine and loop labels, and the ranges still open. At a
generation boundary it takes a snapshot of that state, and the drainer
writes it into the new generation as status records (``CoroStatus``,
``CoroWaiting``, ``LoopStatus``, ``Label``, ``RangeActive``), as Go restates
goroutine and proc status at each generation. A flight-recorder snapshot
that keeps only the last generations then knows what every coroutine and
loop was doing when it begins.

Following costs the drain thread one dict store per event: the encoder's
per-event converters (``Encoder(follow=tracker)``) run the statement
``FOLLOW`` gives for the event's code, in the same pass as encoding, on the
containers in ``StateTracker.scope``. A coroutine or loop event stores
itself as its resource's last event in the recording thread's own dict; a
label stores the label; a range event (rare) is kept for ``end_batch``.
Events that change no state (metrics, logs, regions, samples) cost nothing.
What the last events mean is worked out only at the cut, once per live
coroutine and per generation.

The status records are written when the generation ends, with a time just
before the generation's earliest event: a step record carries its step's
start, which may be older than the generation itself, and the statuses must
come before it once the reader orders the generation by time.

Events of several threads reach the tracker thread by thread, not in time
order: within one thread the last event recorded wins; across threads, for
coroutines and loops, the latest event in time.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from ._format.spec import C, CoroState, LoopState, ResourceKind
from ._recorder import Event

_CREATE = C["CoroCreate"]
_START = C["CoroStart"]
_BLOCK = C["CoroBlock"]
_YIELD = C["CoroYield"]
_UNBLOCK = C["CoroUnblock"]
_END = C["CoroEnd"]
_STATUS = C["CoroStatus"]
_WAITING = C["CoroWaiting"]
_RUN_YIELD = C["CoroRunYield"]
_RUN_BLOCK = C["CoroRunBlock"]
_RUN_END = C["CoroRunEnd"]
_LOOP_STATUS = C["LoopStatus"]
_LOOP_RUN = C["LoopRun"]
_LOOP_IDLE = C["LoopIdle"]
_LOOP_DESTROY = C["LoopDestroy"]
_LABEL = C["Label"]
_RANGE_BEGIN = C["RangeBegin"]
_RANGE_ACTIVE = C["RangeActive"]
_RANGE_END = C["RangeEnd"]

_RUNNABLE = CoroState.RUNNABLE
_RUNNING = CoroState.RUNNING
_WAIT = CoroState.WAITING
_GONE = CoroState.NOT_EXIST
_COROUTINE = ResourceKind.COROUTINE
_LOOP = ResourceKind.LOOP
_STEP_CODES = (
    *(_RUN_BLOCK, _RUN_YIELD, _RUN_END, _UNBLOCK, _CREATE, _START, _BLOCK),
    *(_YIELD, _END, _STATUS, _WAITING),
)
"""Coroutine events: each sets the coroutine's state."""
_LOOP_CODES = (_LOOP_IDLE, _LOOP_RUN, _LOOP_STATUS, _LOOP_DESTROY)
_RANGE_CODES = (_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END)
_LOOP_RUNNING = LoopState.RUNNING
_LOOP_IDLE_STATE = LoopState.IDLE
_ENDS = (_RUN_END, _END)
_CORO_GONE = (_GONE, CoroState.UNDETERMINED)
_LOOP_GONE = (LoopState.NOT_EXIST, LoopState.UNDETERMINED)

FOLLOW: dict[int, str] = {
    **dict.fromkeys(_STEP_CODES, "coros[a0] = ev"),
    **dict.fromkeys(_LOOP_CODES, "loops[a0] = ev"),
    **dict.fromkeys(_RANGE_CODES, "ranges.append(ev)"),
    _LABEL: (
        f"if a0 == {int(_COROUTINE)}:\n    coro_labels[a1] = a2\n"
        f"elif a0 == {int(_LOOP)}:\n    loop_labels[a1] = a2"
    ),
}
"""The statements that follow an event, by code, for the encoder's
converters: ``a0``, ``a1``... are the event's arguments and ``ev`` the
event; the other names are ``StateTracker.scope``'s. Codes not here change
no state. (Labels are keyed by plain ints: a tuple key per label costs
several times the store.)"""

STALL = "loop stall"
"""The stall watchdog's range name (``_stall.STALL``)."""


class Snapshot(NamedTuple):
    """Snapshot is what was alive at one generation boundary.

    ``coroutines`` maps each live one to its last event and
    ``coroutine_threads`` to that event's thread; ``loops`` each loop to
    (time, state, thread); the labels are by id; ``ranges`` maps each open
    range's (name, scope kind, scope id) to the thread that began it.
    """

    coroutines: dict[int, Event]
    coroutine_threads: dict[int, int]
    loops: dict[int, tuple[Any, ...]]
    coroutine_labels: dict[int, str]
    loop_labels: dict[int, str]
    ranges: dict[tuple[Any, int, int], int]


class StateTracker:
    """StateTracker follows live coroutines, loops, labels and open ranges.

    The encoder follows each batch between ``begin_batch`` and
    ``end_batch`` (``abort_batch`` if it fails), storing into ``scope``.
    """

    def __init__(self) -> None:
        # Invariant: as of the last cut, each live coroutine's latest event
        # in time (a step record's time is its start) and that event's
        # thread; each loop's (time, state, thread).
        self._coros: dict[int, Event] = {}
        self._coro_threads: dict[int, int] = {}
        self._loops: dict[int, tuple[Any, ...]] = {}
        # Each thread's last event per coroutine and per loop since the cut,
        # in the thread's own order; merged into the above at the cut.
        self._thread_coros: dict[int, dict[int, Event]] = {}
        self._thread_loops: dict[int, dict[int, Event]] = {}
        self._coro_labels: dict[int, str] = {}
        self._loop_labels: dict[int, str] = {}
        self._ranges: dict[tuple[Any, int, int], int] = {}  # key -> thread
        self.scope: dict[str, Any] = {
            "coros": {},
            "loops": {},
            "coro_labels": self._coro_labels,
            "loop_labels": self._loop_labels,
            "ranges": [],
        }
        """The globals of the encoder's following converters (``FOLLOW``)."""
        self.names: dict[int, str] = {}
        """Thread names by native id, for the status batches."""
        self.earliest: int | None = None
        """The earliest event time fed since the last ``cut``."""
        self.stalls_ended = 0
        """Loop stalls seen ending, all told."""

    def begin_batch(self, thread: int, name: str) -> None:
        """Points ``scope`` at the containers of ``thread``, whose events follow."""
        self.names[thread] = name
        scope = self.scope
        coros = self._thread_coros.get(thread)
        if coros is None:
            coros = self._thread_coros[thread] = {}
            self._thread_loops[thread] = {}
        scope["coros"] = coros
        scope["loops"] = self._thread_loops[thread]

    def end_batch(self, thread: int, earliest: int) -> None:
        """Ends the batch of ``thread`` whose earliest event time is ``earliest``."""
        if self.earliest is None or earliest < self.earliest:
            self.earliest = earliest
        ranges: list[Event] = self.scope["ranges"]
        if ranges:
            for ev in ranges:
                key = (ev[2], ev[3], ev[4])
                if ev[0] == _RANGE_END:
                    self._ranges.pop(key, None)
                    if ev[2] == STALL:
                        self.stalls_ended += 1
                else:
                    self._ranges[key] = thread
            ranges.clear()

    def knows(self, cid: int) -> bool:
        """Whether coroutine ``cid`` was seen alive in the events followed
        (its creation, or a status), as of the last batch."""
        if cid in self._coros:
            return True
        return any(cid in last for last in self._thread_coros.values())

    def abort_batch(self) -> None:
        """Forgets the ranges of a batch that failed to encode."""
        self.scope["ranges"].clear()

    def _merge_coroutines(self) -> None:
        """Takes each thread's last events into ``_coros`` and drops the
        coroutines that ended: C-level work per coroutine seen since the
        cut, plus a comprehension over them for the ended ones."""
        coros, threads = self._coros, self._coro_threads
        ended: list[int] = []
        recheck = False
        for thread, last in self._thread_coros.items():
            if not last:
                continue
            # Another thread's event that is later in time stays.
            stay = [
                (cid, coros[cid], threads[cid])
                for cid in last.keys() & coros.keys()
                if threads[cid] != thread and coros[cid][1] > last[cid][1]
            ]
            coros.update(last)
            threads.update(dict.fromkeys(last, thread))
            for cid, ev, other in stay:
                coros[cid] = ev
                threads[cid] = other
            recheck = recheck or bool(stay) or bool(ended)
            ended += [
                cid
                for cid, ev in last.items()
                if ev[0] in _ENDS or (ev[0] == _STATUS and ev[3] in _CORO_GONE)
            ]
            last.clear()
        if recheck:  # events of several threads: the latest in time counts
            ended = [cid for cid in set(ended) if _ended(coros[cid])]
        _delete(coros, ended)
        _delete(threads, ended)
        _delete(self._coro_labels, [cid for cid in ended if cid in self._coro_labels])

    def _merge_loops(self) -> None:
        loops = self._loops
        for thread, last in self._thread_loops.items():
            for lid, ev in last.items():
                old = loops.get(lid)
                code = ev[0]
                if old is not None and not (
                    old[2] == thread or old[0] <= ev[1] or code == _LOOP_DESTROY
                ):
                    continue
                if code == _LOOP_RUN:
                    state = _LOOP_RUNNING
                elif code == _LOOP_IDLE:
                    state = _LOOP_IDLE_STATE
                elif code == _LOOP_STATUS:
                    state = LoopState(ev[3])
                else:
                    state = LoopState.NOT_EXIST
                loops[lid] = (ev[1], state, thread)
            last.clear()
        for lid in [lid for lid, e in loops.items() if e[1] in _LOOP_GONE]:
            del loops[lid]
            self._loop_labels.pop(lid, None)

    def cut(self) -> Snapshot:
        """Returns what is alive now, for the generation that begins, and
        forgets what has ended."""
        self._merge_coroutines()
        self._merge_loops()
        coros, loops, labels = self._coros, self._loops, self._coro_labels
        if len(labels) > 2 * len(coros) + 1024:
            # Labels of coroutines whose end was never seen (lost events).
            for cid in [cid for cid in labels if cid not in coros]:
                del labels[cid]
        self.earliest = None
        threads = set(self._coro_threads.values())
        threads.update(e[2] for e in loops.values())
        threads.update(self._ranges.values())
        self.names = {t: n for t, n in self.names.items() if t in threads}
        for thread in [t for t in self._thread_coros if t not in threads]:
            del self._thread_coros[thread], self._thread_loops[thread]
        return Snapshot(
            dict(coros),
            dict(self._coro_threads),
            dict(loops),
            dict(labels),
            dict(self._loop_labels),
            dict(self._ranges),
        )


def _delete(d: dict[int, Any], keys: list[int]) -> None:
    """Deletes ``keys`` from ``d``, at C speed: create+await ends a
    coroutine every other step."""
    deque(map(d.__delitem__, keys), maxlen=0)


def _ended(ev: Event) -> bool:
    """Whether a coroutine's last event leaves it gone."""
    code = ev[0]
    return code in _ENDS or (code == _STATUS and ev[3] in _CORO_GONE)


def _status(ev: Event) -> tuple[Any, ...]:
    """The (state, reason, stack) a live coroutine's last event leaves it in."""
    code = ev[0]
    if code == _RUN_BLOCK:
        return (_WAIT, ev[4], ev[5])
    if code in (_BLOCK, _WAITING):
        return (_WAIT, ev[3], ev[4])
    if code == _START:
        return (_RUNNING, None, None)
    if code == _STATUS:
        return (CoroState(ev[3]), None, None)
    return (_RUNNABLE, None, None)


def status_records(snap: Snapshot, now: int, fallback: int) -> dict[int, list[Event]]:
    """Returns the status records of ``snap`` at time ``now``, by thread.

    Records that set a thread's context (a loop's status, a running
    coroutine) go to the thread they describe; the others to ``fallback``.
    A loop's status comes before the statuses of its thread's coroutines.
    """
    out: dict[int, list[Event]] = {}
    labels = snap.loop_labels
    for lid, (_, state, thread) in snap.loops.items():
        records = out.setdefault(thread, [])
        records.append((_LOOP_STATUS, now, lid, int(state)))
        label = labels.get(lid)
        if label is not None:
            records.append((_LABEL, now, _LOOP, lid, label))
    rest = out.setdefault(fallback, [])
    threads = snap.coroutine_threads
    labels = snap.coroutine_labels
    for cid, ev in snap.coroutines.items():
        state, reason, stack = _status(ev)
        if state is _RUNNING:
            out.setdefault(threads[cid], []).append((_STATUS, now, cid, int(state)))
        elif state is _WAIT and reason is not None:
            rest.append((_WAITING, now, cid, reason, stack))
        else:
            rest.append((_STATUS, now, cid, int(state)))
        label = labels.get(cid)
        if label is not None:
            rest.append((_LABEL, now, _COROUTINE, cid, label))
    for (name, kind, scope), thread in snap.ranges.items():
        out.setdefault(thread, []).append((_RANGE_ACTIVE, now, name, kind, scope))
    return {thread: records for thread, records in out.items() if records}
