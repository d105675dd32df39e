"""Column contracts shared by every stage: raw inputs, daily feature tables, feature views.

Timestamps are UTC with microsecond precision everywhere (Feast's point-in-time join breaks
on nanosecond timestamps). A feature row for partition ``date=D`` has
``event_timestamp = D 00:00 UTC`` and summarises activity strictly *before* D, so "features
as of D" is exactly the row of partition D, and a training cutoff T at midnight sees only
events before T.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

# --- raw inputs ----------------------------------------------------------------------------
USERS_SCHEMA: Final = pa.schema(
    [
        ("user_id", pa.string()),
        ("signup_ts", TS),
        ("plan", pa.string()),
        ("country", pa.string()),
        ("acquisition_channel", pa.string()),
        ("device", pa.string()),
    ]
)
EVENTS_SCHEMA: Final = pa.schema(
    [
        ("user_id", pa.string()),
        ("event_ts", TS),
        ("event_type", pa.string()),
        ("course_id", pa.string()),
        ("minutes", pa.float64()),
    ]
)
PAYMENTS_SCHEMA: Final = pa.schema(
    [
        ("user_id", pa.string()),
        ("payment_ts", TS),
        ("amount", pa.float64()),
        ("status", pa.string()),
        ("plan", pa.string()),
    ]
)
RAW_SCHEMAS: Final = {"users": USERS_SCHEMA, "events": EVENTS_SCHEMA, "payments": PAYMENTS_SCHEMA}
RAW_TIME_COLUMN: Final = {"users": "signup_ts", "events": "event_ts", "payments": "payment_ts"}

EVENT_TYPES: Final = ("login", "course_view", "video_watch", "quiz_attempt", "course_complete", "logout")
GENERIC_EVENT_TYPE: Final = "activity"  # marks the user active; counted in no typed metric
CANONICAL_EVENT_TYPES: Final = (*EVENT_TYPES, GENERIC_EVENT_TYPE)  # what the raw store accepts
PAYMENT_STATUSES: Final = ("succeeded", "failed", "refunded")
PLANS: Final = ("free", "basic", "premium")

# --- daily feature tables (one per feature view, features/<view>/date=YYYY-MM-DD/) --------------
WINDOWS: Final = (7, 14, 30)
"""Short windows of the ``engagement`` view (sums over the active days in the window)."""
LONG_WINDOWS: Final = (90, 180, 365)
"""Long horizons of the ``history`` view: differences of running totals, never a scan of raw events."""
HISTORY_METRICS: Final = ("activity", "active_days", "minutes", "completions", "spend")
"""Running totals kept per user: events of any type, active days, minutes, completions, succeeded amount."""
TREND_METRICS: Final = ("activity", "active_days", "minutes")
TREND_PAIRS: Final = ((7, 30), (30, 90))
"""(short, long) windows compared per day: a steady user scores about 1."""
STREAK_DAYS: Final = 30
"""Horizon of the longest run of consecutive active days."""
FLOAT_METRICS: Final = frozenset({"minutes", "spend"})
ENGAGEMENT_METRICS: Final = (
    "active_days",
    "logins",
    "minutes",
    "course_views",
    "quiz_attempts",
    "completions",
)

ENTITY_KEY: Final = "user_id"
TIMESTAMP_FIELD: Final = "event_timestamp"
CREATED_FIELD: Final = "created"


def _metric_type(metric: str) -> pa.DataType:
    """Amounts and minutes are fractional; counts are exact integers."""
    return pa.float64() if metric in FLOAT_METRICS else pa.int64()


FEATURE_VIEWS: Final[dict[str, dict[str, pa.DataType]]] = {
    "engagement": {
        **{
            f"{m}_{w}d": (pa.float64() if m == "minutes" else pa.int64())
            for w in WINDOWS
            for m in ENGAGEMENT_METRICS
        },
        "active_days_trend_7d": pa.int64(),  # last 7 days minus the 7 before
        "minutes_trend_7d": pa.float64(),
    },
    "recency": {
        "days_since_last_activity": pa.float64(),
        "days_since_last_login": pa.float64(),
        "days_since_last_payment": pa.float64(),
    },
    "payments": {
        "payments_succeeded_30d": pa.int64(),
        "payments_failed_30d": pa.int64(),
        "payments_refunded_30d": pa.int64(),
        "amount_succeeded_30d": pa.float64(),
        "amount_failed_30d": pa.float64(),
        "failed_payment_ratio_30d": pa.float64(),
    },
    "profile": {
        "plan": pa.string(),
        "country": pa.string(),
        "acquisition_channel": pa.string(),
        "device": pa.string(),
        "tenure_days": pa.int64(),
    },
    "history": {
        **{f"{m}_{w}d": _metric_type(m) for w in LONG_WINDOWS for m in HISTORY_METRICS},
        **{f"{m}_lifetime": _metric_type(m) for m in HISTORY_METRICS},
        # Whole days from the first / last active day to the row date (NULL: never active). They
        # also carry the running state of incremental builds (see jobs/aggregate.py).
        "days_since_first_active_day": pa.int64(),
        "days_since_last_active_day": pa.int64(),
    },
    "rhythm": {
        "typical_gap_days": pa.float64(),  # mean gap between active days over the lifetime
        "overdue_ratio": pa.float64(),  # current gap / typical gap
        f"longest_streak_{STREAK_DAYS}d": pa.int64(),
        **{f"{m}_ratio_{a}d_{b}d": pa.float64() for a, b in TREND_PAIRS for m in TREND_METRICS},
    },
    "payment_history": {
        "payments_succeeded_lifetime": pa.int64(),
        "payments_failed_lifetime": pa.int64(),
        "payments_refunded_lifetime": pa.int64(),
        "failed_payment_ratio_lifetime": pa.float64(),
        "days_since_last_failed_payment": pa.float64(),
    },
}
CATEGORICAL_FEATURES: Final = ("plan", "country", "acquisition_channel", "device")
ALL_FEATURES: Final = tuple(c for cols in FEATURE_VIEWS.values() for c in cols)

# --- feature services: a released service never changes; a new feature list is a new version --------
FEATURE_SERVICES: Final[dict[str, tuple[str, ...]]] = {
    "churn_v1": ("engagement", "recency", "payments", "profile"),
    "churn_v2": tuple(FEATURE_VIEWS),
}


def service_features(service: str) -> tuple[str, ...]:
    """The features of a feature service, in view order (models are built by name, not position)."""
    return tuple(c for view in FEATURE_SERVICES[service] for c in FEATURE_VIEWS[view])


def feature_table_schema(view: str) -> pa.Schema:
    cols = [(ENTITY_KEY, pa.string()), (TIMESTAMP_FIELD, TS), (CREATED_FIELD, TS)]
    cols += list(FEATURE_VIEWS[view].items())
    return pa.schema(cols)
