"""The daily loop, run locally in order (``churn daily --date D [--from STEP] [--to STEP]``).

ingest D's landing files (skipped when the data dir has no ``landing/`` prefix) → build features
(up to D) → feast apply (idempotent) → materialize (up to D) → score D → plan and send D's
interventions → drift D → retrain if needed → compare what is staged with production (kept for
the console) → housekeeping (prediction-log retention, stale temp files). Each step prints its own
one-line summary; the loop stops at the first failing step (non-zero exit) so later steps never
run on stale or half-built inputs: with a landing prefix, D's events not having arrived stops it
at ``ingest``. Drift runs with exit-zero semantics:
detected drift is a verdict for the retrain step, not a failure. ``first``/``last`` run a
contiguous part of the chain. After the run (success or failure) the steps' metrics are published
once (:mod:`jobs.daily_metrics`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from churn.console import step
from churn.errors import ChurnError, JobError
from churn.policies import DAILY_STEPS
from churn.settings import Settings

EXIT_DRIFT = 3


class DailyError(JobError):
    """A step of the daily loop failed; names the step."""


@dataclass
class DailyResult:
    date: dt.date
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0
    metrics: str = ""
    """Where the step metrics went (pushed, textfile, or a failed push)."""

    def summary(self) -> str:
        return f"daily loop for {self.date}: {len(self.steps)} steps ok ({' → '.join(self.steps)})"


def ingest_step(settings: Settings, date: dt.date) -> str:
    from jobs.landing import ingest_landing

    if not settings.layout.landing_dir.exists():  # a site importing by hand (churn data import)
        return "no landing prefix; skipped"
    return ingest_landing(settings, date).summary()


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
    from training.registry import ModelRegistry

    if ModelRegistry(settings).production_version() is None:
        # A first install (or a first import): the retrain step trains and promotes the first model.
        return f"score {date}: skipped: no production model yet (the retrain step trains the first)"
    return score(settings, date).summary()


def interventions_step(settings: Settings, date: dt.date) -> str:
    from churn.layout import PREDICTIONS_PARQUET
    from jobs.interventions.plan import plan
    from jobs.interventions.send import send

    if not (settings.layout.predictions(date) / PREDICTIONS_PARQUET).exists():
        # The score step skipped the day (no production model yet): nobody to choose from.
        return f"interventions {date}: skipped: no scores for the day"
    planned = plan(settings, date)
    return f"{planned.summary()}; {send(settings, date).summary()}"


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
    verdict = {True: "drift detected", False: "no drift", None: "verdict not recorded for this date"}[detected]
    return f"drift {date}: {verdict}"


def retrain_step(settings: Settings, date: dt.date) -> str:
    from jobs.retrain import retrain

    return retrain(settings).summary()


def compare_step(settings: Settings, date: dt.date) -> str:
    from jobs.compare import compare_staged, save

    report = compare_staged(settings, date)
    if report is None:
        return "nothing staged: no comparison"
    save(settings, report)
    r = report.recommendation
    return f"compare {report.since}..{date}: {len(report.candidates)} candidate(s); {r.action}: {r.reason}"


def housekeeping_step(settings: Settings, date: dt.date) -> str:
    from jobs.housekeeping import housekeeping

    return housekeeping(settings, date).summary()


_STEP_FUNCTIONS: dict[str, Callable[[Settings, dt.date], str]] = {
    "ingest": ingest_step,
    "build": build_step,
    "apply": apply_step,
    "materialize": materialize_step,
    "score": score_step,
    "interventions": interventions_step,
    "drift": drift_step,
    "retrain": retrain_step,
    "compare": compare_step,
    "housekeeping": housekeeping_step,
}
STEPS: list[tuple[str, Callable[[Settings, dt.date], str]]] = [(name, _STEP_FUNCTIONS[name]) for name in DAILY_STEPS]
"""The chain in :data:`churn.policies.DAILY_STEPS` order (a step without a function fails at import)."""


STEP_NAMES: list[str] = [name for name, _ in STEPS]


def select_steps(first: str | None = None, last: str | None = None) -> list[int]:
    """Indexes into :data:`STEPS` from ``first`` to ``last`` (inclusive; default the whole chain)."""
    order = " → ".join(STEP_NAMES)
    for option, name in (("--from", first), ("--to", last)):
        if name is not None and name not in STEP_NAMES:
            raise DailyError(f"{option} {name!r}: no such daily step; the steps are, in order: {order}")
    start = STEP_NAMES.index(first) if first is not None else 0
    stop = STEP_NAMES.index(last) if last is not None else len(STEPS) - 1
    if start > stop:
        raise DailyError(f"--from {first} comes after --to {last}; the steps run in this order: {order}")
    return list(range(start, stop + 1))


def daily(settings: Settings, date: dt.date, first: str | None = None, last: str | None = None) -> DailyResult:
    """Run the steps ``first``..``last`` (default all) for ``date``; raise :class:`DailyError` naming
    the first step that fails. Step metrics are published once at the end, success or failure."""
    from jobs.daily_metrics import DailyMetrics

    selected = select_steps(first, last)  # a bad name fails before anything runs or is published
    t0 = time.perf_counter()
    result = DailyResult(date)
    metrics = DailyMetrics(settings)
    metrics.begin_run(date)
    try:
        for i in selected:
            name, fn = STEPS[i]
            failure: str | None = None
            started = time.perf_counter()
            with step(f"daily {i + 1}/{len(STEPS)} {name}") as r:  # the failing step still prints its line
                try:
                    r.extra["result"] = fn(settings, date)
                except ChurnError as exc:
                    failure = str(exc)
                except Exception as exc:  # a bug or an unexpected library error: still name the step
                    failure = f"{type(exc).__name__}: {exc}"
                if failure is not None:
                    r.extra["FAILED"] = failure
            metrics.record_step(name, time.perf_counter() - started, ok=failure is None, detail=failure)
            if name == "ingest" and settings.layout.landing_dir.exists():
                metrics.record_landing(date)
            if failure is not None:
                raise DailyError(f"daily loop stopped at step {name!r}: {failure}")
            result.steps.append(name)
    finally:
        result.metrics = metrics.publish()
        print(result.metrics, flush=True)
    result.seconds = time.perf_counter() - t0
    return result
