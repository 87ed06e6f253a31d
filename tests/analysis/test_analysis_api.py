"""The public surface of aiotrace.analysis."""

from __future__ import annotations

import inspect
import subprocess
import sys

from aiotrace import analysis


def test_all_is_sorted_unique_and_documented() -> None:
    """Every name in __all__ exists once, the list is sorted, and every public
    class, function, method and property says what it does."""
    names = list(analysis.__all__)
    assert len(names) == len(set(names))
    assert names == sorted(names)
    for name in names:
        obj = getattr(analysis, name)
        assert obj.__doc__, name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (
                    callable(member) or isinstance(member, property)
                ):
                    continue
                assert member.__doc__, f"{name}.{attr}"


def test_import_aiotrace_does_not_load_the_analysis() -> None:
    """`import aiotrace`, and the command line's start-up, leave the analysis
    (and the reader) unloaded until a command needs them."""
    code = (
        "import sys, aiotrace, aiotrace._cli; aiotrace._cli._parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('aiotrace')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "aiotrace.analysis" not in out
    assert "aiotrace.reader" not in out
    assert "aiotrace._cli.stats" in out


def test_format_duration() -> None:
    """Durations print in the largest unit that fits, with 3 digits."""
    cases = {
        0: "0 ns",
        850: "850 ns",
        12_300: "12.3 us",
        1_050_000: "1.05 ms",
        250_000_000: "250 ms",
        1_500_000_000: "1.5 s",
    }
    assert {ns: analysis.format_duration(ns) for ns in cases} == cases
