"""Aggregation against a hand-computed example, including window edges, scope and decay."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from churn.schema import FEATURE_VIEWS, feature_table_schema
from jobs.aggregate import build_features, partition_dates
from jobs.ingest import import_batch
from tests.support.settings import make_settings

AS_OF = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agg")
    settings = make_settings(tmp / "data", scope_days=5)
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "signup_ts": [ts("2026-01-01 10:00"), ts("2026-01-01 11:00")],
            "plan": ["basic", "free"],
            "country": ["IN", "US"],
            "acquisition_channel": ["organic", "social"],
            "device": ["mobile", "desktop"],
        }
    )
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2"],
            "event_ts": [
                ts("2026-01-02 09:00"),
                ts("2026-01-02 09:05"),
                ts("2026-01-05 09:00"),
                ts("2026-01-10 12:00"),
                ts("2026-01-02 08:00"),
            ],
            "event_type": ["login", "video_watch", "login", "login", "login"],
            "course_id": [None, "c1", None, None, None],
            "minutes": [None, 10.0, None, None, None],
        }
    )
    payments = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "payment_ts": [ts("2026-01-03 12:00"), ts("2026-01-08 12:00")],
            "amount": [19.0, 19.0],
            "status": ["succeeded", "failed"],
            "plan": ["basic", "basic"],
        }
    )
    result = import_and_build(settings, tmp, {"users": users, "events": events, "payments": payments})
    return settings, result, stored_features(settings)


def import_and_build(settings, tmp, frames: dict[str, pd.DataFrame]):
    """Import the frames as one batch (as of ``AS_OF``) and build every date."""
    paths = {}
    for name, df in frames.items():
        paths[name] = tmp / f"{name}.parquet"
        df.to_parquet(paths[name])
    import_batch(settings, **paths, as_of=AS_OF)
    return build_features(settings)


def stored_features(settings) -> pd.DataFrame:
    """Every view's stored rows side by side, indexed by user and row date."""
    return pd.concat(
        [pd.read_parquet(settings.features_dir / v).set_index(["user_id", "event_timestamp"]) for v in FEATURE_VIEWS],
        axis=1,
    )


def row(df, user, day):
    return df.loc[(user, ts(day))]


def test_partitions_and_schema(built):
    settings, result, _ = built
    dates = partition_dates(settings.features_dir / "engagement")
    assert dates[0] == dt.date(2026, 1, 2) and dates[-1] == dt.date(2026, 1, 11)
    assert result.start == dt.date(2026, 1, 2) and result.end == dt.date(2026, 1, 11)
    import pyarrow.parquet as pq

    for view in FEATURE_VIEWS:
        f = next((settings.features_dir / view).glob("date=*/*.parquet"))
        assert pq.read_schema(f).remove_metadata() == feature_table_schema(view)


def test_windows_see_only_days_before_the_row_date(built):
    _, _, df = built
    r = row(df, "u1", "2026-01-02")  # events of Jan 2 are not visible on Jan 2
    assert r.logins_7d == 0 and r.active_days_30d == 0
    r = row(df, "u1", "2026-01-03")
    assert r.logins_7d == 1 and r.minutes_7d == 10.0 and r.active_days_7d == 1
    assert r.days_since_last_activity == pytest.approx((14 * 60 + 55) / 1440, abs=1e-4)


def test_seven_day_window_edges(built):
    _, _, df = built
    assert row(df, "u1", "2026-01-09").active_days_7d == 2  # Jan 2..8 holds Jan 2 and Jan 5
    assert row(df, "u1", "2026-01-10").active_days_7d == 1  # Jan 3..9: Jan 2 has left the window
    assert row(df, "u1", "2026-01-10").active_days_14d == 2
    r = row(df, "u1", "2026-01-11")
    assert r.logins_7d == 2 and r.active_days_trend_7d == 2 - 1  # Jan 4..10 vs Dec 28..Jan 3


def test_recency_and_payments(built):
    _, _, df = built
    r = row(df, "u1", "2026-01-09")
    assert r.payments_succeeded_30d == 1 and r.payments_failed_30d == 1
    assert r.amount_failed_30d == 19.0 and r.failed_payment_ratio_30d == 0.5
    assert r.days_since_last_payment == pytest.approx(0.5)
    assert row(df, "u1", "2026-01-10").days_since_last_activity == pytest.approx(4.625)
    assert row(df, "u1", "2026-01-10").tenure_days == 9 and row(df, "u1", "2026-01-10").plan == "basic"


