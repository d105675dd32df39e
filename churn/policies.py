"""The business rules every stage must agree on, each written once.

* Risk tiers and the intervention recommended for each: the API, batch scoring and the rollout
  comparison all tier a probability here.
* The label: a user eligible at cutoff T (midnight UTC) has churned if they have no event in
  ``[T, T + horizon)``. Eligible means active within ``active_days`` before T, the population
  batch scoring scores every day, so training, live monitoring and rollout comparisons judge the
  model on the users it will be asked about. A label is known only once raw events cover its window.
* The daily chain's steps, in the order they run: ``jobs.daily`` runs them, the operator console
  orders its runs page by them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from churn.settings import Settings

DAILY_STEPS: tuple[str, ...] = (
    "ingest",
    "build",
    "apply",
    "materialize",
    "score",
    "interventions",
    "drift",
    "retrain",
    "compare",
    "housekeeping",
)

TIERS: tuple[str, ...] = ("low", "medium", "high")
NO_ACTION = "none"


@dataclass(frozen=True)
class RiskPolicy:
    """Probability → tier (``p >= medium`` is medium, ``p >= high`` is high) → recommended action."""

    medium: float
    high: float
    actions: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> RiskPolicy:
        mapping = settings.intervention_map
        return cls(
            medium=float(settings.risk_medium),
            high=float(settings.risk_high),
            actions={t: mapping.get(t, NO_ACTION) for t in TIERS},
        )

    def tier_index(self, proba: np.ndarray) -> np.ndarray:
        """0/1/2 = low/medium/high for a whole array at once."""
        return np.searchsorted(np.array([self.medium, self.high]), proba, side="right")

    def tiers(self, proba: np.ndarray) -> np.ndarray:
        return np.asarray(TIERS, dtype=object)[self.tier_index(np.asarray(proba, dtype=np.float64))]

    def tier(self, p: float) -> str:
        if p >= self.high:
            return "high"
        if p >= self.medium:
            return "medium"
        return "low"

    def action(self, tier: str) -> str:
        return self.actions.get(tier, NO_ACTION)

    def action_array(self, tier_index: np.ndarray) -> np.ndarray:
        return np.array([self.actions[t] for t in TIERS], dtype=object)[tier_index]


@dataclass(frozen=True)
class LabelPolicy:
    """Who is asked about at a cutoff, and what counts as having churned."""

    horizon_days: int
    active_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelPolicy:
        return cls(horizon_days=int(settings.churn_horizon_days), active_days=int(settings.active_days))

    def window(self, cutoff: dt.date) -> tuple[dt.date, dt.date]:
        """The label window ``[cutoff, cutoff + horizon)`` as dates (end exclusive)."""
        return cutoff, cutoff + dt.timedelta(days=self.horizon_days)

    def window_days(self, cutoff: dt.date) -> list[dt.date]:
        return [cutoff + dt.timedelta(days=i) for i in range(self.horizon_days)]

    def eligible(self, days_since_last_activity: np.ndarray) -> np.ndarray:
        """Active within ``active_days`` before the cutoff (NaN = never active = not eligible)."""
        return np.asarray(days_since_last_activity, dtype=np.float64) <= self.active_days

    def eligible_sql(self, column: str = "days_since_last_activity") -> str:
        """The same rule as a SQL predicate, for DuckDB readers of the recency view."""
        return f"{column} <= {float(self.active_days)}"

    def latest_cutoff(self, last_event_day: dt.date) -> dt.date:
        """The newest cutoff whose whole label window is observed."""
        return last_event_day + dt.timedelta(days=1 - self.horizon_days)

    def mature(self, cutoff: dt.date, last_event_day: dt.date | None) -> tuple[bool, str]:
        """Whether raw events cover the whole label window of ``cutoff`` (and why not)."""
        if last_event_day is None:
            return False, "no raw events"
        start, end = self.window(cutoff)
        if end > last_event_day + dt.timedelta(days=1):
            return False, f"the label window [{start}, {end}) ends after the last event day {last_event_day}"
        return True, ""
