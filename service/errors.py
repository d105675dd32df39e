"""Exception → JSON response mapping.

Client mistakes are ``HTTPException`` subclasses raised by Litestar (validation → 400, body too
large → 413, unknown route → 404, …) or domain errors mapped here (unknown user → 404, no model
/ store down → 503); they keep their status and message. Anything else is a bug: a JSON 500
with the request id, logged with its traceback.
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException

from service.features import StoreUnavailable
from service.logs import log
from service.prediction import NoModel, UnknownUser
from service.schemas import ErrorBody


def _rid(request: Request) -> str | None:
    return request.scope.get("request_id")  # type: ignore[return-value]


def _response(request: Request, status: int, detail: str, extra: Any = None, headers: Any = None) -> Response:
    return Response(
        ErrorBody(status_code=status, detail=detail, request_id=_rid(request), extra=extra or None),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    extra = exc.extra
    if (
        status == 400
        and isinstance(extra, list)
        and len(extra) == 1
        and isinstance(extra[0], dict)
        and extra[0].get("key") == "data"
        and extra[0].get("message") == "'data'"
    ):  # Litestar's way of saying the body is missing
        return _response(request, 400, "request body is empty: expected a JSON object")
    detail = exc.detail
    if status == 400 and isinstance(exc.__cause__, SerializationException):
        detail = f"malformed JSON body: {detail}"
    if status >= 500:
        log.error("server error %s: %s", status, exc.detail, extra={"request_id": _rid(request)})
    return _response(request, status, detail, extra, exc.headers)


def unknown_user_handler(request: Request, exc: UnknownUser) -> Response:
    return _response(request, 404, str(exc))


def no_model_handler(request: Request, exc: NoModel) -> Response:
    return _response(request, 503, str(exc), headers={"Retry-After": "5"})


def store_unavailable_handler(request: Request, exc: StoreUnavailable) -> Response:
    return _response(request, 503, str(exc), headers={"Retry-After": "1"})


def log_unhandled(request: Request, exc: Exception, event: str = "unhandled_error") -> str | None:
    """Log an error no handler expected, with its traceback; the request id, for the answer."""
    rid = _rid(request)
    log.error(
        "unhandled error on %s %s",
        request.method,
        request.scope.get("path"),
        exc_info=exc,
        extra={"event": event, "request_id": rid},
    )
    return rid


def unexpected_handler(request: Request, exc: Exception) -> Response:
    rid = log_unhandled(request, exc)
    return _response(request, 500, f"internal server error (request id {rid})")


def too_deep_handler(request: Request, exc: RecursionError) -> Response:
    # msgspec decodes JSON recursively; a body nested tens of thousands of levels deep (well under
    # max_body_bytes) exhausts the stack while decoding. That is the client's input, not a bug.
    log.warning("request body nested too deeply", extra={"event": "body_too_deep", "request_id": _rid(request)})
    return _response(request, 400, "malformed JSON body: nested too deeply")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: http_exception_handler,
    RecursionError: too_deep_handler,
    UnknownUser: unknown_user_handler,
    NoModel: no_model_handler,
    StoreUnavailable: store_unavailable_handler,
    Exception: unexpected_handler,
}
