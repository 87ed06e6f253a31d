"""A coroutine that fetches with urllib (a blocking HTTP call, 60 ms a
reply, under the stall threshold) six times, and an innocent that fetches
the same server with asyncio streams."""

import asyncio
import http.server
import threading
import time
import urllib.request


class Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.06)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def serve() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


async def fetch_sync(port: int) -> bytes:
    await asyncio.sleep(0.005)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:  # mark: culprit
        return r.read()


async def fetch_async(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    data = await reader.read()  # innocent: awaits the same slow reply
    writer.close()
    await writer.wait_closed()
    return data


async def main() -> None:
    port = serve()
    for _ in range(6):
        await asyncio.gather(fetch_sync(port), fetch_async(port))


asyncio.run(main())
