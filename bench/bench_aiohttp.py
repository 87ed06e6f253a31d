"""bench_aiohttp: an aiohttp server's throughput, traced against untraced.

Run: ``python bench/bench_aiohttp.py [--rounds N] [--quick] [--duration S]``
(about 5 minutes at the defaults; uses ``wrk`` if it is on PATH, else an
aiohttp client in its own process, which is slower than the server and so
understates the cost: the output says which).

The server runs in its own process, one fresh process per measurement, in
one of four modes:

- ``untraced``: the application without aiotrace;
- ``off``: with ``aiotrace.contrib.aiohttp.middleware()`` installed and
  tracing off (what a service pays for being ready to be traced);
- ``annotations``: the middleware, tracing to a file with
  ``runtime_events=False`` (tasks, regions and logs only);
- ``traced``: the middleware, tracing to a file with the execution tracer
  (every coroutine step, stalls, GC, metrics): what ``/debug/aiotrace/trace``
  records.

Two routes: ``/hello`` answers a short text (the worst case: the request
is nearly all framework, so tracing's share is the largest) and ``/api``
is closer to a service's handler (a region around an awaited "query", a
log, a JSON answer). Each round measures every mode on each route, in a
rotated order; after a warm-up, the load generator runs for ``--duration``
seconds with 50 connections. The table gives the median over rounds of
requests/s, of the within-round ratio to ``untraced``, and of the server
process's CPU time per request: all its threads, and the event loop's
thread alone, from /proc, with the within-round ratio of the untraced
loop thread's to this mode's ("loop ratio"). The loop thread bounds a
server's throughput when its other threads (aiotrace's drain and writer)
have a core of their own; CPU time does not depend on whether the server
or the load generator is the bottleneck, so it shows what a busy machine
blurs in requests/s. Target:
traced/untraced >= 0.90; Go's figure is about 0.98.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from _common import NoiseProbe, arguments, environment, print_table, summarize

MODES = ("untraced", "off", "annotations", "traced")
ROUTES = ("/hello", "/api")
CONNECTIONS = 50
WARMUP = 1.0


# --------------------------------------------------------------------------
# The server (run as a subprocess: bench_aiohttp.py --serve MODE TRACE_PATH)


def serve(mode: str, trace_path: str) -> None:
    """Serves on a free 127.0.0.1 port; prints the port, then, on SIGTERM,
    the tracer's figures as one JSON line."""
    from aiohttp import web

    import aiotrace
    from aiotrace.contrib import aiohttp as aiotrace_aiohttp

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    async def api(request: web.Request) -> web.Response:
        async with aiotrace.region("query"):
            await asyncio.sleep(0)
        aiotrace.log("rows", "3")
        rows = [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(3)]
        return web.json_response({"rows": rows})

    async def main() -> None:
        middlewares = [] if mode == "untraced" else [aiotrace_aiohttp.middleware()]
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/hello", hello)
        app.router.add_get("/api", api)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        tracer = None
        if mode in ("annotations", "traced"):
            tracer = aiotrace.start(trace_path, runtime_events=mode == "traced")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(runner.addresses[0][1], flush=True)
        await stop.wait()
        figures: dict[str, Any] = {}
        if tracer is not None:
            try:
                await tracer.astop()
            except aiotrace.TracingError as exc:  # the figures mean nothing
                figures["error"] = str(exc)
            figures.update(
                events=tracer.events,
                bytes=tracer.bytes_written,
                lost=tracer.lost_events,
            )
        await runner.cleanup()
        print(json.dumps(figures), flush=True)

    asyncio.run(main())


# --------------------------------------------------------------------------
# The load


def wrk_load(url: str, seconds: float) -> tuple[float, int]:
    """Runs wrk; returns (requests/s, requests)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, n


def client_load(url: str, seconds: float) -> tuple[float, int]:
    """Loads ``url`` from an aiohttp client in a subprocess (no wrk)."""
    code = f"""
import asyncio, time, aiohttp
async def main():
    n = 0
    deadline = time.monotonic() + {seconds!r}
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit={CONNECTIONS})) as s:
        async def worker():
            nonlocal n
            while time.monotonic() < deadline:
                async with s.get({url!r}) as r:
                    await r.read()
                    assert r.status == 200
                    n += 1
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range({CONNECTIONS})))
        print(n / (time.monotonic() - t0), n)
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout.split()
    return float(out[0]), int(out[1])


def process_cpu(pid: int) -> tuple[float, float] | None:
    """Returns the CPU seconds (user + system) of a process's main thread,
    which runs the event loop, and of all its threads, on Linux; else None."""

    def seconds(path: str) -> float:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        return seconds(f"/proc/{pid}/task/{pid}/stat"), seconds(f"/proc/{pid}/stat")
    except OSError:
        return None


