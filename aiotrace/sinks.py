"""Sinks: where a trace's bytes go.

``aiotrace.start`` accepts a path, a binary file or socket, an async byte
stream (anyio ``ByteSendStream``, asyncio ``StreamWriter``, anything with
``async send(bytes)``), or a ``MemorySink`` from this module.
"""

from ._sinks import MemorySink as MemorySink

__all__ = ("MemorySink",)
