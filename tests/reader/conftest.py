"""Every reader test runs on both implementations of the reader's loops.

The C extension (``aiotrace/reader/_cdecode.c``) and its pure-Python twin
must read every trace the same way, event for event and error for error;
so each test in this directory runs once with each (``[c]``, ``[python]``).
The C variant is skipped when the extension was not built (a pure-Python
install), but fails in CI (``CI=true``), where it must have been built.
Subprocesses (the CLI) follow through ``AIOTRACE_PURE_PYTHON``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aiotrace.reader import _impl


@pytest.fixture(autouse=True, params=["c", "python"])
def reader_implementation(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Makes new Readers (here and in subprocesses) use one implementation."""
    name: str = request.param
    if name == "c" and not _impl.available():
        message = (
            "aiotrace's C extension (aiotrace/reader/_cdecode) is not built: "
            "build it with `pip install -e .` or `python setup.py build_ext "
            "--inplace`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"in CI the C reader must be tested: {message}")
        pytest.skip(message)
    before = _impl.implementation()
    _impl.use(name)
    monkeypatch.setenv("AIOTRACE_PURE_PYTHON", "1" if name == "python" else "0")
    try:
        yield name
    finally:
        _impl.use(before)
