"""redis-py's asyncio client against a real redis-server, under `aiotrace run`.

The redis-server is the apt package's binary, started by the test on a free
port of 127.0.0.1 without persistence. The client (apps/redis_client.py)
runs 8 workers over one connection pool: SET, GET, INCR, and a pipeline
every tenth operation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from realprograms import run_traced, summarise

OPS = 800
WORKERS = 8


def test_redis_client_trace_is_exact(redis_port: int, trace_file: Path) -> None:
    """800 operations from 8 workers: the program's own result is right (the
    counter INCRed 800 times), and the trace validates with no lost event,
    holds its 8 worker coroutines (each returned), the tasks redis-py makes
    to send each command before 3.12 (each returned; at least one per
    command or pipeline), and the workers' waits for redis's replies."""
    r = run_traced(
        trace_file, "redis_client.py", str(redis_port),
        "--ops", str(OPS), "--workers", str(WORKERS),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ops": OPS, "counter": OPS}
    s = summarise(trace_file)
    s.check_exact()
    assert s.ended("redis_worker") == WORKERS
    assert len(s.coroutines("main")) == 1
    send = "AbstractConnection._send_packed_command"
    if sys.version_info < (3, 12):
        # asyncio.wait_for runs its awaitable in a task of its own before
        # 3.12, so each command (and each pipeline) is sent from a task: SET,
        # GET, INCR per operation and a pipeline every tenth (and the
        # commands redis-py sends as each connection opens).
        assert s.ended(send) >= 3 * OPS + OPS // 10
        assert len(s.coroutines(send)) == s.ended(send)
    else:
        assert s.coroutines(send) == []
    assert s.blocks["io"] >= 1, s.blocks  # waiting for redis's replies
