"""Tracepoints and probes, as go123's ``tracing`` package: events a package
declares, that cost one check when nothing listens.

::

    from aiotrace import probe

    @probe.tracepoint
    def trace_hello(who: str) -> None: ...  # declares; calling it fires

    def say_hello(who: str) -> None:
        trace_hello(who)
        print(f"Hello, {who}")

    p = trace_hello.attach(lambda who: print("probe:", who))
    say_hello("world")
    p.detach()

    with probe.ProbeGroup() as g:  # g.done() at the end detaches them all
        trace_hello.attach(print, group=g)

Probes run in attach order, synchronously, in the firing coroutine or
thread. A probe that raises is detached and reported with a
``TracingWarning``; the traced code goes on. ``aiotrace probes MODULE``
lists the tracepoints a module declares. See ``docs/probes.md``.
"""

from ._probe import PROBE_ERROR as PROBE_ERROR
from ._probe import AsyncTracepoint as AsyncTracepoint
from ._probe import Probe as Probe
from ._probe import ProbeGroup as ProbeGroup
from ._probe import Tracepoint as Tracepoint
from ._probe import describe as describe
from ._probe import tracepoint as tracepoint
from ._probe import tracepoints as tracepoints

__all__ = (
    "PROBE_ERROR",
    "AsyncTracepoint",
    "Probe",
    "ProbeGroup",
    "Tracepoint",
    "describe",
    "tracepoint",
    "tracepoints",
)
