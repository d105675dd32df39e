"""Request id, latency metric and one JSON access-log line for every HTTP request.

A plain ASGI wrapper around Litestar's own ASGI handler (so it also sees 404/405 answered
by the router, which Litestar's per-route middleware never does). The request id comes from
``X-Request-ID`` when it is sane (≤ 128 visible ASCII characters), else a new one; it is put in
``scope["request_id"]`` for the exception handlers and returned in the response header.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

from service.logs import access_log

if TYPE_CHECKING:
    from service.metrics import ApiMetrics

_VALID_ID = re.compile(rb"[\x21-\x7e]{1,128}")
_UNMATCHED = "<unmatched>"


def new_request_id() -> str:
    return os.urandom(8).hex()


class ObservabilityMiddleware:
    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid_bytes = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _VALID_ID.fullmatch(value):
                    rid_bytes = value
                break
        if rid_bytes is None:
            rid = new_request_id()
            rid_bytes = rid.encode()
        else:
            rid = rid_bytes.decode()
        scope["request_id"] = rid
        status = 500
        header = (b"x-request-id", rid_bytes)

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            route = scope.get("path_template") or _UNMATCHED
            method = scope["method"]
            self.metrics.observe_request(route, method, status, elapsed)
            if access_log.isEnabledFor(20):
                access_log.info(
                    {
                        "event": "access",
                        "request_id": rid,
                        "method": method,
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "latency_ms": round(elapsed * 1000, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                )
