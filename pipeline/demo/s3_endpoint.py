"""A real S3 endpoint on loopback: moto in server mode, its own process on 127.0.0.1. Also a flaky
HTTP proxy in front of it that answers some requests with 503 SlowDown, to show that transient
storage errors are retried.

Imported by tests/conftest.py (one server per test session; tests use the `moto_server`, `s3` and
`flaky_s3` fixtures) and by bench/storage.py (s3 -> s3 against local -> local).
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.demo.processes import free_port, wait_until


class MotoServer:
    """`moto_server` on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            self._answers, timeout_s=30, interval_s=0.1, what="moto_server to answer", process=self.proc
        )

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
        except (OSError, http.client.HTTPException):  # not listening yet, or not answering HTTP yet
            return False
        return True

    def _post(self, path: str, body: bytes = b"") -> None:
        # text/plain: a form-encoded body (urllib's default) would reach moto's handler empty
        headers = {"Content-Type": "text/plain"}
        req = urllib.request.Request(self.endpoint + path, data=body, headers=headers, method="POST")
        urllib.request.urlopen(req, timeout=5)

    def reset(self) -> None:
        """Drops every bucket and object."""
        self._post("/moto-api/reset")

    @contextlib.contextmanager
    def require_auth(self) -> Iterator[None]:
        """While inside: every request must carry access keys moto knows (none are known, so every
        request is denied). Outside (the default): any keys are accepted."""
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FlakyProxy:
    """Forwards to `target`, answering every `every`-th request with 503 SlowDown."""

    def __init__(self, target: str, every: int = 4) -> None:
        host, port = target.removeprefix("http://").split(":")
        counter = {"n": 0, "failed": 0}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue`, as S3 clients send on PUT

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                with lock:
                    counter["n"] += 1
                    fail = counter["n"] % every == 0
                    counter["failed"] += fail
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if fail:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD answer carries the object's length, with no body
                answered = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
                self.send_header("Content-Length", str(answered or 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.counter = counter
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
