"""The exception and warning types of aiotrace."""

from __future__ import annotations


class TracingError(RuntimeError):
    """TracingError reports a misuse of the tracer or a failure of its sink."""


class TracingWarning(RuntimeWarning):
    """TracingWarning reports a problem that aiotrace handled without crashing."""


class TraceError(ValueError):
    """TraceError is the base of every error the reader raises on bad input.

    Attributes:
        offset: the byte offset in the trace where the problem was found, or
            None when it is not about one place.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        self.reason = message
        text = message if offset is None else f"at byte {offset}: {message}"
        super().__init__(text)
