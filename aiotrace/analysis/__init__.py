"""Trace analysis: what a trace tells, in one streaming pass.

``analyze(source)`` reads a trace (a path, a binary file or an iterable of
``reader.Event``) once and returns a ``Summary``: user tasks and regions by
type with latency distributions, coroutines grouped by coroutine function
with execution, scheduler wait and block time by reason, loop utilisation,
stalls with their folded stack samples, and lost events. This is
``go tool trace``'s goroutine analysis, task and region latencies and
blocking profiles, for asyncio. Importing ``aiotrace`` does not import it.
"""

from ._coro import CoroGroup as CoroGroup
from ._dist import Distribution as Distribution
from ._format import format_duration as format_duration
from ._format import format_stalls as format_stalls
from ._format import format_summary as format_summary
from ._loops import LoopUsage as LoopUsage
from ._stalls import Stall as Stall
from ._summary import Summary as Summary
from ._summary import analyze as analyze

__all__ = (
    "CoroGroup",
    "Distribution",
    "LoopUsage",
    "Stall",
    "Summary",
    "analyze",
    "format_duration",
    "format_stalls",
    "format_summary",
)
