"""Ingestion from the landing prefix, and the daily chain it now starts, on a copy of the session's
small synthetic site: the last two days' raw events/payments (and the users who signed up on the
last day) are taken out of the raw store and delivered to ``landing/`` as Parquet and as CSV files.

Checks: the import restores exactly what was taken out; a rerun imports nothing; files arriving late
are imported alone; a changed file and a missing day fail loudly; ``daily --from ingest --to build``
ingests, then builds features equal to the ones built from the full data; the step metrics reach a
real HTTP receiver standing in for the Pushgateway, and a dead one costs a warning only.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from churn.schema import RAW_TIME_COLUMN
from churn.settings import Settings
from tests.support.metrics import metric, metrics_of
from tests.support.servers import free_port, http_receiver
from tests.support.settings import make_settings
from tests.support.sites import SMALL_END, copy_site, snapshot

LAST = SMALL_END - dt.timedelta(days=1)  # the newest day of events (2026-10-31)
BEFORE = LAST - dt.timedelta(days=1)
RUN = SMALL_END  # the daily run whose delivery holds LAST's activity


@pytest.fixture
def site(small_store: Settings, tmp_path: Path) -> Settings:
    return copy_site(small_store, tmp_path / "data")


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def _take_out(settings: Settings, table: str, day: dt.date) -> pa.Table:
    """Remove one day's raw partition of ``table``; return its rows."""
    part = settings.layout.raw_partition(table, day)
    rows = pq.read_table(part)
    shutil.rmtree(part)
    return rows


def _take_out_users(settings: Settings, day: dt.date) -> pa.Table:
    """Remove the users who signed up on ``day`` from the raw users file; return them."""
    users = pq.read_table(settings.layout.users_file).to_pandas()
    new = users[users[RAW_TIME_COLUMN["users"]].dt.date == day]
    pq.write_table(pa.Table.from_pandas(users.drop(new.index), preserve_index=False), settings.layout.users_file)
    return pa.Table.from_pandas(new, preserve_index=False)


def _deliver(settings: Settings, table: str, day: dt.date, name: str, rows: pa.Table) -> Path:
    folder = settings.layout.landing(table, day)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".csv"):
        pacsv.write_csv(rows, path)
    else:
        pq.write_table(rows, path)
    return path


def _raw(settings: Settings, table: str, day: dt.date) -> pd.DataFrame:
    return _sorted(pq.read_table(settings.layout.raw_partition(table, day)).to_pandas())


def _same_rows(got: pd.DataFrame, want: pa.Table) -> None:
    pd.testing.assert_frame_equal(got[want.column_names], _sorted(want.to_pandas()), check_dtype=False)


