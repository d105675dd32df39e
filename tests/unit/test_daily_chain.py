"""The daily chain's options and bookkeeping: date keywords, step ranges, the ingest step without a
landing prefix, and the step metrics textfile (no servers: the Pushgateway push is an integration test)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import typer

from churn.settings import Settings
from tests.support.metrics import Samples, metric, metrics_of
from tests.support.settings import make_settings

DAY = dt.date(2026, 3, 2)


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# --- --date ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "days_back"), [(None, 0), ("today", 0), ("yesterday", 1), ("Yesterday", 1), (" today ", 0)]
)
def test_cli_dates_accept_today_and_yesterday(typed: str | None, days_back: int) -> None:
    from cli.options import parse_date

    assert parse_date(typed) == _today() - dt.timedelta(days=days_back)


def test_cli_dates_accept_iso_and_refuse_the_rest() -> None:
    from cli.options import parse_date

    assert parse_date("2026-03-02") == DAY
    for bad in ("tomorrow", "2026-13-01", "02/03/2026"):
        with pytest.raises(typer.BadParameter, match="YYYY-MM-DD, today or yesterday"):
            parse_date(bad)


def test_drift_entry_point_accepts_the_same_dates(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.drift.__main__ import parse_args

    assert parse_args(["--date", "yesterday"]).date == _today() - dt.timedelta(days=1)
    assert parse_args(["--date", "today"]).date == _today()
    assert parse_args([]).date == _today()
    assert parse_args(["--date", "2026-03-02"]).date == DAY
    with pytest.raises(SystemExit) as info:
        parse_args(["--date", "tomorrow"])
    assert info.value.code == 1
    assert "today or yesterday" in capsys.readouterr().err


# --- --from / --to -----------------------------------------------------------------------------------


def test_steps_run_in_the_documented_order() -> None:
    from jobs.daily import STEP_NAMES

    assert STEP_NAMES == [
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
    ]


def test_step_ranges() -> None:
    from jobs.daily import STEP_NAMES, select_steps

    names = lambda first=None, last=None: [STEP_NAMES[i] for i in select_steps(first, last)]  # noqa: E731
    assert names() == STEP_NAMES
    assert names("ingest", "build") == ["ingest", "build"]
    assert names("score") == ["score", "interventions", "drift", "retrain", "compare", "housekeeping"]
    assert names(last="apply") == ["ingest", "build", "apply"]
    assert names("drift", "drift") == ["drift"]


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("scoring", None, "--from 'scoring': no such daily step"),
        (None, "cleanup", "--to 'cleanup': no such daily step"),
        ("score", "build", "--from score comes after --to build"),
    ],
)
def test_bad_step_ranges_are_refused_listing_the_steps(
    first: str | None, last: str | None, message: str, tmp_path: Path
) -> None:
    from jobs.daily import DailyError, daily

    settings = make_settings(tmp_path / "data")
    with pytest.raises(DailyError) as info:
        daily(settings, DAY, first=first, last=last)
    assert message in str(info.value)
    order = "ingest → build → apply → materialize → score → interventions → drift → retrain → compare → housekeeping"
    assert order in str(info.value)
    assert not (tmp_path / "data").exists()  # refused before anything ran or was published


# --- the ingest step and the metrics textfile ----------------------------------------------------------


def _metrics(settings: Settings) -> Samples:
    return metrics_of(settings.layout.daily_metrics.read_text())


def test_no_landing_prefix_skips_ingest_and_writes_the_textfile(tmp_path: Path) -> None:
    from jobs.daily import daily

    settings = make_settings(tmp_path / "data")
    res = daily(settings, DAY, first="ingest", last="ingest")
    assert res.steps == ["ingest"]
    assert res.metrics == f"daily metrics: wrote {settings.layout.daily_metrics}"
    m = _metrics(settings)
    assert metric(m, "churn_daily_step_failed", step="ingest") == 0
    assert metric(m, "churn_daily_step_duration_seconds", step="ingest") >= 0
    assert metric(m, "churn_daily_step_last_success_timestamp_seconds", step="ingest") > 0
    assert not any(name.startswith("churn_landing_") for name, _ in m)  # no prefix: nothing to report


def test_landing_prefix_without_the_day_stops_the_chain_and_says_so(tmp_path: Path) -> None:
    from jobs.daily import DailyError, daily

    settings = make_settings(tmp_path / "data")
    daily(settings, DAY, first="ingest", last="ingest")  # a first success, kept across runs
    first_success = metric(_metrics(settings), "churn_daily_step_last_success_timestamp_seconds", step="ingest")
    older = settings.layout.landing("events", DAY - dt.timedelta(days=2))
    older.mkdir(parents=True)
    (older / "events.csv").write_text("user_id,event_ts,event_type\n")
    settings.layout.landing("events", DAY).mkdir(parents=True)  # arrived empty
    with pytest.raises(DailyError, match="step 'ingest': no events delivered for 2026-03-02"):
        daily(settings, DAY)
    m = _metrics(settings)
    assert metric(m, "churn_daily_step_failed", step="ingest") == 1
    assert metric(m, "churn_daily_step_last_success_timestamp_seconds", step="ingest") == first_success
    assert ("churn_daily_step_failed", (("step", "build"),)) not in m  # never ran: no series
    assert metric(m, "churn_landing_missing", table="events") == 1
    assert metric(m, "churn_landing_missing", table="users") == 1
    newest = dt.datetime.combine(DAY - dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC).timestamp()
    assert metric(m, "churn_landing_latest_day_timestamp_seconds", table="events") == newest
    state = json.loads(settings.layout.daily_state.read_text())
    assert set(state["steps"]) == {"ingest"} and state["landing"]["events"]["missing"] == 1


def test_daily_state_keeps_the_last_runs_step_by_step_and_bounded(tmp_path: Path) -> None:
    from jobs.daily_metrics import RUNS_KEPT, DailyMetrics

    settings = make_settings(tmp_path / "data")
    for i in range(RUNS_KEPT + 3):
        m = DailyMetrics(settings)
        m.begin_run(DAY + dt.timedelta(days=i))
        m.record_step("build", 1.0, ok=True)
        m.record_step("score", 2.0, ok=i % 2 == 0, detail=None if i % 2 == 0 else "x" * 2000)
        m.publish()
    state = json.loads(settings.layout.daily_state.read_text())
    runs = state["runs"]
    assert len(runs) == RUNS_KEPT
    assert runs[-1]["day"] == (DAY + dt.timedelta(days=RUNS_KEPT + 2)).isoformat()
    assert [s["step"] for s in runs[-1]["steps"]] == ["build", "score"]
    failed = runs[-2]["steps"][1]
    assert failed["failed"] == 1 and 0 < len(failed["detail"]) <= 500
    assert state["steps"]["score"]["failed"] == 0 and "detail" not in state["steps"]["score"]
