"""Deterministic tests of concurrent asyncio code, as go123's ``tracing/tracetest``.

The code under test fires tracepoints (``aiotrace.probe``). The test
attaches them to named streams; each producer (the coroutine or thread that
fired) is paused at the tracepoint until the test accepts its event::

    from aiotrace import tracetest
    from aiotrace.tracetest import Fired

    async def scenario(t: tracetest.T) -> None:
        t.attach(trace_load, stream="db")
        t.attach(trace_served, stream=lambda ev: ev.args[0])
        cache = Cache(Database())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve(cache, "alice", "k"))
            tg.create_task(serve(cache, "bob", "k"))
            await t.expect("db", Fired("trace_load", "k"))
            await t.expect("alice", Fired("trace_served", "alice", "k", "k:v1"))
            await t.expect("bob", Fired("trace_served", "bob", "k", "k:v1"))

    async def test_cache() -> None:
        await tracetest.verify(scenario)  # once, then once per delayed event

Coroutines pause at async tracepoints (``await trace_load(key)``); threads
may fire sync ones. A run fails with a ``tracetest.Failure`` on a
mismatch, a deadlock (nothing sent or received for ``timeout`` seconds),
or events left unconsumed. See ``docs/tracetest.md``.
"""

from ._tracetest import Failure as Failure
from ._tracetest import Fired as Fired
from ._tracetest import Message as Message
from ._tracetest import T as T
from ._tracetest_run import DEFAULT_DELAY as DEFAULT_DELAY
from ._tracetest_run import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._tracetest_run import Body as Body
from ._tracetest_run import run as run
from ._tracetest_run import verify as verify

__all__ = (
    "DEFAULT_DELAY",
    "DEFAULT_TIMEOUT",
    "Body",
    "Failure",
    "Fired",
    "Message",
    "T",
    "run",
    "verify",
)
