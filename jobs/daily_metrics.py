"""The daily run's step metrics: recorded after every step, published once at the end of the run.

Published to the Pushgateway (``CHURN_PUSHGATEWAY_URL``, ``host:port`` or a URL; job
``churn_daily``, ``pushadd``: POST, so metric families this run did not record keep their values
there) or, without one, as the textfile ``<data_dir>/daily/metrics.prom``. A failed push or write
is a printed warning, never a failed run: the metrics describe the run, they are not part of it.

Every step's last outcome is kept in ``<data_dir>/daily/steps.json`` (with the last
:data:`RUNS_KEPT` runs step by step, for the operator console's Runs page) and every publication carries
all of them, so a partial run (``--from``/``--to``) or a failed one does not make the last success
of the other steps disappear from the gauges alerts watch:

- ``churn_daily_step_last_success_timestamp_seconds{step}``: when the step last succeeded;
- ``churn_daily_step_duration_seconds{step}``: how long its last run took;
- ``churn_daily_step_failed{step}``: 1 if its last run failed;
- ``churn_landing_missing{table}``: 1 if the last ingest found no files of its day for the table
  (``events`` is the one that stops the chain; payments and users are optional);
- ``churn_landing_latest_day_timestamp_seconds{table}``: the newest landing day holding files.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from churn.console import console
from churn.io import write_json_atomic, write_text_atomic
from churn.settings import Settings

PUSH_JOB = "churn_daily"
RUNS_KEPT = 30
"""Daily runs kept step by step in the state file (older ones are dropped; the file stays small)."""
DETAIL_CHARS = 500
PUSH_TIMEOUT_S = 10.0

STEP_LAST_SUCCESS = "churn_daily_step_last_success_timestamp_seconds"
STEP_DURATION = "churn_daily_step_duration_seconds"
STEP_FAILED = "churn_daily_step_failed"
LANDING_MISSING = "churn_landing_missing"
LANDING_LATEST_DAY = "churn_landing_latest_day_timestamp_seconds"
METRIC_NAMES = (STEP_LAST_SUCCESS, STEP_DURATION, STEP_FAILED, LANDING_MISSING, LANDING_LATEST_DAY)


def _epoch(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", markup=True, soft_wrap=True, highlight=False)


class DailyMetrics:
    """Collects one daily run's outcomes on top of the kept state; :meth:`publish` sends them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state: dict[str, Any] = {"steps": {}, "landing": {}, "runs": []}
        self.run: dict[str, Any] | None = None
        path = settings.layout.daily_state
        try:
            if path.exists():
                loaded = json.loads(path.read_text())
                self.state["steps"].update(loaded.get("steps", {}))
                self.state["landing"].update(loaded.get("landing", {}))
                runs = loaded.get("runs", [])
                self.state["runs"] = (
                    [r for r in runs if isinstance(r, dict)][-RUNS_KEPT:] if isinstance(runs, list) else []
                )
        except (OSError, ValueError, AttributeError) as exc:
            _warn(f"{path}: previous daily step state unreadable ({exc}); starting afresh")

    def begin_run(self, day: dt.date, started_at: float | None = None) -> None:
        """Start recording one run (kept with its steps in the state's ``runs``, newest last)."""
        self.run = {
            "day": day.isoformat(),
            "started_at": time.time() if started_at is None else started_at,
            "steps": [],
        }

    def record_step(
        self, step: str, seconds: float, ok: bool, finished_at: float | None = None, detail: str | None = None
    ) -> None:
        at = time.time() if finished_at is None else finished_at
        prev = self.state["steps"].get(step, {})
        self.state["steps"][step] = {
            "duration_seconds": float(seconds),
            "failed": 0 if ok else 1,
            "finished_at": at,
            "last_success": at if ok else prev.get("last_success"),
            **({"detail": detail[:DETAIL_CHARS]} if detail else {}),
        }
        if self.run is not None:
            self.run["steps"].append(
                {
                    "step": step,
                    "duration_seconds": float(seconds),
                    "failed": 0 if ok else 1,
                    "finished_at": at,
                    **({"detail": detail[:DETAIL_CHARS]} if detail else {}),
                }
            )

    def record_landing(self, day: dt.date) -> None:
        """What arrived for ``day`` (after the ingest step, whatever its outcome)."""
        from jobs.landing import landing_status

        try:
            status = landing_status(self.settings, day)
        except Exception as exc:  # the metrics must never hide the step's own outcome
            _warn(f"landing status for {day} unavailable: {exc}")
            return
        for s in status:
            self.state["landing"][s.table] = {
                "day": day.isoformat(),
                "missing": int(s.missing),
                "latest_day": s.latest_day.isoformat() if s.latest_day else None,
            }

    def registry(self) -> Any:
        """A fresh ``CollectorRegistry`` holding every kept outcome."""
        from prometheus_client import CollectorRegistry, Gauge

        reg = CollectorRegistry()
        last_success = Gauge(STEP_LAST_SUCCESS, "When the daily step last succeeded.", ["step"], registry=reg)
        duration = Gauge(STEP_DURATION, "How long the daily step's last run took.", ["step"], registry=reg)
        failed = Gauge(STEP_FAILED, "1 if the daily step's last run failed, else 0.", ["step"], registry=reg)
        for step, s in sorted(self.state["steps"].items()):
            duration.labels(step=step).set(s["duration_seconds"])
            failed.labels(step=step).set(s["failed"])
            if s.get("last_success") is not None:
                last_success.labels(step=step).set(s["last_success"])
        if self.state["landing"]:
            missing = Gauge(
                LANDING_MISSING, "1 if the last ingest found no landing files of its day.", ["table"], registry=reg
            )
            latest = Gauge(LANDING_LATEST_DAY, "Newest landing day holding files (00:00 UTC).", ["table"], registry=reg)
            for table, s in sorted(self.state["landing"].items()):
                missing.labels(table=table).set(s["missing"])
                if s.get("latest_day"):
                    latest.labels(table=table).set(_epoch(dt.date.fromisoformat(s["latest_day"])))
        return reg

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry()).decode()

    def grouping_key(self) -> dict[str, str]:
        """The Pushgateway group beyond the job: the deployment's namespace, when it has one."""
        namespace = self.settings.namespace.strip()
        return {"namespace": namespace} if namespace else {}

    def publish(self) -> str:
        """Keep the state, then push (or write the textfile); a one-line note of where it went."""
        layout = self.settings.layout
        if self.run is not None:
            self.state["runs"] = [*self.state["runs"], self.run][-RUNS_KEPT:]
            self.run = None
        try:
            write_json_atomic(layout.daily_state, self.state)
        except Exception as exc:
            _warn(f"daily step state not kept at {layout.daily_state}: {exc}")
        url = self.settings.pushgateway_url.strip()
        if url:
            from prometheus_client import pushadd_to_gateway

            from churn.job_metrics import JobMetricsCollector

            reg = self.registry()
            # Scoring and drift metrics ride along: pushed once, not re-exported by every API replica.
            reg.register(JobMetricsCollector(self.settings))
            try:
                pushadd_to_gateway(
                    url, job=PUSH_JOB, registry=reg, grouping_key=self.grouping_key(), timeout=PUSH_TIMEOUT_S
                )
            except Exception as exc:  # unreachable, refused, HTTP error: the run itself stands
                _warn(f"daily metrics not pushed to {url}: {exc}")
                return f"daily metrics: push to {url} failed"
            return f"daily metrics: pushed to {url} (job {PUSH_JOB})"
        try:
            write_text_atomic(layout.daily_metrics, self.text())
        except Exception as exc:
            _warn(f"daily metrics not written to {layout.daily_metrics}: {exc}")
            return "daily metrics: textfile not written"
        return f"daily metrics: wrote {layout.daily_metrics}"


__all__ = ["METRIC_NAMES", "PUSH_JOB", "RUNS_KEPT", "DailyMetrics"]
