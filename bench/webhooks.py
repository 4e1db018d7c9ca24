"""Webhook benchmark: how long a prompt receiver waits while slow receivers hold deliveries open,
and how much of an endless answer the deliverer reads.

    .venv/bin/python bench/webhooks.py [--slow 8] [--fast 5] [--byte-every 5]

Starts its own Redis and API (no worker: each job ends at once by being cancelled while
queued, which makes its webhook due) with webhooks on, the default deadline
(BOLAB_WEBHOOK_TIMEOUT_S) and private addresses allowed (the receivers are on loopback). First
`--slow` jobs notify a receiver that answers a byte every `--byte-every` seconds; then `--fast`
jobs, one at a time, notify a receiver that answers at once, and the seconds from the cancel to
their arrival are printed. Last, one job notifies a receiver that answers 200 and then sends a
body without end; the bytes it got out before the deliverer hung up are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bolab.client import LabClient
from bolab.stack import ApiServer, RedisServer

SPEC = {"n": 20, "d": 40, "width": 16, "n_test": 200, "max_steps": 2000, "seeds": 1}
WAIT_S = 60.0  # the longest a prompt delivery is waited for (and how long a trickle lasts)
FLOOD_BYTES = 1 << 30


class Receivers:
    """One HTTP server; the path picks the behaviour: /slow, /flood or anything else (200)."""

    def __init__(self, byte_every: float) -> None:
        self.arrived: dict[str, float] = {}  # X-Bolab-Delivery -> when its POST came
        self.flood_sent = 0
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's spelling)
                self.rfile.read(int(self.headers["Content-Length"]))
                receivers.arrived[self.headers["X-Bolab-Delivery"]] = time.perf_counter()
                try:
                    if self.path == "/slow":
                        receivers.trickle(self.wfile, byte_every)
                    elif self.path == "/flood":
                        receivers.flood(self)
                    else:
                        self.send_response(200)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                except OSError:  # the deliverer hung up
                    pass
                self.close_connection = True

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @staticmethod
    def trickle(out, byte_every: float) -> None:  # noqa: ANN001 (a socket writer)
        out.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        started = time.monotonic()
        while time.monotonic() - started < WAIT_S:
            time.sleep(byte_every)
            out.write(b"a")

    def flood(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        chunk = b"x" * (64 << 10)
        while self.flood_sent < FLOOD_BYTES:
            handler.wfile.write(chunk)
            self.flood_sent += len(chunk)


def ended_now(client: LabClient, url: str) -> tuple[str, float]:
    job_id = client.submit(SPEC, notify_url=url)["id"]
    client.cancel(job_id)
    return job_id, time.perf_counter()


def wait_for(receivers: Receivers, job_id: str, since: float) -> float | None:
    while time.perf_counter() - since < WAIT_S:
        if job_id in receivers.arrived:
            return receivers.arrived[job_id] - since
        time.sleep(0.01)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=8, help="deliveries to the slow receiver")
    parser.add_argument("--fast", type=int, default=5, help="deliveries timed, one at a time")
    parser.add_argument("--byte-every", type=float, default=5.0, help="the slow receiver's pace")
    args = parser.parse_args()
    slow, fast = Receivers(args.byte_every), Receivers(args.byte_every)
    env = {
        "BOLAB_WEBHOOK_SECRET": "bench",
        "BOLAB_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "BOLAB_WEBHOOK_ALLOWED_PORTS": f"{slow.port},{fast.port}",
        "BOLAB_WEBHOOK_ALLOW_PRIVATE": "true",
        "BOLAB_WEBHOOK_POLL_S": "0.05",
        "BOLAB_MAX_ACTIVE_JOBS": "1000",
    }
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", log_path=Path(tmp) / "redis.log")
        redis.start()
        api = ApiServer(redis.url, env=env, log_path=Path(tmp) / "api.log")
        try:
            api.start()
            with LabClient(api.url) as client:
                for _ in range(args.slow):
                    ended_now(client, slow.url("/slow"))
                time.sleep(1.0)  # the slow deliveries are under way
                waits = [
                    wait_for(fast, *ended_now(client, fast.url("/fast"))) for _ in range(args.fast)
                ]
                flood_id, since = ended_now(client, fast.url("/flood"))
                flood_s = wait_for(fast, flood_id, since)
                time.sleep(2.0)  # let the flood's sender notice the hang-up
        finally:
            api.stop()
            redis.stop()
    shown = [f"{w:.2f}" if w is not None else f">{WAIT_S:.0f}" for w in waits]
    print(f"{args.slow} deliveries held by a receiver sending a byte every {args.byte_every:g} s")
    done = [w for w in waits if w is not None]
    median = f"{statistics.median(done):.2f} s" if done else "n/a"
    print(
        f"cancel -> prompt receiver's POST, one at a time: {', '.join(shown)} s (median {median})"
    )
    flood = f"{flood_s:.2f} s" if flood_s is not None else f">{WAIT_S:.0f} s"
    print(
        f"endless answer: POST after {flood}; body bytes sent before the hang-up "
        f"{fast.flood_sent / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
