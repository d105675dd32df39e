"""The operator console's routes: thin handlers over :mod:`service.console.pages`.

Built per app by :func:`console_router` (closures over that app's services, as
:mod:`service.controllers` does), mounted at ``/console`` only when ``CHURN_CONSOLE=on``: otherwise
no console route exists and every ``/console`` path is the API's 404.

Read-only: every route is a GET and none changes state (the live prediction of the lookup page is
neither logged nor counted). Everything that reads files or runs DuckDB, and the template rendering,
runs in the console's own small thread pool (:data:`CONSOLE_THREADS`; not the loop's default
executor, where ``/predict`` scores LightGBM and reads SQLite: slow console pages must never queue
predictions behind them), one page at a time (:data:`PAGES_AT_ONCE`); the streamed CSV is pulled
chunk by chunk in the same pool. The event loop that serves ``/predict`` only moves bytes. The user
page awaits the online read first (asynchronous, as ``/predict`` does), then builds the rest there.

Access: with ``CHURN_CONSOLE_TOKEN`` set, a guard asks for ``Authorization: Bearer <token>`` or the
session cookie that ``/console/login?token=...`` sets (an HMAC of the token, not the token itself);
compared with :func:`hmac.compare_digest`. Without it: a 401 page with the login form.

No ``from __future__ import annotations`` here: Litestar reads the handlers' annotations at startup.
"""

import asyncio
import contextlib
import hashlib
import hmac
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from litestar import MediaType, Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Stream
from litestar.template.config import TemplateConfig

from service.console.pages import ConsolePages, NotFound
from service.console.queries import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, BadQuery, ConsoleQueries
from service.errors import log_unhandled
from service.features import StoreUnavailable
from service.prediction import UnknownUser

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
COOKIE = "churn_console"
BASE = "/console"
CONSOLE_THREADS = 2
"""The console's own worker threads (a CSV download and a page at once); /predict's executor is never used."""
PAGES_AT_ONCE = 1
"""Console pages built at the same time (more wait their turn): operators share one slot, so however
many refresh at once, the console takes at most one worker thread (and DuckDB's threads) from /predict."""
CONSOLE_NICE = 19
"""The console threads' scheduling priority (Linux threads are tasks with their own nice value):
they get whatever CPU /predict leaves, so an operator refreshing pages never takes a core from
scoring; DuckDB runs its query in the calling thread (``threads = 1``), so its work is niced too."""
YIELD_EVERY = 64
"""Template chunks rendered between two GIL releases (a chunk is one static or expression piece)."""
PUBLIC = "console_public"
"""``opt`` key of the routes the token guard lets through (login, the stylesheet)."""


def background_priority() -> None:
    """Lower the calling thread's priority (each console worker's initializer); a no-op where the
    platform has no per-thread priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CONSOLE_NICE)


def template_config() -> TemplateConfig:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)


def session_value(token: str) -> str:
    """The cookie's value: an HMAC of the token (the token itself never sits in the browser)."""
    return hmac.new(token.encode(), b"churn-console-session", hashlib.sha256).hexdigest()


