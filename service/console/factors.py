"""Feature names in plain words, for people who do not read column names: "days since last activity: 23".

Every feature of ``churn.schema.FEATURE_VIEWS`` has a phrase: the fixed ones are listed, the
windowed families (``logins_30d``, ``spend_lifetime``, ``minutes_ratio_7d_30d``) are built from
their parts, and a name nobody taught this module falls back to its words (underscores → spaces),
so a new feature is never an error, only less elegant.
"""

from __future__ import annotations

import math
import re
from typing import Any

FIXED: dict[str, str] = {
    "days_since_last_activity": "days since last activity",
    "days_since_last_login": "days since last login",
    "days_since_last_payment": "days since last payment",
    "days_since_last_failed_payment": "days since last failed payment",
    "days_since_first_active_day": "days since first active day",
    "days_since_last_active_day": "days since last active day",
    "active_days_trend_7d": "change in active days (last 7 days vs the 7 before)",
    "minutes_trend_7d": "change in learning minutes (last 7 days vs the 7 before)",
    "tenure_days": "days since sign-up",
    "plan": "plan",
    "country": "country",
    "acquisition_channel": "acquisition channel",
    "device": "device",
    "typical_gap_days": "typical gap between active days (days)",
    "overdue_ratio": "current gap vs typical gap",
    "longest_streak_30d": "longest run of active days in the last 30 days",
    "failed_payment_ratio_30d": "share of payments failed in the last 30 days",
    "failed_payment_ratio_lifetime": "share of payments ever failed",
}
"""Names whose phrase is not built from a metric and a window."""

METRICS: dict[str, str] = {
    "active_days": "active days",
    "logins": "logins",
    "minutes": "learning minutes",
    "course_views": "course views",
    "quiz_attempts": "quiz attempts",
    "completions": "course completions",
    "activity": "events",
    "spend": "amount spent",
    "payments_succeeded": "successful payments",
    "payments_failed": "failed payments",
    "payments_refunded": "refunded payments",
    "amount_succeeded": "amount paid",
    "amount_failed": "amount of failed payments",
}
"""Metric part of a windowed name → its words."""

_WINDOW = re.compile(r"^(?P<metric>[a-z_]+?)_(?P<days>\d+)d$")
_LIFETIME = re.compile(r"^(?P<metric>[a-z_]+?)_lifetime$")
_RATIO = re.compile(r"^(?P<metric>[a-z_]+?)_ratio_(?P<short>\d+)d_(?P<long>\d+)d$")


def feature_words(name: str) -> str:
    """The plain-words label of a feature name (never raises)."""
    if name in FIXED:
        return FIXED[name]
    if m := _RATIO.match(name):
        what = METRICS.get(m["metric"], m["metric"].replace("_", " "))
        return f"{what}: last {m['short']} days vs last {m['long']} days (ratio)"
    if m := _WINDOW.match(name):
        if m["metric"] in METRICS:
            return f"{METRICS[m['metric']]} in the last {m['days']} days"
    if m := _LIFETIME.match(name):
        if m["metric"] in METRICS:
            return f"{METRICS[m['metric']]} ever"
    return name.replace("_", " ")


def format_value(value: Any) -> str:
    """A feature value as a person reads it: ``23`` not ``23.0``, two decimals at most, ``missing``."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "yes" if value else "no"
    number: float | None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        if text == "" or text.lower() in {"nan", "none", "null"}:
            return "missing"
        try:
            number = float(text)
        except ValueError:
            return text
    if math.isnan(number):
        return "missing"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return f"{number:,.2f}".rstrip("0").rstrip(".") if abs(number) >= 0.01 else f"{number:.2g}"


def phrase(name: str | None, value: Any) -> str | None:
    """``"days since last activity: 23"``; ``None`` for an empty factor slot."""
    if not name:
        return None
    return f"{feature_words(name)}: {format_value(value)}"
