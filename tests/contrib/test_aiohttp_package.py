"""aiotrace.contrib.aiohttp's surface: exports, and what importing costs."""

from __future__ import annotations

import subprocess
import sys

from aiotrace.contrib import aiohttp as aiotrace_aiohttp


def test_all_is_sorted_and_documented() -> None:
    """Every exported name exists, once, in order, with a docstring."""
    names = list(aiotrace_aiohttp.__all__)
    assert len(names) == len(set(names))
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        obj = getattr(aiotrace_aiohttp, name)
        if callable(obj):
            assert obj.__doc__, name


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )


def test_without_aiohttp_the_error_says_what_to_install() -> None:
    """Without aiohttp, importing the integration says which extra to install."""
    proc = python(
        "import sys; sys.modules['aiohttp'] = None\nimport aiotrace.contrib.aiohttp"
    )
    assert proc.returncode == 1
    assert "pip install 'aiotrace[aiohttp]'" in proc.stderr


def test_import_aiotrace_does_not_load_aiohttp() -> None:
    """`import aiotrace` loads neither aiohttp nor the integration."""
    proc = python(
        "import sys, aiotrace\n"
        "print(sorted(m for m in sys.modules if 'aiohttp' in m or 'contrib' in m))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
