"""soak_realworld: real programs traced under bounded load, each trace validated.

Run: ``python bench/soak_realworld.py [--seconds 30] [--only NAME ...]
[--out DIR] [--json FILE]`` (about 3 minutes at the defaults).

Issue 12's "done when": uvicorn, an aiohttp service, redis-py and httpx,
each under ``aiotrace run`` for ``--seconds`` of load, then each trace read
and validated. The programs are those of tests/realworld/apps:

- ``uvicorn-asyncio`` and ``uvicorn-uvloop``: a Starlette app served by
  uvicorn (``loop="asyncio"`` / ``"uvloop"``), loaded on ``/work`` (a region,
  a log, a gather of three children, a lock, a 1 ms sleep);
- ``aiohttp``: an aiohttp service with aiotrace's middleware, loaded on
  ``/work`` (a gather, a queue to a consumer task, ``asyncio.to_thread``);
- ``redis``: 8 workers of redis-py's asyncio client sharing a
  ``ConnectionPool`` against a real ``redis-server`` (no persistence) on
  127.0.0.1;
- ``httpx``: 8 workers sharing an ``AsyncClient`` limited to 2 connections
  against an untraced aiohttp server's ``/slow`` (5 ms), so most requests
  wait in the pool.

Servers are loaded by ``wrk -t1 -c8`` (bounded: 8 connections) when it is
on PATH, else by 8 httpx workers in this process. For each program it
prints the validator's problems (the first few, then the count), the
events, the annotation events (tasks, regions, logs) recorded with no
coroutine, events lost, and the requests or operations the load counted
against what the trace holds, and for servers its resident memory at the
end of the load and how long `aiotrace run` took from SIGINT to exit (it
prints its summary). Exit status 1 if any trace has
a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "realworld"))

import realprograms as rp

WORKERS = 8


def wrk_load(url: str, seconds: float) -> int:
    """Loads ``url`` with wrk for ``seconds``; the responses it counted."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{WORKERS}", f"-d{seconds:g}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert errors is None, out
    return int(m.group(1))


def httpx_load(url: str, seconds: float) -> int:
    """Loads ``url`` with 8 httpx workers for ``seconds``; the 200s."""
    import httpx

    async def main() -> int:
        deadline = asyncio.get_running_loop().time() + seconds
        async with httpx.AsyncClient(timeout=60) as client:

            async def worker() -> int:
                n = 0
                while asyncio.get_running_loop().time() < deadline:
                    r = await client.get(url)
                    assert r.status_code == 200, r
                    n += 1
                return n

            return sum(await asyncio.gather(*(worker() for _ in range(WORKERS))))

    return asyncio.run(main())


def load(url: str, seconds: float) -> int:
    """Loads ``url`` for ``seconds`` with wrk if present, else httpx."""
    return (wrk_load if shutil.which("wrk") else httpx_load)(url, seconds)


def soak_uvicorn(loop: str) -> Callable[[Path, float, Path], dict[str, Any]]:
    def soak(trace: Path, seconds: float, work: Path) -> dict[str, Any]:
        ended = rp.Exit()
        with rp.traced_server(
            trace, "serve_uvicorn.py", loop, quiet=False, exit=ended
        ) as url:
            served = load(f"{url}/work", seconds)
        s = rp.summarise(trace)
        return {
            "summary": s,
            "exit": ended,
            "load_counted": served,
            "trace_counted": s.ended("RequestResponseCycle.run_asgi"),
            "counted_what": "run_asgi coroutines that returned",
        }

    return soak


def soak_aiohttp(trace: Path, seconds: float, work: Path) -> dict[str, Any]:
    ended = rp.Exit()
    with rp.traced_server(trace, "aiohttp_service.py", quiet=False, exit=ended) as url:
        served = load(f"{url}/work", seconds)
    s = rp.summarise(trace)
    return {
        "summary": s,
        "exit": ended,
        "load_counted": served,
        "trace_counted": sum(s.task_types.values()),
        "counted_what": "request tasks begun (one per route)",
    }


