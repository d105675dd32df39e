"""Long-run features (views history, rhythm, payment_history) on hand-built users.

Point in time (an event of day E shows from partition E + 1 and leaves a w-day window at E + w + 1),
idle decay, lifetime totals across leaving and re-entering scope, rhythm on a weekly user, trend
ratios, generic ``activity`` events, and the incremental build giving the very rows of a full one.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.layout import PART_FILE
from churn.schema import (
    EVENTS_SCHEMA,
    FEATURE_SERVICES,
    FEATURE_VIEWS,
    PAYMENTS_SCHEMA,
    USERS_SCHEMA,
    service_features,
)
from churn.settings import Settings
from jobs.aggregate import build_features
from tests.support.settings import make_settings

DAY = dt.timedelta(days=1)
SIGNUP = "2025-01-01 08:00"
ONCE_DAY = dt.date(2025, 1, 10)  # the only active day of user "once"
RETURNER_DAYS = (dt.date(2025, 1, 5), dt.date(2025, 4, 20))  # 105 days apart: leaves scope between
WEEKLY_FIRST, WEEKLY_LAST = dt.date(2025, 1, 2), dt.date(2025, 12, 25)
DAILY_LAST = dt.date(2026, 2, 1)  # the newest event: features up to 2026-02-02
STREAK_RUNS = ((dt.date(2025, 3, 1), 5), (dt.date(2025, 3, 10), 3))  # (first day, length)


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def at(day: dt.date, hour: int = 9) -> pd.Timestamp:
    return ts(f"{day} {hour:02d}:00")


def days(first: dt.date, last: dt.date, step: int = 1) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(0, (last - first).days + 1, step)]


def site() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users, events and payments of the hand-built site (see the module constants)."""
    events: list[tuple[str, pd.Timestamp, str, float | None]] = [
        ("once", at(ONCE_DAY), "login", None),
        ("once", at(ONCE_DAY, 10), "activity", 2.5),
        ("once", at(ONCE_DAY, 11), "course_complete", 5.0),
        ("generic", at(dt.date(2025, 1, 3)), "activity", None),
        ("returner", at(RETURNER_DAYS[0]), "login", None),
        ("returner", at(RETURNER_DAYS[0], 10), "login", None),
        ("returner", at(RETURNER_DAYS[1]), "course_view", None),
    ]
    events += [("weekly", at(d), "video_watch", 10.0) for d in days(WEEKLY_FIRST, WEEKLY_LAST, 7)]
    events += [("daily", at(d), "login", None) for d in days(dt.date(2025, 1, 1), DAILY_LAST)]
    for first, n in STREAK_RUNS:
        events += [("streaky", at(first + i * DAY), "quiz_attempt", None) for i in range(n)]
    names = sorted({e[0] for e in events})
    users = pd.DataFrame(
        {
            "user_id": names,
            "signup_ts": [ts(SIGNUP)] * len(names),
            "plan": ["basic"] * len(names),
            "country": ["IN"] * len(names),
            "acquisition_channel": ["organic"] * len(names),
            "device": ["mobile"] * len(names),
        }
    )
    ev = pd.DataFrame(events, columns=["user_id", "event_ts", "event_type", "minutes"])
    ev["course_id"] = None
    payments = pd.DataFrame(
        {
            "user_id": ["once", "once", "once"],
            "payment_ts": [at(ONCE_DAY, 12), ts("2025-02-10 12:00"), ts("2025-03-10 12:00")],
            "amount": [19.99, 19.99, 19.99],
            "status": ["succeeded", "failed", "succeeded"],
            "plan": ["basic"] * 3,
        }
    )
    return users, ev, payments


def write_raw(settings: Settings, users: pd.DataFrame, events: pd.DataFrame, payments: pd.DataFrame) -> None:
    """Write the raw store's layout directly: these tests are about aggregation, not ingestion."""
    layout = settings.layout
    layout.users_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(users, schema=USERS_SCHEMA, preserve_index=False), layout.users_file)
    for table, frame, time_col, schema in (
        ("events", events, "event_ts", EVENTS_SCHEMA),
        ("payments", payments, "payment_ts", PAYMENTS_SCHEMA),
    ):
        for day, part in frame.groupby(frame[time_col].dt.date):
            out = layout.raw_partition(table, day)
            out.mkdir(parents=True, exist_ok=True)
            cols = [f.name for f in schema]
            pq.write_table(pa.Table.from_pandas(part[cols], schema=schema, preserve_index=False), out / PART_FILE)


