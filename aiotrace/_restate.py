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

The status records are written when the generation ends, with a time just
before the generation's earliest event: a step record carries its step's
start, which may be older than the generation itself, and the statuses must
come before it once the reader orders the generation by time.

Events of several threads reach the tracker thread by thread, not in time
order; for coroutines and loops the latest event in time wins.
"""

from __future__ import annotations

from operator import itemgetter
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
_time = itemgetter(1)
_STEP_CODES = frozenset(
    {_RUN_BLOCK, _RUN_YIELD, _RUN_END, _UNBLOCK, _CREATE, _START, _BLOCK, _YIELD}
    | {_END, _STATUS, _WAITING}
)
"""Coroutine events: each sets the coroutine's state."""
_OTHER_CODES = frozenset(
    {_LOOP_IDLE, _LOOP_RUN, _LOOP_STATUS, _LOOP_DESTROY, _LABEL}
    | {_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END}
)
_LOOP_RUNNING = LoopState.RUNNING
_LOOP_IDLE_STATE = LoopState.IDLE

STALL = "loop stall"
"""The stall watchdog's range name (``_stall.STALL``)."""


class Snapshot(NamedTuple):
    """Snapshot is what was alive at one generation boundary.

    ``coroutines`` maps each to (time, state, thread, reason, stack);
    ``loops`` each to (time, state, thread); ``ranges`` each open range's
    (name, scope kind, scope id) to the thread that began it.
    """

    coroutines: dict[int, tuple[Any, ...]]
    loops: dict[int, tuple[Any, ...]]
    labels: dict[tuple[int, int], str]
    ranges: dict[tuple[Any, int, int], int]


class StateTracker:
    """StateTracker follows live coroutines, loops, labels and open ranges."""

    def __init__(self) -> None:
        # Invariant: entries are (time, event, thread): the coroutine's
        # latest event in time (its start, for a step record) and its thread.
        self._coros: dict[int, tuple[Any, ...]] = {}
        self._loops: dict[int, tuple[Any, ...]] = {}  # (time, state, thread)
        self._labels: dict[tuple[int, int], str] = {}
        self._ranges: dict[tuple[Any, int, int], int] = {}  # key -> thread
        self.names: dict[int, str] = {}
        """Thread names by native id, for the status batches."""
        self.earliest: int | None = None
        """The earliest event time fed since the last ``cut``."""
        self.stalls_ended = 0
        """Loop stalls seen ending, all told."""

    def feed(self, thread: int, name: str, events: list[Event]) -> None:
        """Follows the events one thread recorded, in its order."""
        if not events:
            return
        self.names[thread] = name
        lo = min(map(_time, events))
        if self.earliest is None or lo < self.earliest:
            self.earliest = lo
        # This runs on the drain thread for every event, holding the GIL
        # the traced program needs: comprehensions, not a loop of ifs. In
        # one thread's buffer a coroutine's events are in the order they
        # happened, so its last one there says its state.
        steps = _STEP_CODES
        last = {ev[2]: ev for ev in events if ev[0] in steps}
        coros = self._coros
        get = coros.get
        for cid, ev in last.items():
            old = get(cid)
            if old is None or old[0] <= ev[1]:
                coros[cid] = (ev[1], ev, thread)
        tracked = _OTHER_CODES
        for ev in [ev for ev in events if ev[0] in tracked]:
            self._other(ev[0], ev, thread)

    def _other(self, code: int, ev: Event, thread: int) -> None:
        if code in (_LOOP_IDLE, _LOOP_RUN):
            old = self._loops.get(ev[2])
            if old is None or old[0] <= ev[1]:
                state = _LOOP_RUNNING if code == _LOOP_RUN else _LOOP_IDLE_STATE
                self._loops[ev[2]] = (ev[1], state, thread)
        elif code == _LABEL:
            if ev[2] in (_COROUTINE, _LOOP):
                self._labels[ev[2], ev[3]] = ev[4]
        elif code in (_RANGE_BEGIN, _RANGE_ACTIVE):
            self._ranges[ev[2], ev[3], ev[4]] = thread
        elif code == _RANGE_END:
            self._ranges.pop((ev[2], ev[3], ev[4]), None)
            if ev[2] == STALL:
                self.stalls_ended += 1
        elif code == _LOOP_STATUS:
            old = self._loops.get(ev[2])
            if old is None or old[0] <= ev[1]:
                self._loops[ev[2]] = (ev[1], LoopState(ev[3]), thread)
        elif code == _LOOP_DESTROY:
            self._loops[ev[2]] = (ev[1], LoopState.NOT_EXIST, thread)

    def cut(self) -> Snapshot:
        """Returns what is alive now, for the generation that begins, and
        forgets what has ended."""
        coros: dict[int, tuple[Any, ...]] = {}
        kept: dict[int, tuple[Any, ...]] = {}
        for cid, entry in self._coros.items():
            status = _status(entry[1])
            if status is not None:
                kept[cid] = entry
                coros[cid] = (entry[0], status[0], entry[2], *status[1:])
        self._coros = kept
        loops = {
            lid: e
            for lid, e in self._loops.items()
            if e[1] not in (LoopState.NOT_EXIST, LoopState.UNDETERMINED)
        }
        self._loops = dict(loops)
        self._labels = {
            key: label
            for key, label in self._labels.items()
            if (key[1] in coros if key[0] == _COROUTINE else key[1] in loops)
        }
        self.earliest = None
        threads = {e[2] for e in coros.values()} | {e[2] for e in loops.values()}
        threads.update(self._ranges.values())
        self.names = {t: n for t, n in self.names.items() if t in threads}
        return Snapshot(coros, loops, dict(self._labels), dict(self._ranges))