def test_idle_user_decays_then_leaves_scope(built):
    _, _, df = built
    u2 = df.loc["u2"].sort_index()
    recency = u2.days_since_last_activity.tolist()
    assert recency == sorted(recency) and len(set(recency)) == len(recency)  # grows every day
    assert u2.index.max() == ts("2026-01-07")  # last activity Jan 2 + scope 5 days
    assert row(df, "u2", "2026-01-03").logins_7d == 1
    assert u2.payments_succeeded_30d.max() == 0 and pd.isna(u2.days_since_last_payment).all()


def test_incremental_build_matches_full_build(built, tmp_path):
    settings, _, full = built
    # rebuild the last two dates only, into the same store: values must not change
    res = build_features(settings, start_date=dt.date(2026, 1, 10))
    assert res.dates == 2
    again = stored_features(settings)
    pd.testing.assert_frame_equal(
        again.drop(columns="created").sort_index(), full.drop(columns="created").sort_index()
    )
    assert build_features(settings).start is None  # nothing new to build


@pytest.fixture(scope="module")
def returning(tmp_path_factory):
    """u3 is active on Jan 2, away for longer than the scope (5 days), back on Jan 9."""
    tmp = tmp_path_factory.mktemp("returning")
    settings = make_settings(tmp / "data", scope_days=5)
    frames = {
        "users": pd.DataFrame(
            {
                "user_id": ["u3"],
                "signup_ts": [ts("2026-01-01 10:00")],
                "plan": ["basic"],
                "country": ["IN"],
                "acquisition_channel": ["organic"],
                "device": ["mobile"],
            }
        ),
        "events": pd.DataFrame(
            {
                "user_id": ["u3", "u3"],
                "event_ts": [ts("2026-01-02 09:00"), ts("2026-01-09 09:00")],
                "event_type": ["login", "login"],
                "course_id": [None, None],
                "minutes": [None, None],
            }
        ),
        "payments": pd.DataFrame(
            {
                "user_id": ["u3", "u3"],
                "payment_ts": [ts("2026-01-04 12:00"), ts("2026-01-09 12:00")],
                "amount": [19.0, 19.0],
                "status": ["succeeded", "succeeded"],
                "plan": ["basic", "basic"],
            }
        ),
    }
    import_and_build(settings, tmp, frames)
    return stored_features(settings)


def test_windows_of_a_returning_user_start_at_the_return(returning):
    """Scope cuts a user's days into islands; a window counts only its row's island, even where
    (scope shorter than the window) it reaches back into the one before."""
    dates = returning.loc["u3"].index
    assert ts("2026-01-08") not in dates  # Jan 2 + scope 5 days: out of scope until the return
    r = row(returning, "u3", "2026-01-10")
    assert r.logins_14d == 1 and r.active_days_30d == 1  # Jan 9 only, not Jan 2
    assert r.payments_succeeded_30d == 1 and r.amount_succeeded_30d == 19.0  # Jan 9 only, not Jan 4
    assert r.longest_streak_30d == 1
    before = row(returning, "u3", "2026-01-05")  # the first island sees its own days
    assert before.logins_14d == 1 and before.payments_succeeded_30d == 1


@pytest.mark.parametrize(
    "stamp",
    [
        "1970-01-01 00:00:00+00",
        "2026-02-28 23:59:59.999999+00",
        "2026-03-01 00:00:00+00",
        "2028-02-29 12:00:00+00",
        "2026-06-30 23:30:00-02",  # the next day in UTC
        "2026-07-01 00:30:00+05",  # the day before in UTC
    ],
)
def test_the_day_of_a_timestamp_is_its_utc_date(stamp: str) -> None:
    import duckdb

    from churn.layout import day_sql

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    got, want = con.execute(
        f"SELECT {day_sql('t')}, CAST(t AS DATE) FROM (SELECT TIMESTAMPTZ '{stamp}' AS t)"
    ).fetchone()
    assert got == want
