"""The statistics of the intervention report: uplift of an action with its interval, and a verdict.

Uplift is the control group's churn rate minus the contacted group's, so a positive uplift means
the action keeps users. Its interval is Newcombe's hybrid score interval for a difference of two
independent proportions (Newcombe 1998, method 10), built from each group's Wilson interval:

* closed form and deterministic, so a report re-run on the same data gives the same figures and a
  test can pin them (a bootstrap would add noise and seconds for no better coverage here);
* it keeps close to its nominal coverage with small groups and with rates near 0 or 1, where the
  textbook normal (Wald) interval is too narrow and can leave [-1, 1]: a fresh campaign has few
  matured users, and a small control share makes the control group the small one.

The verdict reads the interval only: entirely above zero helps, entirely below harms, otherwise
no detectable effect; with fewer than ``min_per_group`` matured users in either group it is not
given at all. The two-sided p-value of the pooled two-proportion z-test is reported beside it,
for readers used to one; it agrees with the interval in all but borderline cases.

Revenue is compared the same way on the mean revenue per user of each group (a normal interval
with each group's own variance: Welch), then scaled by the number of contacted users.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm

HELPS = "helps"
HARMS = "harms"
NO_EFFECT = "no detectable effect"
NOT_ENOUGH = "not enough data yet"
VERDICTS: tuple[str, ...] = (HELPS, NO_EFFECT, HARMS, NOT_ENOUGH)

CONFIDENCE = 0.95
MIN_PER_GROUP = 30
"""Fewest matured users per group before a verdict is given: below it the Wilson intervals are
honest but so wide that any verdict would only say the campaign is young."""


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson(x: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``x / n`` (``(0, 1)`` when ``n`` is 0), from SciPy."""
    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(x), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def newcombe(x1: int, n1: int, x2: int, n2: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``x1/n1 - x2/n2``."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return lower, upper


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled z-test of ``x1/n1 == x2/n2`` (None when it is undefined)."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return None
    return float(2.0 * norm.sf(abs(x1 / n1 - x2 / n2) / se))


def verdict(lower: float, upper: float) -> str:
    if lower > 0.0:
        return HELPS
    if upper < 0.0:
        return HARMS
    return NO_EFFECT


@dataclass(frozen=True)
class Uplift:
    """Churn of the contacted group against the control group, for one action (or action × tier)."""

    treated: int
    treated_churned: int
    control: int
    control_churned: int
    treated_rate: float | None
    control_rate: float | None
    uplift: float | None = None
    """Control churn rate minus contacted churn rate: churn points the action removed."""
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    verdict: str = NOT_ENOUGH
    users_saved: float | None = None
    """``uplift × contacted users``: how many contacted users did not churn because of the action."""
    users_saved_ci: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["users_saved_ci"] = list(self.users_saved_ci) if self.users_saved_ci else None
        return out


def uplift(
    treated_churned: int,
    treated: int,
    control_churned: int,
    control: int,
    *,
    confidence: float = CONFIDENCE,
    min_per_group: int = MIN_PER_GROUP,
) -> Uplift:
    """Rates, uplift, its Newcombe interval, the p-value and the verdict from four counts."""
    t_rate = treated_churned / treated if treated else None
    c_rate = control_churned / control if control else None
    counts = dict(
        treated=treated,
        treated_churned=treated_churned,
        control=control,
        control_churned=control_churned,
        treated_rate=t_rate,
        control_rate=c_rate,
    )
    if t_rate is None or c_rate is None:
        return Uplift(**counts)
    lo, hi = newcombe(control_churned, control, treated_churned, treated, confidence)
    diff = c_rate - t_rate
    enough = treated >= min_per_group and control >= min_per_group
    return Uplift(
        **counts,
        uplift=diff,
        ci_low=lo,
        ci_high=hi,
        p_value=two_proportion_p_value(control_churned, control, treated_churned, treated),
        verdict=verdict(lo, hi) if enough else NOT_ENOUGH,
        users_saved=diff * treated,
        users_saved_ci=(lo * treated, hi * treated),
    )


@dataclass(frozen=True)
class MeanDifference:
    """Mean revenue per contacted user minus per control user, with a Welch normal interval."""

    treated_mean: float | None
    control_mean: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    kept: float | None
    """``difference × contacted users``: revenue the action kept (or cost, when negative)."""
    kept_ci: tuple[float, float] | None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kept_ci"] = list(self.kept_ci) if self.kept_ci else None
        return out


def mean_difference(treated: np.ndarray, control: np.ndarray, confidence: float = CONFIDENCE) -> MeanDifference:
    t = np.asarray(treated, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    if t.size < 2 or c.size < 2:
        return MeanDifference(
            float(t.mean()) if t.size else None, float(c.mean()) if c.size else None, None, None, None, None, None
        )
    diff = float(t.mean() - c.mean())
    half = _z(confidence) * math.sqrt(t.var(ddof=1) / t.size + c.var(ddof=1) / c.size)
    lo, hi = diff - half, diff + half
    return MeanDifference(float(t.mean()), float(c.mean()), diff, lo, hi, diff * t.size, (lo * t.size, hi * t.size))
