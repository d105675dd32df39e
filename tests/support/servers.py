"""Servers for integration tests: the API under a real uvicorn on a free loopback port, Redis
(the shared one at 127.0.0.1:6379 or a throw-away ``redis-server``) and an HTTP receiver standing in
for the Pushgateway. Unit tests must not use this."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churn.settings import Settings
from tests.support.env import skip_or_fail

HOST = "127.0.0.1"
SHARED_REDIS_PORT = 6379


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = HOST, timeout: float = 0.3) -> bool:
    with socket.socket() as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def create(settings: Settings, **kwargs: Any):  # noqa: ANN201
    """The API app for ``settings`` (``service.app.create_app``; e.g. ``watch=False``, ``reader=...``)."""
    from service.app import create_app

    return create_app(settings, **kwargs)


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host=HOST, port=free_port(), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(15)


class RedisProcess:
    """A private ``redis-server`` on a loopback port (a free one unless given); can be stopped, signalled
    (SIGSTOP = hung, SIGKILL = dead) and started again on the same port. With ``workdir`` its RDB file
    lives there, so data saved with ``SAVE`` survives a restart. Also a context manager (start/stop)."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.exe = shutil.which("redis-server")
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://host:port`` (append ``/<db>``)."""
        return f"redis://{HOST}:{self.port}"

    def start(self, timeout: float = 10) -> None:
        if not self.exe:
            raise RuntimeError("redis-server not found on PATH")
        cmd = [self.exe, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        if self.workdir is not None:
            cmd += ["--dir", str(self.workdir), "--dbfilename", "dump.rdb"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a SIGSTOPped server cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def reachable_redis() -> Iterator[str]:
    """``redis://host:port`` of a reachable Redis: the shared one at 127.0.0.1:6379 if it answers, else
    a throw-away ``redis-server`` on a free port; else :func:`skip_or_fail`."""
    if port_open(SHARED_REDIS_PORT):
        yield f"redis://{HOST}:{SHARED_REDIS_PORT}"
        return
    if not shutil.which("redis-server"):
        skip_or_fail(f"no Redis at {HOST}:{SHARED_REDIS_PORT} and no redis-server on PATH")
    server = RedisProcess()
    try:
        server.start()
    except RuntimeError as exc:
        skip_or_fail(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Received:
    """One request an :func:`http_receiver` got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@contextlib.contextmanager
def http_receiver(
    status: int = 200, respond: Callable[[Received], int] | None = None
) -> Iterator[tuple[str, list[Received]]]:
    """A tiny HTTP server on a free 127.0.0.1 port (a thread) that records every PUT/POST/DELETE and
    answers ``status``: a stand-in Pushgateway. Yields (``host:port``, the list requests land in).

    ``respond`` (called on the request's own thread, after it is recorded) decides the status
    instead, and may sleep or block first: a slow, flaky or dying webhook receiver. An answer to a
    client that gave up waiting is dropped quietly."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Received(self.command, self.path, dict(self.headers.items()), body)
            received.append(request)
            code = respond(request) if respond is not None else status
            with contextlib.suppress(OSError):  # the client timed out or was killed meanwhile
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        do_PUT = do_POST = do_DELETE = _record

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="http-receiver", daemon=True)
    thread.start()
    try:
        yield f"{HOST}:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
