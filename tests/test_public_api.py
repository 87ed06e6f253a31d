"""The public surface: exports, and what `import aiotrace` loads."""

from __future__ import annotations

import subprocess
import sys

import aiotrace
from aiotrace import reader


def test_all_is_sorted_unique_and_complete() -> None:
    """Every name in __all__ exists, is listed once, and the list is sorted."""
    for module in (aiotrace, reader):
        names = list(module.__all__)
        assert len(names) == len(set(names))
        assert names == sorted(names, key=lambda n: (not n.isupper(), n))
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name} missing"


def test_public_names_have_docstrings() -> None:
    """Public functions and classes say what they do."""
    for module in (aiotrace, reader):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not isinstance(obj, int):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_import_does_not_load_the_reader() -> None:
    """`import aiotrace` loads the producer only, not the reader or msgpack's
    decoder side of the package."""
    code = (
        "import sys, aiotrace; "
        "print(sorted(m for m in sys.modules if m.startswith('aiotrace')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "aiotrace.reader" not in out
    assert "aiotrace._tracer" in out


def test_trace_errors_share_one_base() -> None:
    """reader.TraceError is an aiotrace.TraceError, so either can be caught."""
    assert issubclass(reader.TraceError, aiotrace.TraceError)
