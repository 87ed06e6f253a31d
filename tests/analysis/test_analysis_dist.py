"""Distribution: exact while small, bounded and within 1.1% when large."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotrace.analysis import Distribution
from aiotrace.analysis._dist import EXACT_LIMIT


def nearest_rank(values: list[int], q: float) -> int:
    xs = sorted(values)
    return xs[max(1, math.ceil(q * len(xs))) - 1]


def test_small_distribution_is_exact() -> None:
    """With few values, count, total, extremes, mean and quantiles are exact."""
    d = Distribution()
    for v in range(1, 101):
        d.add(v * 1000)
    assert d.exact
    assert (d.count, d.total_ns, d.min_ns, d.max_ns) == (100, 5_050_000, 1000, 100_000)
    assert d.mean_ns == 50_500
    assert (d.p50, d.p90, d.p99) == (50_000, 90_000, 99_000)
    assert d.quantile(0) == 1000 and d.quantile(1) == 100_000


def test_empty_distribution() -> None:
    """An empty distribution has zero figures and no histogram."""
    d = Distribution()
    assert (d.count, d.p50, d.mean_ns, d.histogram()) == (0, 0, 0.0, [])


def test_large_distribution_is_bounded_and_close() -> None:
    """Past EXACT_LIMIT values it switches to log buckets: their number stays
    bounded (a few hundred for six decades) and quantiles stay within 1.1% of
    the exact ones, while count, total and extremes stay exact."""
    rng = random.Random(7)
    values = [int(rng.lognormvariate(13, 2)) for _ in range(100_000)]
    d = Distribution()
    for v in values:
        d.add(v)
    assert not d.exact
    assert len(d._buckets) < 32 * 64
    assert (d.count, d.total_ns) == (len(values), sum(values))
    assert (d.min_ns, d.max_ns) == (min(values), max(values))
    for q in (0.01, 0.5, 0.9, 0.99, 0.999):
        exact = nearest_rank(values, q)
        assert d.quantile(q) == pytest.approx(exact, rel=0.011), q


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=3000))
def test_quantiles_stay_within_range_and_close(values: list[int]) -> None:
    """Any quantile lies between min and max and within 1.1% of the exact
    nearest-rank value (exactly equal while few values were added)."""
    d = Distribution()
    for v in values:
        d.add(v)
    for q in (0.0, 0.5, 0.9, 0.99, 1.0):
        got = d.quantile(q)
        assert d.min_ns <= got <= d.max_ns
        exact = nearest_rank(values, q)
        if len(values) <= EXACT_LIMIT:
            assert got == exact
        else:
            assert got == pytest.approx(exact, rel=0.011, abs=1)


@given(
    st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=2000),
    st.integers(min_value=1, max_value=20),
)
def test_histogram_counts_every_value(values: list[int], buckets: int) -> None:
    """The histogram's bins run from min to max, in order, and hold every value."""
    d = Distribution()
    for v in values:
        d.add(v)
    bins = d.histogram(buckets)
    assert sum(n for _, _, n in bins) == len(values)
    assert bins[0][0] == min(values) and bins[-1][1] == max(values)
    assert all(lo <= hi for lo, hi, _ in bins)
    assert [lo for lo, _, _ in bins[1:]] == [hi for _, hi, _ in bins[:-1]]


def test_bad_arguments() -> None:
    """A quantile outside 0..1 or a histogram of no bins is refused."""
    d = Distribution()
    d.add(5)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        d.quantile(1.5)
    with pytest.raises(ValueError, match="at least 1 bucket"):
        d.histogram(0)
