"""Route handlers: thin adapters between HTTP and :mod:`service.prediction` / the holders.

Built per app by :func:`build_handlers` (closures over that app's services; no per-request
dependency injection). No ``from __future__ import annotations`` here: the batch request type
is created per app (its ``max_length`` is ``settings.max_batch_size``), so annotations must be
real objects when Litestar reads the signatures.
"""

import hmac
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from service.features import FeatureGateway
from service.health import HealthService
from service.metrics import CONTENT_TYPE, ApiMetrics
from service.model_holder import ModelHolder
from service.prediction import PredictionService
from service.schemas import (
    BatchResponse,
    ErrorBody,
    Health,
    Prediction,
    PredictRequest,
    Ready,
    ReloadResponse,
    batch_request_type,
)

ERRORS = {
    400: "malformed JSON, wrong types or constraint violations",
    401: "missing or invalid bearer token",
    403: "admin endpoints disabled (no admin token configured)",
    404: "unknown user",
    413: "request body too large",
    503: "no production model loaded, or online store unreachable",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    return {c: ResponseSpec(ErrorBody, description=ERRORS[c], generate_examples=False) for c in codes}


@dataclass
class Services:
    settings: Any
    metrics: ApiMetrics
    holder: ModelHolder
    features: FeatureGateway
    predictor: PredictionService
    health: HealthService
    rollout: Any = None  # service.rollout.RolloutManager


def build_handlers(s: Services) -> list[Any]:
    BatchPredictRequest = batch_request_type(int(s.settings.max_batch_size))
    predictor = s.predictor
    admin_token = (s.settings.admin_token or "").encode()

    predict_kwargs: dict[str, Any] = dict(
        summary="Churn prediction for one user",
        description=(
            "Reads the user's features from the online store (feature service "
            f"`{s.settings.feature_service}`) and scores them with the production model."
        ),
        tags=["predict"],
        responses=error_responses(400, 404, 413, 503),
    )

    @post("/predict", status_code=200, **predict_kwargs)
    async def predict(data: JSONBody[PredictRequest], request: Request) -> Prediction:
        return await predictor.predict_one_async(data.user_id, request.scope.get("request_id"))

    @post(
        "/predict/batch",
        status_code=200,
        summary="Churn predictions for up to max_batch_size users",
        description=(
            "One online read and one model call for all users. A user that cannot be scored "
            "(unknown) is reported in place (`status: error`); the batch still succeeds."
        ),
        tags=["predict"],
        responses=error_responses(400, 413, 503),
    )
    async def predict_batch(data: JSONBody[BatchPredictRequest], request: Request) -> BatchResponse:  # type: ignore[valid-type]
        return await predictor.predict_batch_async(data.user_ids, request.scope.get("request_id"))  # type: ignore[attr-defined]

    @get("/live", summary="Liveness: the process is up", tags=["ops"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: model loaded and online store reachable (503 otherwise)", tags=["ops"])
    async def ready() -> Response[Ready]:
        result = await s.health.ready()
        return Response(result, status_code=200 if result.ready else 503)

    @get("/health", summary="State of every component, model version and age, feature freshness", tags=["ops"])
    async def health() -> Health:
        return await s.health.health()

    @get("/metrics", summary="Prometheus metrics", tags=["ops"], media_type=CONTENT_TYPE)
    async def metrics() -> Response[bytes]:
        return Response(s.metrics.render(), media_type=CONTENT_TYPE)

    @post(
        "/admin/reload",
        status_code=200,
        summary="Reload the production model and the staged rollout now (Bearer admin token)",
        description=(
            "Loads the production pointer's version and re-reads the shadow / challenger stages. "
            "403 when the admin token is not configured, 401 without the right token."
        ),
        tags=["admin"],
        responses={
            **error_responses(401, 403),
            409: ResponseSpec(ReloadResponse, description="the new model was refused; the old one keeps serving"),
        },
    )
    async def admin_reload(request: Request) -> Response[ReloadResponse]:
        if not admin_token:
            raise PermissionDeniedException("admin endpoints are disabled (CHURN_ADMIN_TOKEN is not set)")
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), admin_token):
            raise NotAuthorizedException(
                "missing or invalid bearer token", headers={"WWW-Authenticate": 'Bearer realm="churn-admin"'}
            )
        outcome = await s.holder.reload()
        if s.rollout is not None:  # staged shadow / challenger too, so one call applies a whole change
            await s.rollout.reload()
        body = ReloadResponse(
            result=outcome.result,  # type: ignore[arg-type]
            version=outcome.version,
            previous_version=outcome.previous_version,
            detail=outcome.detail,
        )
        return Response(body, status_code=200 if outcome.result != "failed" else 409)

    return [predict, predict_batch, live, ready, health, metrics, admin_reload]
