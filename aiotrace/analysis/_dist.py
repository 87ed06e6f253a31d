"""Distribution: counts, totals and quantiles of durations, in bounded memory."""

from __future__ import annotations

import math
from typing import Any

_PER_OCTAVE = 32
"""Log buckets per doubling: a bucket spans 2.2%, so quantiles are within 1.1%."""

EXACT_LIMIT = 1024
"""Values kept exactly before a Distribution switches to log buckets."""


def _bucket(ns: int) -> int:
    return int(math.log2(ns) * _PER_OCTAVE) if ns > 0 else -1


def _bucket_bounds(i: int) -> tuple[float, float]:
    if i < 0:
        return 0.0, 0.0
    return 2.0 ** (i / _PER_OCTAVE), 2.0 ** ((i + 1) / _PER_OCTAVE)


class Distribution:
    """Distribution summarises durations (ns): count, total, extremes, quantiles.

    It keeps the first ``EXACT_LIMIT`` values exactly; past that it keeps
    log-spaced buckets (32 per doubling), so memory stays bounded however
    many values are added, and a quantile is within about 1% of the exact
    one (and never outside ``min_ns``..``max_ns``).

    ``count`` counts finished intervals (those with a duration);
    ``unfinished`` counts those that began and never ended in the trace.
    """

    __slots__ = (
        "_buckets",
        "_exact",
        "count",
        "max_ns",
        "min_ns",
        "total_ns",
        "unfinished",
    )

    def __init__(self) -> None:
        self.count = 0
        self.unfinished = 0
        self.total_ns = 0
        self.min_ns = 0
        self.max_ns = 0
        self._exact: list[int] | None = []
        self._buckets: dict[int, int] = {}

    def add(self, ns: int) -> None:
        """Adds one finished interval of ``ns`` nanoseconds."""
        ns = max(ns, 0)
        if self.count == 0 or ns < self.min_ns:
            self.min_ns = ns
        self.max_ns = max(self.max_ns, ns)
        self.count += 1
        self.total_ns += ns
        exact = self._exact
        if exact is not None:
            exact.append(ns)
            if len(exact) > EXACT_LIMIT:
                for v in exact:
                    self._put(v)
                self._exact = None
        else:
            self._put(ns)

    def merge(self, other: Distribution) -> None:
        """Adds every interval of ``other`` (another process's, say)."""
        if other.count == 0:
            self.unfinished += other.unfinished
            return
        unfinished = self.unfinished + other.unfinished
        if other._exact is not None:
            for ns in other._exact:
                self.add(ns)
        else:
            if self._exact is not None:
                for v in self._exact:
                    self._put(v)
                self._exact = None
            for i, n in other._buckets.items():
                self._buckets[i] = self._buckets.get(i, 0) + n
            if self.count == 0 or other.min_ns < self.min_ns:
                self.min_ns = other.min_ns
            self.max_ns = max(self.max_ns, other.max_ns)
            self.count += other.count
            self.total_ns += other.total_ns
        self.unfinished = unfinished

    def _put(self, ns: int) -> None:
        i = _bucket(ns)
        self._buckets[i] = self._buckets.get(i, 0) + 1

    @property
    def exact(self) -> bool:
        """Whether quantiles are exact (few enough values were added)."""
        return self._exact is not None

    @property
    def mean_ns(self) -> float:
        """The mean duration of finished intervals, or 0.0 if there are none."""
        return self.total_ns / self.count if self.count else 0.0

    def quantile(self, q: float) -> int:
        """Returns the ``q`` quantile (0..1, nearest rank) in ns; 0 if empty.

        Raises:
            ValueError: ``q`` is outside 0..1.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q!r} is outside 0..1")
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(q * self.count))
        if self._exact is not None:
            self._exact.sort()
            return self._exact[rank - 1]
        seen = 0
        for i in sorted(self._buckets):
            seen += self._buckets[i]
            if seen >= rank:
                lo, hi = _bucket_bounds(i)
                mid = round(math.sqrt(lo * hi))
                return min(max(mid, self.min_ns), self.max_ns)
        return self.max_ns  # pragma: no cover - the counts add up to count

    @property
    def p50(self) -> int:
        """The median, in ns."""
        return self.quantile(0.5)

    @property
    def p90(self) -> int:
        """The 90th percentile, in ns."""
        return self.quantile(0.9)

    @property
    def p99(self) -> int:
        """The 99th percentile, in ns."""
        return self.quantile(0.99)

    def _weighted(self) -> list[tuple[float, int]]:
        if self._exact is not None:
            return [(float(v), 1) for v in self._exact]
        out = []
        for i, n in self._buckets.items():
            lo, hi = _bucket_bounds(i)
            v = min(max(math.sqrt(lo * hi), self.min_ns), self.max_ns)
            out.append((v, n))
        return out

    def histogram(self, buckets: int = 8) -> list[tuple[int, int, int]]:
        """Returns ``buckets`` log-spaced bins, min to max: ``(lo_ns, hi_ns, count)``.

        A bin holds the values ``lo_ns <= v < hi_ns`` (the last one also
        ``max_ns``). Fewer bins come back when all values are equal (one) or
        there are none (an empty list).

        Raises:
            ValueError: ``buckets`` is less than 1.
        """
        if buckets < 1:
            raise ValueError(f"a histogram needs at least 1 bucket, not {buckets}")
        if self.count == 0:
            return []
        lo, hi = max(self.min_ns, 1), max(self.max_ns, 1)
        if hi <= lo or buckets == 1:
            return [(self.min_ns, self.max_ns, self.count)]
        step = math.log(hi / lo) / buckets
        edges = [lo] + [round(lo * math.exp(step * k)) for k in range(1, buckets)]
        edges.append(self.max_ns)
        edges[0] = self.min_ns
        counts = [0] * buckets
        for v, n in self._weighted():
            k = int(math.log(v / lo) / step) if v > lo else 0
            counts[min(max(k, 0), buckets - 1)] += n
        return [(edges[k], edges[k + 1], counts[k]) for k in range(buckets)]

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict: counts, ns figures and the histogram."""
        return {
            "count": self.count,
            "unfinished": self.unfinished,
            "total_ns": self.total_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "mean_ns": round(self.mean_ns),
            "p50_ns": self.p50,
            "p90_ns": self.p90,
            "p99_ns": self.p99,
            "exact": self.exact,
            "histogram": [list(b) for b in self.histogram()],
        }

    def __repr__(self) -> str:
        return (
            f"<Distribution count={self.count} unfinished={self.unfinished} "
            f"p50={self.p50} max={self.max_ns}>"
        )