def test_landing_is_imported_once_as_parquet_and_csv(site: Settings) -> None:
    from jobs.landing import LandingChangedError, LandingMissingError, ingest_landing, read_manifest

    # LAST: events Parquet, payments CSV, the day's new users Parquet.
    events = _take_out(site, "events", LAST)
    payments = _take_out(site, "payments", LAST)
    users = _take_out_users(site, LAST)
    assert events.num_rows and payments.num_rows and users.num_rows
    _deliver(site, "events", LAST, "events.parquet", events)
    _deliver(site, "payments", LAST, "payments.csv", payments)
    _deliver(site, "users", LAST, "users.parquet", users)
    (site.layout.landing("events", LAST) / "_SUCCESS").write_text("")  # markers are not data

    res = ingest_landing(site, LAST)
    assert sorted(res.imported) == ["events/events.parquet", "payments/payments.csv", "users/users.parquet"]
    assert res.batches == 1 and res.already == [] and res.ignored == []
    assert res.accepted["events"] == events.num_rows and res.accepted["payments"] == payments.num_rows
    assert res.inferred_users == 0  # the delivered users file knew them all
    _same_rows(_raw(site, "events", LAST), events)
    _same_rows(_raw(site, "payments", LAST), payments)
    stored_users = pq.read_table(site.layout.users_file).to_pandas()
    assert set(users.column("user_id").to_pylist()) <= set(stored_users["user_id"])
    manifest = read_manifest(site, LAST)["files"]
    assert set(manifest) == set(res.imported)
    assert manifest["events/events.parquet"]["accepted"] == events.num_rows
    assert len(manifest["payments/payments.csv"]["sha256"]) == 64

    # A rerun imports nothing and touches nothing.
    before = snapshot(site.raw_dir)
    again = ingest_landing(site, LAST)
    assert again.imported == [] and sorted(again.already) == sorted(res.imported)
    assert "nothing new (3 file(s) already imported)" in again.summary()
    assert snapshot(site.raw_dir) == before

    # BEFORE: events as two CSV files (two batches); the payments arrive late, as Parquet.
    events_b = _take_out(site, "events", BEFORE)
    payments_b = _take_out(site, "payments", BEFORE)
    half = events_b.num_rows // 2
    _deliver(site, "events", BEFORE, "events-1.csv", events_b.slice(0, half))
    _deliver(site, "events", BEFORE, "events-2.csv", events_b.slice(half))
    first = ingest_landing(site, BEFORE)
    assert first.imported == ["events/events-1.csv", "events/events-2.csv"] and first.batches == 2
    _same_rows(_raw(site, "events", BEFORE), events_b)
    assert not site.layout.raw_partition("payments", BEFORE).exists()
    _deliver(site, "payments", BEFORE, "payments.parquet", payments_b)
    late = ingest_landing(site, BEFORE)
    assert late.imported == ["payments/payments.parquet"] and late.accepted == {"payments": payments_b.num_rows}
    _same_rows(_raw(site, "payments", BEFORE), payments_b)
    _same_rows(_raw(site, "events", BEFORE), events_b)  # carried again for the batch: no duplicates

    # A delivered file rewritten after its import is refused, the store unchanged.
    before = snapshot(site.raw_dir)
    _deliver(site, "events", LAST, "events.parquet", events.slice(0, 10))
    with pytest.raises(LandingChangedError, match="events.parquet changed since it was imported"):
        ingest_landing(site, LAST)
    assert snapshot(site.raw_dir) == before

    # A day whose events never arrived fails; a day imported before does not, even once cleaned up.
    with pytest.raises(LandingMissingError, match=f"no events delivered for {RUN}: .* is absent"):
        ingest_landing(site, RUN)
    shutil.rmtree(site.layout.landing("events", BEFORE))
    assert ingest_landing(site, BEFORE).imported == []


def test_cli_ingest_landing(site: Settings) -> None:
    from tests.support.tools import run_cli

    _deliver(site, "events", LAST, "events.csv", _take_out(site, "events", LAST))
    proc = run_cli(site, "data", "ingest-landing", "--date", LAST.isoformat())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "imported 1 file(s) in 1 batch(es)" in proc.stdout
    proc = run_cli(site, "data", "ingest-landing", "--date", RUN.isoformat())
    assert proc.returncode == 1
    assert f"error: no events delivered for {RUN}" in proc.stderr


def _drop_features(settings: Settings, day: dt.date) -> dict[str, pd.DataFrame]:
    """Remove every view's feature partition of ``day``; return them (without the build time)."""
    out = {}
    for view_dir in sorted(settings.features_dir.iterdir()):
        part = view_dir / f"date={day}"
        if part.exists():
            out[view_dir.name] = _sorted(pq.read_table(part).to_pandas().drop(columns="created", errors="ignore"))
            shutil.rmtree(part)
    return out