def _status(ev: Event) -> tuple[Any, ...] | None:
    """The (state, reason, stack) a coroutine's last event leaves it in, or
    None if it ended."""
    code = ev[0]
    if code == _RUN_BLOCK:
        return (_WAIT, ev[4], ev[5])
    if code in (_BLOCK, _WAITING):
        return (_WAIT, ev[3], ev[4])
    if code in (_RUN_END, _END):
        return None
    if code == _START:
        return (_RUNNING, None, None)
    if code == _STATUS:
        state = CoroState(ev[3])
        if state in (_GONE, CoroState.UNDETERMINED):
            return None
        return (state, None, None)
    return (_RUNNABLE, None, None)


def status_records(snap: Snapshot, now: int, fallback: int) -> dict[int, list[Event]]:
    """Returns the status records of ``snap`` at time ``now``, by thread.

    Records that set a thread's context (a loop's status, a running
    coroutine) go to the thread they describe; the others to ``fallback``.
    A loop's status comes before the statuses of its thread's coroutines.
    """
    out: dict[int, list[Event]] = {}
    labels = snap.labels
    for lid, (_, state, thread) in snap.loops.items():
        records = out.setdefault(thread, [])
        records.append((_LOOP_STATUS, now, lid, int(state)))
        label = labels.get((_LOOP, lid))
        if label is not None:
            records.append((_LABEL, now, _LOOP, lid, label))
    rest = out.setdefault(fallback, [])
    for cid, (_, state, thread, reason, stack) in snap.coroutines.items():
        if state is _RUNNING:
            out.setdefault(thread, []).append((_STATUS, now, cid, int(state)))
        elif state is _WAIT and reason is not None:
            rest.append((_WAITING, now, cid, reason, stack))
        else:
            rest.append((_STATUS, now, cid, int(state)))
        label = labels.get((_COROUTINE, cid))
        if label is not None:
            rest.append((_LABEL, now, _COROUTINE, cid, label))
    for (name, kind, scope), thread in snap.ranges.items():
        out.setdefault(thread, []).append((_RANGE_ACTIVE, now, name, kind, scope))
    return {thread: records for thread, records in out.items() if records}
