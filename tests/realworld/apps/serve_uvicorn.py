"""Serves starlette_app with uvicorn on an inherited listening socket.

    python serve_uvicorn.py FD {asyncio,uvloop}

FD is a TCP socket the parent bound and put to listen, so clients can
connect before uvicorn starts; uvicorn stops on SIGINT, as it does for a
user pressing Ctrl-C, and this script then exits 0.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys

import uvicorn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    fd, loop = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        "starlette_app:app", loop=loop, http="h11", lifespan="on", log_level="warning"
    )
    # uvicorn re-raises the SIGINT it shut down on; this server is done.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