def console_router(services: Any, templates: TemplateConfig) -> tuple[Router, Callable[[], None]]:
    """The ``/console`` router and the function that stops its threads (for the app's shutdown)."""
    settings = services.settings
    token = settings.console_token or ""
    session = session_value(token) if token else ""
    pages = ConsolePages(settings, ConsoleQueries(settings))
    engine = templates.engine_instance
    stylesheet = (STATIC / "console.css").read_bytes()
    slot = threading.BoundedSemaphore(PAGES_AT_ONCE)
    executor = ThreadPoolExecutor(
        max_workers=CONSOLE_THREADS, thread_name_prefix="console", initializer=background_priority
    )

    async def off_loop(fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn`` in the console's own threads, never the default executor /predict scores in."""
        return await asyncio.get_running_loop().run_in_executor(executor, partial(fn, *args, **kwargs))

    async def pulled_off_loop(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
        """A blocking chunk iterator (DuckDB record batches → CSV) pulled in the console's threads."""
        done = object()
        try:
            while (chunk := await off_loop(next, chunks, done)) is not done:
                yield chunk  # type: ignore[misc]
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:  # the client went away: release the DuckDB cursor now
                await off_loop(close)

    def html(name: str, status_code: int = 200, **context: Any) -> Response[str]:
        """Render in the calling (worker) thread, giving the GIL back every few chunks: a long table
        is pure Python for milliseconds, and without these pauses the event loop would wait up to a
        whole switch interval (5 ms) each time it wants the GIL back, on every /predict await."""
        values = {"base": BASE, "token_required": bool(token), "quote": quote, "urlencode": urlencode, **context}
        parts: list[str] = []
        for i, chunk in enumerate(engine.get_template(name).generate(values)):
            parts.append(chunk)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)  # releases the GIL: a waiting event loop takes it at once
        body = "".join(parts)
        return Response(body, status_code=status_code, media_type=MediaType.HTML, headers={"Cache-Control": "no-store"})

    async def render_page(
        template: str, nav: str, context: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any
    ) -> Response[str]:
        """A page built (its context and its template) in the console's threads, one page at a time."""

        def build() -> Response[str]:
            with slot:
                return html(template, nav=nav, **context(*args, **kwargs))

        return await off_loop(build)

    # --- access -------------------------------------------------------------------------------------
    def authorized(connection: ASGIConnection) -> bool:
        if not token:
            return True
        scheme, _, given = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
        cookie = connection.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), session.encode())

    def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        if handler.opt.get(PUBLIC) or authorized(connection):
            return
        raise NotAuthorizedException(
            "the console needs its token: open /console/login?token=... or send Authorization: Bearer",
            headers={"WWW-Authenticate": 'Bearer realm="churn-console"'},
        )

    # --- errors as pages --------------------------------------------------------------------------------
    def error_page(request: Request, status: int, message: str, extra: Any = None) -> Response[str]:
        if status == 401:
            return html("login.html", 401, message=message, next=request.url.path, nav="login")
        return html(
            "error.html",
            status,
            status=status,
            message=message,
            extra=extra if isinstance(extra, list) else None,
            request_id=request.scope.get("request_id"),
            nav="error",
        )

    def http_error(request: Request, exc: HTTPException) -> Response[str]:
        response = error_page(request, exc.status_code, str(exc.detail), exc.extra)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    def bad_query(request: Request, exc: BadQuery) -> Response[str]:
        return error_page(request, 400, str(exc))

    def not_found(request: Request, exc: NotFound) -> Response[str]:
        return error_page(request, 404, str(exc))

    def unexpected(request: Request, exc: Exception) -> Response[str]:
        rid = log_unhandled(request, exc, event="console_error")
        return error_page(request, 500, f"the console failed to build this page (request id {rid})")

    # --- pages -------------------------------------------------------------------------------------------
    Page = Annotated[int, QueryParameter(ge=1, description="page number, from 1")]
    Size = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description=f"rows per page, 1..{MAX_PAGE_SIZE}")]
    Text = Annotated[str | None, QueryParameter(max_length=200)]

    async def at_risk_page(
        page: Page = 1,
        size: Size = DEFAULT_PAGE_SIZE,
        sort: Text = None,
        dir: Text = None,  # noqa: A002 - the query parameter's name
        tier: Text = None,
        plan: Text = None,
        country: Text = None,
        action: Text = None,
    ) -> Response[str]:
        return await render_page(
            "at_risk.html", "at-risk", pages.at_risk_context,
            page=page, size=size, sort=sort, direction=dir, tier=tier, plan=plan, country=country, action=action,
        )  # fmt: skip

    # Two handlers, one function: one handler with two paths would be wrapped for the thread twice.
    index = get("/", name="console:index")(at_risk_page)
    at_risk = get("/at-risk", name="console:at-risk")(at_risk_page)

    @get("/at-risk.csv", name="console:at-risk-csv")
    async def at_risk_csv(
        sort: Text = None,
        dir: Text = None,  # noqa: A002
        tier: Text = None,
        plan: Text = None,
        country: Text = None,
        action: Text = None,
    ) -> Stream:
        day, q, chunks = await off_loop(
            pages.export, sort=sort, direction=dir, tier=tier, plan=plan, country=country, action=action
        )
        suffix = "".join(f"-{k}-{v}" for k, v in q.filters.items())
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"at-risk-{day}{suffix}.csv")
        return Stream(
            pulled_off_loop(chunks),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )

    @get("/users", name="console:lookup")
    async def lookup(user_id: Text = None) -> Response[Any]:
        wanted = (user_id or "").strip()
        if not wanted:
            raise ValidationException("enter a user id to look up")
        return Redirect(f"{BASE}/users/{quote(wanted, safe='')}", status_code=303)

    @get("/users/{user_id:str}", name="console:user")
    async def user(user_id: FromPath[str]) -> Response[str]:
        if not 1 <= len(user_id) <= 128:
            raise ValidationException("a user id has 1 to 128 characters")
        prediction = features = None
        live_error: str | None = None
        try:
            prediction, features, live_error = await services.predictor.preview_async(user_id)
        except UnknownUser:
            live_error = "the online store has no features for this user"
        except StoreUnavailable as exc:
            live_error = str(exc)

        return await render_page("user.html", "user", pages.user_context, user_id, prediction, features, live_error)

    @get("/model", name="console:model")
    async def model() -> Response[str]:
        return await render_page("model.html", "model", pages.model_context)

    @get("/model/plots/{version:str}/{name:str}", name="console:plot")
    async def plot(version: FromPath[str], name: FromPath[str]) -> Response[bytes]:
        body = await off_loop(pages.plot, version, name)
        return Response(body, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @get("/drift", name="console:drift")
    async def drift() -> Response[str]:
        return await render_page("drift.html", "drift", pages.drift_context)

    @get("/drift/files/{path:path}", name="console:drift-file")
    async def drift_file(path: FromPath[str]) -> Response[bytes]:
        body, media_type = await off_loop(pages.drift_file, path.lstrip("/"))  # the parameter starts with "/"
        return Response(
            body,
            media_type=media_type,
            headers={
                # the report is the drift job's own page: inline styles and data: images, nothing else
                "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    @get("/runs", name="console:runs")
    async def runs() -> Response[str]:
        return await render_page("runs.html", "runs", pages.runs_context)

    # --- access and assets ------------------------------------------------------------------------------------
    @get("/login", opt={PUBLIC: True}, sync_to_thread=False, name="console:login")
    def login(
        request: Request,
        token_: Annotated[str | None, QueryParameter(name="token", max_length=1024)] = None,
        next_: Annotated[str | None, QueryParameter(name="next", max_length=512)] = None,
    ) -> Response[Any]:
        target = next_ if next_ and next_.startswith(BASE) and not next_.startswith("//") else BASE
        if not token:
            return Redirect(target, status_code=303)
        if token_ is None:
            return html("login.html", 200, message=None, next=target, nav="login")
        if not hmac.compare_digest(token_.encode(), token.encode()):
            return html("login.html", 401, message="wrong token", next=target, nav="login")
        return Redirect(
            target,
            status_code=303,
            cookies=[
                Cookie(
                    key=COOKIE,
                    value=session,
                    path=BASE,
                    httponly=True,
                    samesite="lax",
                    secure=request.url.scheme == "https",
                )
            ],
        )

    @get("/static/console.css", opt={PUBLIC: True}, sync_to_thread=False, name="console:css")
    def css() -> Response[bytes]:
        return Response(stylesheet, media_type="text/css", headers={"Cache-Control": "max-age=300"})

    router = Router(
        path=BASE,
        route_handlers=[index, at_risk, at_risk_csv, lookup, user, model, plot, drift, drift_file, runs, login, css],
        guards=[guard],
        exception_handlers={
            HTTPException: http_error,
            BadQuery: bad_query,
            NotFound: not_found,
            Exception: unexpected,
        },
        include_in_schema=False,
    )
    return router, lambda: executor.shutdown(wait=False, cancel_futures=True)
