"""Typed request/response bodies (msgspec Structs) so validation and the OpenAPI schema are exact.

The batch request's ``max_length`` comes from ``settings.max_batch_size``, so the request types
are built per app by :func:`request_types`.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

MAX_USER_ID_LENGTH = 128

UserId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_USER_ID_LENGTH,
        description="User identifier (the Feast entity key `user_id`).",
        examples=["u0000042"],
    ),
]
RiskTier = Literal["low", "medium", "high"]
Arm = Literal["production", "challenger"]


class PredictRequest(Struct, forbid_unknown_fields=True):
    user_id: UserId


class Factor(Struct):
    """One feature pushing this user's risk up: its value and its contribution (log-odds)."""

    feature: str
    value: float | str | None
    """A count or an amount (JSON numbers: an integral one is still a number, so the OpenAPI
    schema lists ``number`` once; ``int | float`` made every integral value match two branches
    of its ``oneOf``), or a category."""
    contribution: float


class Prediction(Struct):
    user_id: str
    churn_probability: Annotated[float, Meta(ge=0.0, le=1.0)]
    risk_tier: RiskTier
    recommended_action: str
    will_churn: bool
    top_factors: list[Factor]
    model_version: str
    feature_age_seconds: float | None
    scored_at: dt.datetime
    arm: Arm = "production"
    """A/B arm that served this user: ``production``, or ``challenger`` (see ``churn models stage``)."""


class BatchItemOk(Prediction, tag="ok", tag_field="status"):
    """A scored user inside a batch response."""


class BatchItemError(Struct, tag="error", tag_field="status"):
    """A user of the batch that could not be scored (e.g. unknown user); the rest still are."""

    user_id: str
    error: str
    status_code: int


class BatchResponse(Struct):
    model_version: str
    scored_at: dt.datetime
    count: int
    errors: int
    results: list[BatchItemOk | BatchItemError]


class ErrorBody(Struct, omit_defaults=True):
    status_code: int
    detail: str
    request_id: str | None = None
    extra: Any = None


class ComponentState(Struct, omit_defaults=True):
    status: Literal["ok", "degraded", "down"]
    detail: str | None = None


class ModelState(Struct, omit_defaults=True):
    status: Literal["ok", "degraded", "down"]
    version: str | None = None
    kind: str | None = None
    trained_at: dt.datetime | None = None
    age_seconds: float | None = None
    loaded_at: dt.datetime | None = None
    threshold: float | None = None
    detail: str | None = None
    last_reload: dict[str, Any] | None = None


class StoreState(Struct, omit_defaults=True):
    status: Literal["ok", "degraded", "down"]
    kind: str
    detail: str | None = None
    last_read_age_seconds: float | None = None
    feature_age_seconds_last: float | None = None


class Health(Struct):
    status: Literal["ok", "degraded", "down"]
    model: ModelState
    online_store: StoreState
    feature_service: str
    uptime_seconds: float


class Ready(Struct, omit_defaults=True):
    ready: bool
    reasons: list[str] = []


class ReloadResponse(Struct, omit_defaults=True):
    result: Literal["success", "failed", "unchanged"]
    version: str | None
    previous_version: str | None
    detail: str | None = None


@lru_cache(maxsize=16)
def batch_request_type(max_batch_size: int) -> type[Struct]:
    """``{"user_ids": [...]}`` with 1..max_batch_size ids (the limit is part of the schema)."""
    ids = Annotated[
        list[UserId],
        Meta(min_length=1, max_length=max_batch_size, description=f"1 to {max_batch_size} user ids."),
    ]
    return msgspec.defstruct("BatchPredictRequest", [("user_ids", ids)], forbid_unknown_fields=True, module=__name__)
