"""uvloop and trio imported by the program after tracing started are traced.

Each test runs a real program in a fresh interpreter under ``aiotrace run``,
so that uvloop, trio and anyio are first imported by the program itself, as
they are for any user: the loop hooks must follow the program's imports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from aiotrace import reader
from aiotrace.reader import CoroState, EventKind, ResourceKind

RUN = [sys.executable, "-m", "aiotrace", "run"]

# Fails the program if the flavour was imported before it ran (so before
# tracing started): the tests are about imports that come later.
NOT_YET = """
import sys
for name in ("uvloop", "trio"):
    assert name not in sys.modules, f"{name} imported before the program"
"""


def _traced(tmp_path: Path, source: str) -> tuple[list[reader.Event], str]:
    """Runs ``source`` under ``aiotrace run``; returns the trace's events
    (validated) and the summary."""
    script = tmp_path / "prog.py"
    script.write_text(NOT_YET + textwrap.dedent(source))
    proc = subprocess.run(
        [*RUN, "-o", "prog.trace", "prog.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return _valid(tmp_path / "prog.trace"), proc.stderr


def _valid(path: Path) -> list[reader.Event]:
    events = reader.read_events(path)
    assert reader.validate(events) == []
    return events


def _labels(events: list[reader.Event], kind: ResourceKind) -> dict[int, str]:
    return {
        ev.label.resource.id: ev.label.label
        for ev in events
        if ev.kind is EventKind.LABEL and ev.label.resource.kind is kind
    }


def _ends(events: list[reader.Event]) -> dict[int, str]:
    """Coroutine id -> how it ended."""
    return {
        ev.state_transition.resource.id: ev.state_transition.reason
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.kind is ResourceKind.COROUTINE
        and ev.state_transition.new is CoroState.NOT_EXIST
    }


def _ended_by_label(events: list[reader.Event]) -> Counter[tuple[str, str]]:
    """(label, how it ended) -> how many coroutines."""
    labels = _labels(events, ResourceKind.COROUTINE)
    return Counter((labels.get(cid, "?"), how) for cid, how in _ends(events).items())


CHILDREN_ON_ASYNCIO = """
import asyncio

async def child(i):
    await asyncio.sleep(0.001)
    return i

async def main():
    assert sum(await asyncio.gather(*(child(i) for i in range(5)))) == 10
"""


def test_uvloop_run_imported_by_the_program(tmp_path: Path) -> None:
    """`uvloop.run(main())`, uvloop first imported by the program: the loop
    is uvloop's and every coroutine's steps and end are in the trace."""
    events, summary = _traced(
        tmp_path, "import uvloop\n" + CHILDREN_ON_ASYNCIO + "uvloop.run(main())\n"
    )
    assert list(_labels(events, ResourceKind.LOOP).values()) == ["Loop in MainThread"]
    assert _ended_by_label(events)[("child", "returned")] == 5
    assert "no event loop was seen" not in summary
    assert "no loop stalls" in summary


def test_uvloop_install_then_asyncio_run(tmp_path: Path) -> None:
    """`uvloop.install()` then `asyncio.run(main())`: traced as uvloop."""
    events, _ = _traced(
        tmp_path,
        "import warnings\nwarnings.simplefilter('ignore', DeprecationWarning)\n"
        + CHILDREN_ON_ASYNCIO
        + "import uvloop\nuvloop.install()\nasyncio.run(main())\n",
    )
    assert list(_labels(events, ResourceKind.LOOP).values()) == ["Loop in MainThread"]
    ended = _ended_by_label(events)
    assert ended[("child", "returned")] == 5
    assert ended[("main", "returned")] == 1


def test_trio_run_imported_by_the_program(tmp_path: Path) -> None:
    """`trio.run(main)`, trio first imported by the program: a trio loop and
    each task's coroutine, ended."""
    events, _ = _traced(
        tmp_path,
        """
        import trio

        async def child(i):
            await trio.sleep(0.001)

        async def main():
            async with trio.open_nursery() as n:
                for i in range(3):
                    n.start_soon(child, i)

        trio.run(main)
        """,
    )
    assert list(_labels(events, ResourceKind.LOOP).values()) == [
        "trio run in MainThread"
    ]
    ended = _ended_by_label(events)
    assert ended[("__main__.child", "returned")] == 3
    assert ended[("__main__.main", "returned")] == 1


def test_anyio_on_trio_imported_by_the_program(tmp_path: Path) -> None:
    """anyio, which imports trio only when asked to run on it: the trio run,
    its tasks, and anyio's sleep classed as a sleep."""
    events, _ = _traced(
        tmp_path,
        """
        import anyio

        async def child(i):
            await anyio.sleep(0.001)

        async def main():
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(child, i)

        anyio.run(main, backend="trio")
        """,
    )
    assert list(_labels(events, ResourceKind.LOOP).values()) == [
        "trio run in MainThread"
    ]
    ended = _ended_by_label(events)
    assert ended[("__main__.child", "returned")] == 3
    labels = _labels(events, ResourceKind.COROUTINE)
    children = {cid for cid, lab in labels.items() if lab == "__main__.child"}
    reasons = {
        ev.state_transition.reason
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.id in children
        and ev.state_transition.new is CoroState.WAITING
    }
    assert reasons == {"sleep"}


APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT")
def test_uvicorn_loop_auto_picks_uvloop_and_is_traced(tmp_path: Path) -> None:
    """`aiotrace run -m uvicorn app:app --loop auto`: uvicorn imports uvloop
    itself; three real requests each leave a request coroutine, ended, on a
    uvloop loop; SIGINT stops the server and the trace is whole."""
    (tmp_path / "app.py").write_text(NOT_YET + APP)
    proc = subprocess.Popen(
        [
            *RUN,
            "-q",
            "-o",
            "uv.trace",
            "-m",
            "uvicorn",
            "app:app",
            "--loop",
            "auto",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None, "".join(seen)
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                assert r.read() == b"hello"
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        # Reaped, its pipes closed (an unclosed pipe warns, an error, in
        # whichever later test the garbage collector finds it).
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert "Traceback" not in rest, rest
    events = _valid(tmp_path / "uv.trace")
    assert "Loop in MainThread" in _labels(events, ResourceKind.LOOP).values()
    ended = _ended_by_label(events)
    assert ended[("RequestResponseCycle.run_asgi", "returned")] == 3, ended


def test_the_import_hook_leaves_at_stop_and_undoes_its_patches(
    tmp_path: Path,
) -> None:
    """While tracing, one finder waits first on sys.meta_path for the
    flavours not yet imported; stop() removes it and undoes the patches it
    made on import, and an import after stop() patches nothing."""
    script = tmp_path / "hook.py"
    script.write_text(
        NOT_YET
        + textwrap.dedent(
            """
            import sys
            import aiotrace

            before = list(sys.meta_path)
            aiotrace.start("t.trace")
            added = [f for f in sys.meta_path if f not in before]
            assert len(added) == 1 and sys.meta_path[0] is added[0], sys.meta_path
            import uvloop
            patched = "create_task" in vars(uvloop.Loop)
            aiotrace.stop()
            assert sys.meta_path == before, sys.meta_path
            unpatched = "create_task" not in vars(uvloop.Loop)
            import trio
            run = trio.run
            print(patched, unpatched, getattr(run, "__wrapped__", None) is None)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True True True\n"
    _valid(tmp_path / "t.trace")