def read_features(settings: Settings) -> pd.DataFrame:
    """Every view's rows side by side, indexed by (user_id, date)."""
    frames = []
    for view in FEATURE_VIEWS:
        df = pd.read_parquet(settings.features_dir / view).drop(columns=["created", "date"], errors="ignore")
        df["day"] = df.pop("event_timestamp").dt.date
        frames.append(df.set_index(["user_id", "day"]).sort_index())
    return pd.concat(frames, axis=1)


def new_store(root: Path, **fields: object) -> Settings:
    settings = make_settings(root, **fields)
    write_raw(settings, *site())
    return settings


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Built with a scope longer than a year, so an idle user keeps rows through every window."""
    settings = new_store(tmp_path_factory.mktemp("wide") / "data", scope_days=400)
    build_features(settings)
    return read_features(settings)


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pd.DataFrame]:
    """Built with the default 60-day scope: users leave and re-enter it."""
    settings = new_store(tmp_path_factory.mktemp("scoped") / "data", scope_days=60)
    build_features(settings)
    return settings, read_features(settings)


def row(df: pd.DataFrame, user: str, day: dt.date) -> pd.Series:
    return df.loc[(user, day)]


# --- contracts -----------------------------------------------------------------------------------


def test_v1_service_is_frozen_and_v2_has_every_view():
    assert FEATURE_SERVICES["churn_v1"] == ("engagement", "recency", "payments", "profile")
    assert len(service_features("churn_v1")) == 34
    assert FEATURE_SERVICES["churn_v2"] == tuple(FEATURE_VIEWS)
    assert {"history", "rhythm", "payment_history"} <= set(FEATURE_VIEWS)
    v2 = service_features("churn_v2")
    assert len(v2) == len(set(v2)) and set(service_features("churn_v1")) < set(v2)


def test_feast_definitions_register_both_services(tmp_path):
    import feature_repo.definitions as defs_module

    defs = defs_module.build_definitions(make_settings(tmp_path))
    assert set(defs.views) == set(FEATURE_VIEWS) and set(defs.services) == set(FEATURE_SERVICES)
    for name, views in FEATURE_SERVICES.items():
        service = defs.services[name]
        assert [p.name for p in service.feature_view_projections] == list(views)
        assert [f.name for p in service.feature_view_projections for f in p.features] == list(service_features(name))
        assert service in defs.objects and getattr(defs_module, name).name == name
    for view in FEATURE_VIEWS:  # the `feast` CLI finds objects as module globals
        assert getattr(defs_module, view).name == view and getattr(defs_module, f"{view}_source") is not None
    assert defs.service.name == "churn_v2"  # the settings' default
    assert build_definitions_for(tmp_path, "churn_v2").service.name == "churn_v2"


def build_definitions_for(root: Path, service: str):
    from feature_repo.definitions import build_definitions

    return build_definitions(make_settings(root, feature_service=service))


def test_apply_keeps_every_service(tmp_path):
    """``apply`` prunes services that are no longer defined: churn_v1 and churn_v2 must both survive,
    also when applied again (a second apply sees both in the registry)."""
    from feature_repo.store import apply, get_store

    settings = make_settings(tmp_path)
    store = get_store(settings)
    for _ in range(2):
        apply(settings, store)
        assert sorted(s.name for s in store.list_feature_services()) == sorted(FEATURE_SERVICES)
    assert sorted(v.name for v in store.list_feature_views()) == sorted(FEATURE_VIEWS)


# --- point in time and decay ---------------------------------------------------------------------


def test_event_shows_the_next_day_and_leaves_each_window_on_time(wide):
    assert row(wide, "once", ONCE_DAY).activity_lifetime == 0  # not visible on its own day
    for w in (90, 180, 365):
        assert row(wide, "once", ONCE_DAY + DAY)[f"activity_{w}d"] == 3
        assert row(wide, "once", ONCE_DAY + w * DAY)[f"activity_{w}d"] == 3  # window [D - w, D - 1]
        assert row(wide, "once", ONCE_DAY + (w + 1) * DAY)[f"activity_{w}d"] == 0
        assert row(wide, "once", ONCE_DAY + (w + 1) * DAY).activity_lifetime == 3


def test_idle_user_long_windows_decay_day_by_day(wide):
    once = wide.loc["once"]
    assert (once.index.to_series().diff().dropna() == DAY).all()  # a row every day while in scope
    after = once.loc[ONCE_DAY + DAY :]
    for col in ("activity_90d", "active_days_180d", "minutes_365d", "completions_90d"):
        assert after[col].is_monotonic_decreasing and after[col].iloc[0] > 0 == after[col].iloc[-1]
    gap = once.days_since_last_active_day.dropna()
    assert gap.is_monotonic_increasing and gap.is_unique
    assert pd.isna(row(wide, "once", ONCE_DAY).days_since_first_active_day)  # nothing before it yet
    assert (wide.days_since_first_active_day.dropna() >= 1).all()
    r = row(wide, "once", ONCE_DAY + 100 * DAY)
    assert (r.activity_90d, r.activity_180d, r.activity_lifetime) == (0, 3, 3)
    assert r.days_since_last_active_day == 100 and r.days_since_first_active_day == 100


def test_generic_activity_counts_in_activity_and_active_days_only(wide):
    r = row(wide, "generic", dt.date(2025, 1, 4))
    assert r.activity_lifetime == 1 and r.active_days_lifetime == 1 and r.active_days_7d == 1
    assert r.logins_7d == r.course_views_7d == r.quiz_attempts_7d == r.completions_7d == 0
    assert r.minutes_7d == 0 and r.minutes_lifetime == 0 and r.completions_lifetime == 0
    assert r.days_since_last_activity == pytest.approx(15 / 24)
    r = row(wide, "once", ONCE_DAY + DAY)  # login + activity (2.5 min) + completion (5 min)
    assert (r.activity_lifetime, r.active_days_lifetime, r.completions_lifetime) == (3, 1, 1)
    assert (r.logins_7d, r.completions_7d, r.active_days_7d) == (1, 1, 1)
    assert r.minutes_lifetime == 7.5 and r.minutes_90d == 7.5 and r.minutes_7d == 7.5


# --- scope ---------------------------------------------------------------------------------------


def test_lifetime_totals_survive_leaving_and_reentering_scope(scoped):
    _, df = scoped
    first, back = RETURNER_DAYS
    returner = df.loc["returner"]
    away = [d for d in days(first + 61 * DAY, back) if d in returner.index]
    assert first + 60 * DAY in returner.index and not away  # out of scope after 60 idle days
    r = row(df, "returner", back + DAY)
    assert (r.activity_lifetime, r.active_days_lifetime) == (3, 2)
    assert (r.activity_90d, r.activity_180d) == (1, 3)
    assert r.days_since_first_active_day == (back + DAY - first).days and r.days_since_last_active_day == 1
    assert r.typical_gap_days == (back - first).days and r.overdue_ratio == pytest.approx(1 / 105)
    assert (r.logins_7d, r.course_views_7d) == (0, 1)


def test_user_leaves_scope_after_scope_days(scoped):
    _, df = scoped
    once = df.loc["once"]
    assert once.index.max() == ONCE_DAY + 60 * DAY
    assert row(df, "once", ONCE_DAY + 60 * DAY).activity_lifetime == 3


# --- rhythm, trends, payments --------------------------------------------------------------------


def test_weekly_user_rhythm(wide):
    last = dt.date(2025, 6, 26)  # a weekly active day
    assert (last - WEEKLY_FIRST).days % 7 == 0
    on_time = row(wide, "weekly", last + 7 * DAY)
    assert on_time.typical_gap_days == 7.0 and on_time.overdue_ratio == pytest.approx(1.0)
    assert on_time.days_since_last_active_day == 7 and on_time.longest_streak_30d == 1
    early = row(wide, "weekly", last + DAY)
    assert early.overdue_ratio == pytest.approx(1 / 7)
    late = row(wide, "weekly", WEEKLY_LAST + 21 * DAY)  # three weeks since the last visit
    assert late.overdue_ratio == pytest.approx(3.0)
    first = row(wide, "weekly", WEEKLY_FIRST + DAY)  # one active day: no gap yet
    assert pd.isna(first.typical_gap_days) and pd.isna(first.overdue_ratio)


def test_steady_user_trend_ratios_are_one_and_zero_denominators_are_missing(wide):
    r = row(wide, "daily", dt.date(2025, 6, 1))
    for m in ("activity", "active_days"):
        assert r[f"{m}_ratio_7d_30d"] == pytest.approx(1.0) and r[f"{m}_ratio_30d_90d"] == pytest.approx(1.0)
    assert pd.isna(r.minutes_ratio_7d_30d)  # no minutes in 30 days: no rate, not inf
    assert r.longest_streak_30d == 30 and r.active_days_90d == 90
    idle = row(wide, "once", ONCE_DAY + 120 * DAY)
    assert pd.isna(idle.activity_ratio_7d_30d) and pd.isna(idle.activity_ratio_30d_90d)
    fading = row(wide, "once", ONCE_DAY + 40 * DAY)  # nothing in 30 days, something in 90
    assert pd.isna(fading.activity_ratio_7d_30d) and fading.activity_ratio_30d_90d == 0.0
    assert not wide.select_dtypes("number").isin([float("inf"), float("-inf")]).any().any()


@pytest.mark.parametrize(
    "day,longest",
    [
        (dt.date(2025, 3, 6), 5),
        (dt.date(2025, 3, 20), 5),
        (dt.date(2025, 3, 31), 5),  # window Mar 1..30 holds the whole first run
        (dt.date(2025, 4, 1), 4),  # Mar 2..31: the first run is cut at the window's start
        (dt.date(2025, 4, 2), 3),
        (dt.date(2025, 4, 10), 2),  # Mar 11..Apr 9: only two days of the second run remain
        (dt.date(2025, 4, 12), 0),
    ],
)
def test_longest_streak_in_the_last_30_days(wide, day, longest):
    assert row(wide, "streaky", day).longest_streak_30d == longest


def test_payment_history(wide):
    r = row(wide, "once", dt.date(2025, 2, 11))
    assert (r.payments_succeeded_lifetime, r.payments_failed_lifetime) == (1, 1)
    assert r.failed_payment_ratio_lifetime == 0.5 and r.days_since_last_failed_payment == 0.5
    assert r.spend_lifetime == 19.99
    r = row(wide, "once", dt.date(2025, 6, 1))
    assert r.spend_lifetime == pytest.approx(39.98) and r.spend_90d == pytest.approx(19.99)
    assert r.failed_payment_ratio_lifetime == pytest.approx(1 / 3)
    before = row(wide, "once", ONCE_DAY)
    assert pd.isna(before.days_since_last_failed_payment) and pd.isna(before.failed_payment_ratio_lifetime)


# --- incremental == full -------------------------------------------------------------------------


def _copy_raw(settings: Settings, root: Path, **fields: object) -> Settings:
    target = make_settings(root, **fields)
    shutil.copytree(settings.layout.raw_dir, target.layout.raw_dir)
    return target


def test_day_by_day_build_equals_full_build(scoped, tmp_path):
    """First build up to a date, then day by day across a user leaving and one re-entering scope
    (lookups into stored rows), then the rest at once: every column equals the full build's."""
    settings, full = scoped
    inc = _copy_raw(settings, tmp_path / "inc", scope_days=60)
    build_features(inc, end_date=dt.date(2025, 3, 1))
    for day in days(dt.date(2025, 3, 2), dt.date(2025, 4, 25)):
        assert build_features(inc, end_date=day).dates == 1
    build_features(inc)
    pd.testing.assert_frame_equal(read_features(inc), full, check_exact=True)


