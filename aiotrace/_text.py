"""Annotation arguments as text, taken when they are recorded.

A region type, task type, log category or message that is not a ``str`` is
turned into one at once: an event waiting to be drained holds only text,
never the program's object (an exception, say) that was passed in.
"""

from __future__ import annotations


def text(value: object) -> str:
    """``str(value)``; a ``__str__`` that fails gives a placeholder instead."""
    try:
        return str(value)
    except Exception as exc:
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
