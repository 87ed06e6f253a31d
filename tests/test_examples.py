"""The examples run as documented and their traces read back valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_stream_to_collector() -> None:
    """The collector receives the whole live trace over TCP: one SYNC, the
    program's ten logs in order per order number, and a clean end."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "stream_to_collector.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    logs = [ln for ln in lines if " LOG " in ln]
    assert len(logs) == 10
    for n in range(5):
        start = next(i for i, ln in enumerate(logs) if f"'{n}: start'" in ln)
        done = next(i for i, ln in enumerate(logs) if f"'{n}: done'" in ln)
        assert start < done
    assert lines[-1] == "{'SYNC': 1, 'LABEL': 1, 'LOG': 10}"
