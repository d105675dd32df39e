"""The Litestar application: ``create_app(settings)`` and a module-level ``app``.

``litestar --app service.app:app run`` and ``uvicorn service.app:app`` use ``app``, built
lazily from :func:`churn.settings.get_settings` on first access (importing this module has no
side effects); ``churn serve`` runs ``create_app`` as a uvicorn factory.

Wiring only: metrics (per-app ``CollectorRegistry``), model holder with hot reload, feature
gateway, prediction service, routes (and the operator console when ``CHURN_CONSOLE=on``), error
handlers, the observability middleware and the lifespan that loads the model and runs the pointer
watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from churn.job_metrics import JobMetricsCollector
from churn.settings import Settings, get_settings
from service.controllers import Services, build_handlers
from service.errors import EXCEPTION_HANDLERS
from service.features import FeatureGateway
from service.health import HealthService
from service.logs import configure_logging, log
from service.metrics import ApiMetrics
from service.middleware import ObservabilityMiddleware
from service.model_holder import ModelHolder
from service.prediction import PredictionService
from service.rollout import RolloutManager


def create_app(
    settings: Settings | None = None,
    *,
    reader: Any = None,
    registry_factory: Callable[[Settings], Any] | None = None,
    watch: bool = True,
) -> Litestar:
    """Build the API for ``settings`` (default: from the environment).

    ``reader`` / ``registry_factory`` replace the online reader / model registry (tests).
    ``watch=False`` disables the production-pointer poller (admin reload still works).
    """
    settings = settings or get_settings()
    limit_malloc_arenas()
    configure_logging()
    metrics = ApiMetrics()
    if not settings.remote:  # with object storage the daily run pushes them (jobs.daily_metrics)
        metrics.registry.register(JobMetricsCollector(settings))  # drift/scoring textfiles
    features = FeatureGateway(settings, metrics, reader=reader)
    holder_kwargs: dict[str, Any] = {"required_features": features.feature_names}
    if registry_factory is not None:
        holder_kwargs["registry_factory"] = registry_factory
    holder = ModelHolder(settings, metrics, **holder_kwargs)
    rollout = RolloutManager(settings, holder, metrics)  # shadow / challenger / prediction log
    predictor = PredictionService(settings, holder, features, metrics, rollout=rollout)
    services = Services(
        settings=settings,
        metrics=metrics,
        holder=holder,
        features=features,
        predictor=predictor,
        health=HealthService(settings, holder, features),
        rollout=rollout,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Connect first (builds the reader: Feast import + registry), so the model check can
        # compare the model's features with what the store serves; ping records its own failure.
        await asyncio.to_thread(features.ping)
        await holder.startup()
        watcher = asyncio.create_task(holder.watch(), name="model-watcher") if watch else None
        await rollout.startup()  # prediction-log writer, shadow worker, staged models
        stage_watcher = asyncio.create_task(rollout.watch(), name="rollout-watcher") if watch else None
        # Feast, pandas and protobuf leave millions of long-lived objects behind; a full GC pass
        # over them stalls the event loop for tens of milliseconds (the p99 of /predict). Move
        # everything alive after startup out of the collector's reach.
        gc.collect()
        gc.freeze()
        log.info(
            "api started",
            extra={
                "event": "startup",
                "model_version": holder.current.version if holder.current else None,
                "online_store": settings.online_store,
                "feature_service": settings.feature_service,
            },
        )
        try:
            yield
        finally:
            for task in (watcher, stage_watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await asyncio.to_thread(rollout.shutdown)  # drain shadow work, flush the prediction log
            aclose = getattr(features._reader, "aclose", None)  # its asyncio client belongs to this loop
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    handlers: list[Any] = build_handlers(services)
    templates = None
    on_shutdown: list[Callable[[], None]] = []
    if settings.console == "on":  # off: no /console route at all, so every console path is a 404
        from service.console.controllers import console_router, template_config

        templates = template_config()
        console, stop_console = console_router(services, templates)
        handlers.append(console)
        on_shutdown.append(stop_console)

    app = Litestar(
        route_handlers=handlers,
        template_config=templates,
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=int(settings.max_body_bytes),
        lifespan=[lifespan],
        on_shutdown=on_shutdown,
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="churn-platform prediction API",
            version="1.0.0",
            description="Real-time churn predictions from the online feature store and the production model.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin()],
        ),
        state=None,
    )
    app.state.services = services
    app.asgi_handler = ObservabilityMiddleware(app.asgi_handler, metrics)
    _complete_request_schemas(app)
    return app


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX=2`` does in the API image.

    Models are loaded and (LightGBM) scored in worker threads; glibc gives each thread its own
    arena, and every hot reload then left the old model's freed memory spread over them: the
    10-minute soak with a swap every 10 s grew RSS by 23% (flat without reloads). With two arenas
    the growth stops after a few reloads. Must run before worker threads allocate; a no-op
    where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    m_arena_max = -8  # from glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_arena_max, arenas)


def _complete_request_schemas(app: Litestar) -> None:
    """Say in the OpenAPI schema what msgspec enforces but Litestar's generator drops, so clients
    (and the schemathesis fuzz test) see the real contract: request bodies reject unknown fields
    (``forbid_unknown_fields``), and each batch id has the single id's 1..128 length limits."""
    schemas = app.openapi_schema.components.schemas or {}
    for name in ("PredictRequest", "BatchPredictRequest"):
        if name in schemas:
            schemas[name].additional_properties = False
    single, batch = schemas.get("PredictRequest"), schemas.get("BatchPredictRequest")
    if single is not None and batch is not None and single.properties and batch.properties:
        ids = batch.properties.get("user_ids")
        if ids is not None and "user_id" in single.properties:
            ids.items = single.properties["user_id"]  # type: ignore[union-attr]


_app: Litestar | None = None


def __getattr__(name: str) -> Any:
    """Lazy ``app``: built on first access, so importing the module does no work."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
