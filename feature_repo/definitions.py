"""Feast definitions for churn-platform: entity ``user``, the feature views, services ``churn_v1``/``churn_v2``.

The views and services are generated from the column contracts in :mod:`churn.schema`
(``FEATURE_VIEWS``, ``FEATURE_SERVICES``), so the daily feature tables, the Feast views and the
model inputs can never disagree. A released service never changes (models trained on it keep
resolving): ``churn_v1`` is the four original views, ``churn_v2`` every view.

Source paths come from the platform settings (``CHURN_DATA_DIR``): the same definitions serve
the embedded default and production. ``feast apply`` run from this directory imports this
module and registers the objects built from :func:`churn.settings.get_settings`; the Python
side (``feature_repo.store``) calls :func:`build_definitions` with explicit settings instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.types import Float64, Int64, String

from churn.schema import CREATED_FIELD, ENTITY_KEY, FEATURE_SERVICES, FEATURE_VIEWS, TIMESTAMP_FIELD
from churn.settings import get_settings
from churn.storage import spark_uri

if TYPE_CHECKING:
    from churn.settings import Settings

PROJECT = "churn"
FEATURE_SERVICE = "churn_v2"
"""The current service; ``Definitions.service`` is the one the settings select."""

# Rows are rewritten every day for every in-scope user; three days tolerates a missed daily
# run while still treating a row that stopped being refreshed as expired (offline joins).
VIEW_TTL = timedelta(days=3)

_ARROW_TO_FEAST = {pa.int64(): Int64, pa.float64(): Float64, pa.string(): String}

_DESCRIPTIONS = {
    "engagement": "Rolling 7/14/30-day activity counts and minutes, and 7-day trends.",
    "recency": "Days since the last activity, login and payment (grows while a user is idle).",
    "payments": "30-day payment outcomes and amounts.",
    "profile": "Static user attributes and tenure.",
    "history": "90/180/365-day and lifetime activity, active days, minutes, completions and spend.",
    "rhythm": "Typical gap between active days, how overdue the user is, streaks and trend ratios.",
    "payment_history": "Lifetime payment outcomes and days since the last failed payment.",
}

_SERVICE_DESCRIPTIONS = {
    "churn_v1": "Short-window features (engagement, recency, payments, profile); frozen.",
    "churn_v2": "Every feature view: churn_v1 plus history, rhythm and payment_history.",
}


def source_glob(features_dir, view: str) -> str:
    """Glob over the daily partitions of one view.

    ``date=*`` (not ``*``) keeps half-written ``.tmp-*`` siblings from atomic writers out of
    the read; DuckDB expands the glob itself (ibis ``read_parquet``).
    """
    return f"{features_dir}/{view}/date=*/*.parquet"


def feast_type(arrow_type: pa.DataType):
    try:
        return _ARROW_TO_FEAST[arrow_type]
    except KeyError as exc:  # pragma: no cover - guarded by tests over FEATURE_VIEWS
        raise TypeError(f"no Feast type for arrow type {arrow_type}") from exc


@dataclass(frozen=True)
class Definitions:
    user: Entity
    sources: dict[str, DataSource]
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]
    default_service: str = FEATURE_SERVICE

    @property
    def service(self) -> FeatureService:
        """The service the settings select (``CHURN_FEATURE_SERVICE``)."""
        try:
            return self.services[self.default_service]
        except KeyError:
            raise ValueError(
                f"feature service {self.default_service!r} is not defined (known: {', '.join(self.services)})"
            ) from None

    @property
    def objects(self) -> list:
        """Everything to register: every service, not only the selected one (apply keeps them all)."""
        return [self.user, *self.sources.values(), *self.views.values(), *self.services.values()]


def _source(settings: Settings, view: str) -> DataSource:
    """One view's daily partitions, as the offline store of ``settings.engine`` reads them: a
    Parquet glob for DuckDB, the view's folder for Spark (which finds ``date=`` partitions itself
    and skips the atomic writers' ``.tmp-*`` siblings, as it skips every dot-file)."""
    description = f"Daily '{view}' feature table, one partition per date."
    if settings.engine == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(
            name=f"{view}_source",
            path=spark_uri(settings.layout.feature_view_dir(view)),
            file_format="parquet",
            timestamp_field=TIMESTAMP_FIELD,
            created_timestamp_column=CREATED_FIELD,
            description=description,
        )
    return FileSource(
        name=f"{view}_source",
        path=source_glob(settings.features_dir, view),
        file_format=ParquetFormat(),
        s3_endpoint_override=(settings.s3_endpoint_url or None) if settings.remote else None,
        timestamp_field=TIMESTAMP_FIELD,
        created_timestamp_column=CREATED_FIELD,
        description=description,
    )


def build_definitions(settings: Settings) -> Definitions:
    """All Feast objects of the repo, with sources under ``settings.features_dir``."""
    user = Entity(
        name="user",
        join_keys=[ENTITY_KEY],
        value_type=ValueType.STRING,
        description="A learner on the platform.",
    )
    sources: dict[str, DataSource] = {}
    views: dict[str, FeatureView] = {}
    for view, columns in FEATURE_VIEWS.items():
        sources[view] = _source(settings, view)
        views[view] = FeatureView(
            name=view,
            entities=[user],
            ttl=VIEW_TTL,
            schema=[Field(name=col, dtype=feast_type(t)) for col, t in columns.items()],
            source=sources[view],
            online=True,
            description=_DESCRIPTIONS.get(view, ""),
            tags={"team": "churn"},
        )
    services = {
        name: FeatureService(
            name=name,
            features=[views[v] for v in service_views],
            description=_SERVICE_DESCRIPTIONS.get(name, ""),
        )
        for name, service_views in FEATURE_SERVICES.items()
    }
    return Definitions(
        user=user, sources=sources, views=views, services=services, default_service=settings.feature_service
    )


# Module-level objects for the `feast` CLI (feast apply / plan / ui scan module globals).
_defs = build_definitions(get_settings())
user = _defs.user
engagement_source = _defs.sources["engagement"]
recency_source = _defs.sources["recency"]
payments_source = _defs.sources["payments"]
profile_source = _defs.sources["profile"]
history_source = _defs.sources["history"]
rhythm_source = _defs.sources["rhythm"]
payment_history_source = _defs.sources["payment_history"]
engagement = _defs.views["engagement"]
recency = _defs.views["recency"]
payments = _defs.views["payments"]
profile = _defs.views["profile"]
history = _defs.views["history"]
rhythm = _defs.views["rhythm"]
payment_history = _defs.views["payment_history"]
churn_v1 = _defs.services["churn_v1"]
churn_v2 = _defs.services["churn_v2"]