def soak_redis(trace: Path, seconds: float, work: Path) -> dict[str, Any]:
    binary = rp.redis_binary()
    if binary is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    with rp.redis_server(binary, work) as port:
        r = rp.run_traced(
            trace, "redis_client.py", str(port), "--seconds", f"{seconds:g}",
            timeout=seconds + 120,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    s = rp.summarise(trace)
    return {
        "summary": s,
        "load_counted": result["ops"],
        "trace_counted": s.ended("redis_worker"),
        "counted_what": "redis_worker coroutines that returned (of 8)",
    }


def soak_httpx(trace: Path, seconds: float, work: Path) -> dict[str, Any]:
    with rp.traced_server(
        work / "unused.trace", "aiohttp_service.py", traced=False
    ) as url:
        r = rp.run_traced(
            trace, "httpx_client.py", f"{url}/slow", "--seconds", f"{seconds:g}",
            timeout=seconds + 120,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] == result["requests"], result
    s = rp.summarise(trace)
    return {
        "summary": s,
        "load_counted": result["requests"],
        "trace_counted": s.ended("httpx_worker"),
        "counted_what": "httpx_worker coroutines that returned (of 8)",
    }


PROGRAMS: dict[str, Callable[[Path, float, Path], dict[str, Any]]] = {
    "uvicorn-asyncio": soak_uvicorn("asyncio"),
    "uvicorn-uvloop": soak_uvicorn("uvloop"),
    "aiohttp": soak_aiohttp,
    "redis": soak_redis,
    "httpx": soak_httpx,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--only", nargs="+", choices=sorted(PROGRAMS))
    p.add_argument("--out", type=Path, help="keep the traces here")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="aiotrace-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    figures: dict[str, Any] = {}
    print(
        f"# soak: {args.seconds:g} s per program, python {sys.version.split()[0]}, "
        f"load by {'wrk' if shutil.which('wrk') else 'httpx'}, traces in {out}"
    )
    for name in args.only or PROGRAMS:
        trace = out / f"{name}.trace"
        t0 = time.monotonic()
        res = PROGRAMS[name](trace, args.seconds, out)
        wall = time.monotonic() - t0
        s = res["summary"]
        failed |= s.problem_count > 0
        print(f"{name}: {s.brief()} size={trace.stat().st_size} wall={wall:.1f}s")
        print(
            f"  load counted {res['load_counted']}; trace: {res['trace_counted']} "
            f"{res['counted_what']}"
        )
        print(f"  block reasons: {dict(s.blocks.most_common(8))}")
        if "exit" in res:
            summary = res["exit"].stderr.strip().splitlines()
            print(
                f"  RSS before SIGINT {res['exit'].rss_bytes / 2**20:.0f} MiB; "
                f"SIGINT to exit (with aiotrace run's summary): "
                f"{res['exit'].seconds:.2f} s; summary's first line: "
                f"{summary[0] if summary else '(none)'}"
            )
        for prob in s.problems[:5]:
            print(f"  problem: {prob}")
        figures[name] = {
            "problems": s.problem_count,
            "first_problems": s.problems,
            "events": s.events,
            "annotations_without_coroutine": s.annotations_without_coroutine,
            "lost_events": s.lost_events,
            "loops": len(s.loops),
            "coroutines": len(s.labels),
            "bytes": trace.stat().st_size,
            "load_counted": res["load_counted"],
            "trace_counted": res["trace_counted"],
            "counted_what": res["counted_what"],
            "blocks": dict(s.blocks),
            "exit_seconds": res["exit"].seconds if "exit" in res else None,
            "rss_bytes": res["exit"].rss_bytes if "exit" in res else None,
            "exit_summary": res["exit"].stderr if "exit" in res else None,
        }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.out is None:
        shutil.rmtree(out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