def test_daily_ingests_before_it_builds(site: Settings) -> None:
    from jobs.daily import daily

    _deliver(site, "events", RUN, "events.parquet", _take_out(site, "events", LAST))
    _deliver(site, "payments", RUN, "payments.csv", _take_out(site, "payments", LAST))
    want = _drop_features(site, RUN)
    assert want

    res = daily(site, RUN, first="ingest", last="build")
    assert res.steps == ["ingest", "build"]
    for view, frame in want.items():
        part = site.layout.feature_partition(view, RUN)
        got = _sorted(pq.read_table(part).to_pandas().drop(columns="created", errors="ignore"))
        pd.testing.assert_frame_equal(got, frame, check_dtype=False, obj=view)
    m = metrics_of(site.layout.daily_metrics.read_text())
    assert metric(m, "churn_daily_step_failed", step="ingest") == 0
    assert metric(m, "churn_daily_step_failed", step="build") == 0
    assert metric(m, "churn_landing_missing", table="events") == 0
    assert metric(m, "churn_landing_missing", table="users") == 1  # optional, reported all the same
    latest = dt.datetime.combine(RUN, dt.time(), tzinfo=dt.UTC).timestamp()
    assert metric(m, "churn_landing_latest_day_timestamp_seconds", table="payments") == latest

    # The next day has not arrived: the chain stops at ingest, build never runs.
    from jobs.daily import DailyError

    nxt = RUN + dt.timedelta(days=1)
    with pytest.raises(DailyError, match=f"step 'ingest': no events delivered for {nxt}"):
        daily(site, nxt)
    assert not site.layout.feature_partition("engagement", nxt).exists()


def test_step_metrics_are_pushed_once_to_the_pushgateway(site: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.daily import DailyError, daily

    _deliver(site, "events", RUN, "events.parquet", _take_out(site, "events", LAST))
    with http_receiver() as (address, received):
        pushed = make_settings(site.data_dir, pushgateway_url=f"http://{address}")
        res = daily(pushed, RUN, first="ingest", last="ingest")
    assert res.metrics == f"daily metrics: pushed to http://{address} (job churn_daily)"
    assert [(r.method, r.path) for r in received] == [("POST", "/metrics/job/churn_daily")]
    assert received[0].headers["Content-Type"].startswith("text/plain")
    m = metrics_of(received[0].body.decode())
    assert metric(m, "churn_daily_step_failed", step="ingest") == 0
    assert metric(m, "churn_daily_step_last_success_timestamp_seconds", step="ingest") > 0
    assert metric(m, "churn_daily_step_duration_seconds", step="ingest") > 0
    assert metric(m, "churn_landing_missing", table="events") == 0
    assert not site.layout.daily_metrics.exists()  # pushed, not written

    # host:port works as well; a failed step is pushed too, its last success kept from before; in a
    # namespace (the chart sets it) the group carries it, so environments sharing a gateway stay apart.
    with http_receiver() as (address, received):
        pushed = make_settings(site.data_dir, pushgateway_url=address, namespace="churn-staging")
        with pytest.raises(DailyError, match="step 'ingest'"):
            daily(pushed, RUN + dt.timedelta(days=1), first="ingest", last="ingest")
    assert [(r.method, r.path) for r in received] == [("POST", "/metrics/job/churn_daily/namespace/churn-staging")]
    again = metrics_of(received[0].body.decode())
    assert metric(again, "churn_daily_step_failed", step="ingest") == 1
    assert metric(again, "churn_daily_step_last_success_timestamp_seconds", step="ingest") == metric(
        m, "churn_daily_step_last_success_timestamp_seconds", step="ingest"
    )
    assert metric(again, "churn_landing_missing", table="events") == 1

    # A gateway that is down or refuses costs a warning, never the run.
    capsys.readouterr()
    dead = make_settings(site.data_dir, pushgateway_url=f"127.0.0.1:{free_port()}")
    res = daily(dead, RUN, first="ingest", last="ingest")
    assert res.steps == ["ingest"] and res.metrics.endswith("failed")
    assert "warning: daily metrics not pushed" in capsys.readouterr().err
    with http_receiver(status=500) as (address, received):
        res = daily(make_settings(site.data_dir, pushgateway_url=address), RUN, first="ingest", last="ingest")
    assert len(received) == 1
    assert res.steps == ["ingest"] and res.metrics.endswith("failed")
    assert "warning: daily metrics not pushed" in capsys.readouterr().err
