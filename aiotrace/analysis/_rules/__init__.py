"""The finding rules, one module per kind of fault.

Each rule is a ``_findings.Rule``: it sees the trace as the diagnose pass
feeds it (waits, steps, ends, other events) and returns findings and
sections at the end.
"""

from __future__ import annotations

from .._findings import Rule


def all_rules() -> list[Rule]:
    """A new instance of every rule, in the order their sections show."""
    from ._activity import Activity
    from .blocking import BlockingRule
    from .executors import ExecutorRule
    from .gc import GCRule
    from .locks import LockRule
    from .pending import PendingRule
    from .queues import QueueRule
    from .routes import RouteRule
    from .wakeups import LostWakeupRule

    activity = Activity()  # each coroutine's recent waits: locks, queues, routes
    return [
        activity,
        BlockingRule(),
        LockRule(activity),
        QueueRule(activity),
        LostWakeupRule(),
        PendingRule(),
        ExecutorRule(),
        GCRule(),
        RouteRule(activity),
    ]