def measure(
    mode: str, route: str, seconds: float, tmp: str, use_wrk: bool
) -> tuple[float, dict[str, Any]]:
    """Starts a server in ``mode``, loads ``route``; returns (requests/s, figures)."""
    trace_path = os.path.join(tmp, f"{mode}.trace")
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", mode, trace_path],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}{route}"
        load = wrk_load if use_wrk else client_load
        load(url, WARMUP)
        cpu0 = process_cpu(server.pid)
        rps, n = load(url, seconds)
        cpu1 = process_cpu(server.pid)
        server.send_signal(signal.SIGTERM)
        figures = json.loads(server.stdout.readline() or '{"error": "no figures"}')
        if "error" in figures:
            raise RuntimeError(f"the {mode} server failed: {figures['error']}")
        if cpu0 is not None and cpu1 is not None and n:
            figures["loop_us"] = 1e6 * (cpu1[0] - cpu0[0]) / n
            figures["cpu_us"] = 1e6 * (cpu1[1] - cpu0[1]) / n
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if os.path.exists(trace_path):
        figures["file_bytes"] = os.path.getsize(trace_path)
        os.remove(trace_path)
    return rps, figures


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
        return
    duration = 5.0
    if "--duration" in sys.argv:
        i = sys.argv.index("--duration")
        duration = float(sys.argv[i + 1])
        del sys.argv[i : i + 2]
    args = arguments(__doc__ or "", rounds=5)
    if args.quick:
        duration = 2.0
    use_wrk = shutil.which("wrk") is not None
    print(environment())
    print(
        f"load: {'wrk -t1' if use_wrk else 'aiohttp client (no wrk on PATH)'}, "
        f"{CONNECTIONS} connections, {duration:g} s per measurement, "
        f"{args.rounds} rounds"
    )
    rps: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    loop_cpu: dict[tuple[str, str], list[float]] = {}
    loop_ratios: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    per_request: dict[str, list[float]] = {}
    probe = NoiseProbe()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            probe.sample()
            order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
            for route in ROUTES:
                got: dict[str, float] = {}
                for mode in order:
                    value, figures = measure(mode, route, duration, tmp, use_wrk)
                    got[mode] = value
                    rps.setdefault((route, mode), []).append(value)
                    if "cpu_us" in figures:
                        cpu.setdefault((route, mode), []).append(figures["cpu_us"])
                        loop_cpu.setdefault((route, mode), []).append(
                            figures["loop_us"]
                        )
                    if figures.get("lost"):
                        print(f"  {mode} {route}: {figures['lost']} events lost")
                    if mode == "traced" and figures.get("events"):
                        n = value * (duration + WARMUP)
                        per_request.setdefault(route, []).append(figures["events"] / n)
                for mode in MODES:
                    ratios.setdefault((route, mode), []).append(
                        got[mode] / got["untraced"]
                    )
                    if (route, mode) in loop_cpu:
                        loop_ratios.setdefault((route, mode), []).append(
                            loop_cpu[(route, "untraced")][-1]
                            / loop_cpu[(route, mode)][-1]
                        )
            done = ", ".join(
                f"{route} traced/untraced {ratios[(route, 'traced')][-1]:.3f}"
                for route in ROUTES
            )
            print(f"round {r + 1}/{args.rounds}: {done}", flush=True)
    rows = []
    for route in ROUTES:
        for mode in MODES:
            s = summarize(rps[(route, mode)])
            q = summarize(ratios[(route, mode)])
            c = cpu.get((route, mode))
            lc = loop_cpu.get((route, mode))
            lr = loop_ratios.get((route, mode))
            rows.append(
                [
                    f"{route} {mode}",
                    f"{s.median:,.0f}",
                    s.spread("{:,.0f}"),
                    f"{q.median:.3f}",
                    q.spread("{:.3f}"),
                    f"{summarize(c).median:.1f}" if c else "-",
                    f"{summarize(lc).median:.1f}" if lc else "-",
                    f"{summarize(lr).median:.3f}" if lr else "-",
                ]
            )
    print_table(
        "Throughput (requests/s; ratio to untraced, within rounds; server CPU)",
        [
            "route / mode",
            "req/s median",
            "min-max",
            "ratio median",
            "ratio min-max",
            "CPU us/req",
            "loop us/req",
            "loop ratio",
        ],
        rows,
    )
    for route, values in per_request.items():
        print(
            f"traced {route}: about {summarize(values).median:.1f} events per request"
        )
    print(probe.report())


if __name__ == "__main__":
    main()