def test_day_by_day_equals_full_on_a_generated_site(small_store, tmp_path):
    """The same on synthetic users (payments, every event type): the last days built one by one."""
    full = read_features(small_store)
    inc = _copy_raw(small_store, tmp_path / "inc")
    last = max(full.index.get_level_values("day"))
    build_features(inc, end_date=last - 8 * DAY)
    for day in days(last - 7 * DAY, last):
        assert build_features(inc, end_date=day).dates == 1
    pd.testing.assert_frame_equal(read_features(inc), full, check_exact=True)


def test_rebuilding_from_a_later_date_on_a_fresh_store_reads_all_history(scoped, tmp_path):
    """No stored totals before the first date: the build must not start the totals from zero."""
    settings, full = scoped
    inc = _copy_raw(settings, tmp_path / "late", scope_days=60)
    start = dt.date(2025, 4, 21)
    build_features(inc, start_date=start)
    got = read_features(inc)
    want = full[full.index.get_level_values("day") >= start]
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)  # NULLs make ints float


@pytest.mark.parametrize("chunk_days", [7, 45])
def test_span_by_span_build_equals_one_pass(small_store, tmp_path, chunk_days):
    """A site's first build, cut into spans (each carrying the totals the previous one stored), gives
    exactly the rows of one pass over the whole history, whatever the span length."""
    one = _copy_raw(small_store, tmp_path / "one", build_chunk_days=0)
    spans = _copy_raw(small_store, tmp_path / "spans", build_chunk_days=chunk_days)
    whole, cut = build_features(one), build_features(spans)
    assert (whole.start, whole.end, whole.rows, whole.dates) == (cut.start, cut.end, cut.rows, cut.dates)
    pd.testing.assert_frame_equal(read_features(spans), read_features(one), check_exact=True)


def test_build_spans_cover_the_dates_once():
    from jobs.aggregate import build_spans

    start, end = dt.date(2025, 1, 1), dt.date(2025, 3, 5)
    spans = build_spans(start, end, 31)
    assert spans[0][0] == start and spans[-1][1] == end and len(spans) == 3
    assert all(b[0] - a[1] == DAY for a, b in zip(spans, spans[1:], strict=False))
    assert all((b - a).days < 31 for a, b in spans)
    assert build_spans(start, end, 0) == [(start, end)]
    assert build_spans(start, start, 31) == [(start, start)]
