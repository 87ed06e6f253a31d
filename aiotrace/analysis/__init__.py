"""Trace analysis: what a trace tells, in one streaming pass.

``analyze(source)`` reads a trace (a path, a binary file or an iterable of
``reader.Event``) once and returns a ``Summary``: user tasks and regions by
type with latency distributions, coroutines grouped by coroutine function
with execution, scheduler wait and block time by reason, loop utilisation,
stalls with their folded stack samples, and lost events. This is
``go tool trace``'s goroutine analysis, task and region latencies and
blocking profiles, for asyncio. ``profile(source, kind)`` gives block,
scheduler-latency, execution and stall time by stack (folded stacks for
flame graphs, or a text top table). ``analyze_processes(paths)`` analyses
several processes' traces on one timeline, each and in total.
``diagnose(source)`` says what is wrong: findings ranked by time lost (a
blocking call, a contended lock, a slow consumer, pending work, a lost
wakeup, a starved executor, GC pressure, a slow route), each naming the
culprit's function and line. Importing
``aiotrace`` does not import it.
"""

from ._coro import CoroGroup as CoroGroup
from ._diagnose import diagnose as diagnose
from ._dist import Distribution as Distribution
from ._findings import Diagnosis as Diagnosis
from ._findings import Finding as Finding
from ._findings import Section as Section
from ._findings import format_findings as format_findings
from ._findings import format_sections as format_sections
from ._format import format_duration as format_duration
from ._format import format_stalls as format_stalls
from ._format import format_summary as format_summary
from ._loops import LoopUsage as LoopUsage
from ._multi import ProcessesSummary as ProcessesSummary
from ._multi import ProcessTrace as ProcessTrace
from ._multi import analyze_processes as analyze_processes
from ._multi import format_processes as format_processes
from ._profile import Profile as Profile
from ._profile import ProfileStack as ProfileStack
from ._profile import format_profile as format_profile
from ._profile import profile as profile
from ._stalls import Stall as Stall
from ._summary import Summary as Summary
from ._summary import analyze as analyze

__all__ = (
    "CoroGroup",
    "Diagnosis",
    "Distribution",
    "Finding",
    "LoopUsage",
    "ProcessTrace",
    "ProcessesSummary",
    "Profile",
    "ProfileStack",
    "Section",
    "Stall",
    "Summary",
    "analyze",
    "analyze_processes",
    "diagnose",
    "format_duration",
    "format_findings",
    "format_processes",
    "format_profile",
    "format_sections",
    "format_stalls",
    "format_summary",
    "profile",
)
