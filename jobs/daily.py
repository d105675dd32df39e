"""The daily loop, run locally in order (``churn daily --date D``).

build features (up to D) → feast apply (idempotent) → materialize (up to D) → score D → drift D
→ retrain if needed → housekeeping (prediction-log retention, stale temp files). Each step prints
its own one-line summary; the loop stops at the first failing step (non-zero exit) so later steps
never run on stale or half-built inputs. Drift runs with exit-zero semantics: detected drift is a
verdict for the retrain step, not a failure.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from churn.console import step
from churn.errors import ChurnError, JobError
from churn.settings import Settings

EXIT_DRIFT = 3


class DailyError(JobError):
    """A step of the daily loop failed; names the step."""


@dataclass
class DailyResult:
    date: dt.date
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return f"daily loop for {self.date}: {len(self.steps)} steps ok ({' → '.join(self.steps)})"


def build_step(settings: Settings, date: dt.date) -> str:
    from jobs.aggregate import AggregationError, build_features

    try:
        return build_features(settings, end_date=date).summary()
    except AggregationError as exc:
        raise DailyError(str(exc)) from exc


def apply_step(settings: Settings, date: dt.date) -> str:
    from feature_repo.store import apply

    counts = apply(settings)
    return "feast apply: " + ", ".join(f"{k}={v}" for k, v in counts.items())


def materialize_step(settings: Settings, date: dt.date) -> str:
    from jobs.materialize import materialize

    return materialize(settings, date).summary()


def score_step(settings: Settings, date: dt.date) -> str:
    from jobs.score import score

    return score(settings, date).summary()


def drift_step(settings: Settings, date: dt.date) -> str:
    from jobs.drift.launch import run_drift

    code = run_drift(settings, date, exit_zero=True)
    if code not in (0, EXIT_DRIFT):
        raise DailyError(f"drift job exited with status {code}")
    try:
        latest = json.loads(settings.layout.drift_latest.read_text())
    except (OSError, ValueError):
        latest = {}
    detected = bool(latest.get("drift_detected")) if latest.get("date") == date.isoformat() else None
    verdict = {True: "drift detected", False: "no drift", None: "verdict not recorded for this date"}[
        detected
    ]
    return f"drift {date}: {verdict}"


def retrain_step(settings: Settings, date: dt.date) -> str:
    from jobs.retrain import retrain

    return retrain(settings).summary()


def housekeeping_step(settings: Settings, date: dt.date) -> str:
    from jobs.housekeeping import housekeeping

    return housekeeping(settings, date).summary()


STEPS: list[tuple[str, Callable[[Settings, dt.date], str]]] = [
    ("build", build_step),
    ("apply", apply_step),
    ("materialize", materialize_step),
    ("score", score_step),
    ("drift", drift_step),
    ("retrain", retrain_step),
    ("housekeeping", housekeeping_step),
]


def daily(settings: Settings, date: dt.date) -> DailyResult:
    """Run every step for ``date``; raise :class:`DailyError` naming the first step that fails."""
    t0 = time.perf_counter()
    result = DailyResult(date)
    for i, (name, fn) in enumerate(STEPS, 1):
        failure: str | None = None
        with step(f"daily {i}/{len(STEPS)} {name}") as r:  # the failing step still prints its line
            try:
                r.extra["result"] = fn(settings, date)
            except ChurnError as exc:
                failure = str(exc)
            except Exception as exc:  # a bug or an unexpected library error: still name the step
                failure = f"{type(exc).__name__}: {exc}"
            if failure is not None:
                r.extra["FAILED"] = failure
        if failure is not None:
            raise DailyError(f"daily loop stopped at step {name!r}: {failure}")
        result.steps.append(name)
    result.seconds = time.perf_counter() - t0
    return result
