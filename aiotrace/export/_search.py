"""The report's search index: every coroutine and user task, in compact columns.

Two tables, coroutines and user tasks, each in the order its entries
began (a slot is taken when one begins, filled when it ends). The page
gets each table as columns of fixed-width integers, split into byte
planes (every value's low byte, then every value's next byte, ...) and
deflated: times that follow each other, ids that count up and names that
repeat leave most planes nearly constant, which deflate squeezes to a
byte or two per entry. Columns, per entry: start (delta from the one
before, signed), duration, name, id (delta, signed), row + 1 (0: none);
times in units of the index's resolution (start rounded down, end up).
"""

from __future__ import annotations

import base64
import operator
import sys
import zlib
from array import array
from itertools import compress, repeat
from typing import Any


def _width(col: array[int], signed: bool) -> int:
    if not col:
        return 1
    hi, lo = max(col), min(col)
    bits = max(hi, -lo - 1).bit_length() + 1 if signed else hi.bit_length()
    return max((bits + 7) // 8, 1)


def _planes(col: array[int], width: int) -> bytes:
    if sys.byteorder == "big":  # pragma: no cover (little-endian machines only)
        col = array("q", col)
        col.byteswap()
    b = col.tobytes()
    return b"".join(b[i :: col.itemsize] for i in range(width))


class _Columns:
    """_Columns deflates columns one after the other, noting their widths."""

    def __init__(self, z: Any, parts: list[bytes], widths: list[int]) -> None:
        self.z = z
        self.parts = parts
        self.widths = widths

    def __call__(self, col: array[int], signed: bool) -> None:
        w = _width(col, signed)
        self.widths.append(w)
        self.parts.append(self.z.compress(_planes(col, w)))


def _deltas(col: array[int]) -> array[int]:
    out = array("q", col[:1])
    out.extend(map(operator.sub, col[1:], col[:-1]))
    return out


class SearchIndex:
    """SearchIndex collects one entry per coroutine and user task.

    Kind 0 is coroutines, 1 user tasks. ``begin`` takes a slot, ``end``
    fills it; times are ns since the trace's start.
    """

    def __init__(self) -> None:
        self.ids = (array("q"), array("q"))
        self.names = (array("i"), array("i"))
        self.starts = (array("q"), array("q"))
        self.ends = (array("q"), array("q"))
        self.lanes = array("q")  # per task: its lane key + 1 (0: none)

    def __len__(self) -> int:
        return len(self.ids[0]) + len(self.ids[1])

    def begin(self, kind: int, rid: int, start: int) -> int:
        """Takes a slot for a coroutine (0) or task (1) that began at ``start``."""
        self.ids[kind].append(rid)
        self.names[kind].append(0)
        self.starts[kind].append(start)
        self.ends[kind].append(start)
        if kind:
            self.lanes.append(0)
        return len(self.ids[kind]) - 1

    def end(self, kind: int, slot: int, name: int, end: int, lane: int = -1) -> None:
        """Fills a slot: the entry's name, its end and (tasks) its lane key."""
        self.names[kind][slot] = name
        self.ends[kind][slot] = end
        if kind:
            self.lanes[slot] = lane + 1

    def lifetimes(self) -> list[int]:
        """Every entry's lifetime in ns, shortest first."""
        lives = list(map(operator.sub, self.ends[0], self.starts[0]))
        lives += map(operator.sub, self.ends[1], self.starts[1])
        lives.sort()
        return lives

    def encode(
        self,
        res_ns: int,
        min_life_ns: int,
        coro_rows: dict[int, int],
        lane_rows: list[int],
    ) -> tuple[list[dict[str, Any]], int, int]:
        """The index as the page embeds it, at ``res_ns``.

        Entries living less than ``min_life_ns`` are left out. Args:
        ``coro_rows`` maps a coroutine's slot to its row; ``lane_rows`` a
        task's lane key to its row (-1: none).

        Returns:
            (one table per kind: entries, column widths in bytes and the
            deflated planes in base64; the base64 bytes; entries kept).
        """
        tables = []
        size = kept = 0
        for k in (0, 1):
            ids, names = self.ids[k], self.names[k]
            starts, ends = self.starts[k], self.ends[k]
            if k:
                lane_row = [0] + [r + 1 for r in lane_rows]
                rows = array("q", map(lane_row.__getitem__, self.lanes))
            else:
                rows = array("q", bytes(8 * len(ids)))
                for slot, r in coro_rows.items():
                    rows[slot] = r + 1
            if min_life_ns > 0:
                mask = list(
                    map(
                        operator.ge,
                        map(operator.sub, ends, starts),
                        repeat(min_life_ns),
                    )
                )
                ids = array("q", compress(ids, mask))
                names = array("i", compress(names, mask))
                starts = array("q", compress(starts, mask))
                ends = array("q", compress(ends, mask))
                rows = array("q", compress(rows, mask))
            # One column at a time, each deflated as soon as it is made, so
            # that a few million entries cost one column's copies at a time.
            z = zlib.compressobj(6)
            parts: list[bytes] = []
            widths: list[int] = []
            column = _Columns(z, parts, widths)
            qs = array("q", map(operator.floordiv, starts, repeat(res_ns)))
            column(_deltas(qs), True)
            del starts
            qe = array(
                "q",
                map(
                    operator.neg,
                    map(operator.floordiv, map(operator.neg, ends), repeat(res_ns)),
                ),
            )
            del ends
            column(array("q", map(operator.sub, qe, qs)), False)
            del qs, qe
            column(names, False)
            column(_deltas(ids), True)
            column(rows, False)
            parts.append(z.flush())
            blob = b"".join(parts)
            data = base64.b64encode(blob).decode("ascii")
            size += len(data)
            kept += len(ids)
            tables.append({"entries": len(ids), "widths": widths, "data": data})
        return tables, size, kept
