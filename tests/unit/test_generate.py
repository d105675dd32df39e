"""Data checks on the synthetic generator: schema, determinism, the oracle, and each churn mechanism."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import jobs.generate as gen
from churn.layout import ORACLE_TABLE
from churn.schema import EVENTS_SCHEMA, PAYMENTS_SCHEMA, USERS_SCHEMA
from jobs.generate import generate
from training.yardsticks import read_oracle

END = dt.date(2027, 2, 1)  # the window covers the late-November and late-December holidays
DAYS = 150
CUTOFF = END - dt.timedelta(days=31)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    res = generate(out, users=3000, days=DAYS, seed=11, end_date=END)
    return out, res


@pytest.fixture(scope="module")
def con(site):
    out, _ = site
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    c.execute(
        f"CREATE TABLE daily AS SELECT user_id, CAST(event_ts AS DATE) AS day, "
        f"count(*) FILTER (WHERE event_type = 'course_complete') AS completions, "
        f"coalesce(sum(minutes), 0) AS minutes FROM read_parquet('{out}/events/*/*.parquet') GROUP BY ALL"
    )
    c.execute(f"CREATE TABLE pays AS SELECT * FROM read_parquet('{out}/payments/*/*.parquet')")
    c.execute(f"CREATE TABLE users AS SELECT * FROM read_parquet('{out}/users/users.parquet')")
    yield c
    c.close()


def _labels(con, cutoff: dt.date):
    """Eligible users at ``cutoff`` (active in the 30 days before) and whether they churned."""
    return con.execute(
        """WITH el AS (SELECT user_id, max(day) AS last_day FROM daily
                       WHERE day >= $t - 30 AND day < $t GROUP BY user_id),
           fut AS (SELECT DISTINCT user_id FROM daily WHERE day >= $t AND day < $t + 30)
           SELECT el.user_id, $t - el.last_day AS gap, CAST(fut.user_id IS NULL AS INTEGER) AS churned
           FROM el LEFT JOIN fut USING (user_id) ORDER BY user_id""",
        {"t": cutoff},
    ).df()


def test_schemas_match_the_contract(site):
    out, _ = site
    assert pq.read_schema(out / "users" / "users.parquet") == USERS_SCHEMA
    first_events = sorted((out / "events").glob("date=*/*.parquet"))[0]
    assert pq.read_schema(first_events).remove_metadata() == EVENTS_SCHEMA
    first_pay = sorted((out / "payments").glob("date=*/*.parquet"))[0]
    assert pq.read_schema(first_pay).remove_metadata() == PAYMENTS_SCHEMA
    oracle_days = sorted((out / ORACLE_TABLE).glob("date=*/part-0.parquet"))
    assert len(oracle_days) == DAYS  # one partition per day of the window


def test_same_seed_same_data(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, users=200, days=20, seed=5, end_date=END)
    generate(b, users=200, days=20, seed=5, end_date=END)
    generate(c, users=200, days=20, seed=6, end_date=END)

    def read(p, table):
        return pq.read_table(sorted((p / table).glob("date=*/*.parquet"))[-1])

    for table in ("events", ORACLE_TABLE):
        assert read(a, table).equals(read(b, table))
        assert not read(a, table).equals(read(c, table))


def test_events_stay_in_their_day_and_after_signup(site):
    out, res = site
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    bad_day = c.execute(
        f"SELECT count(*) FROM read_parquet('{out}/events/*/*.parquet', hive_partitioning=true) "
        "WHERE CAST(event_ts AS DATE) <> CAST(date AS DATE)"
    ).fetchone()[0]
    before_signup = c.execute(
        f"SELECT count(*) FROM read_parquet('{out}/events/*/*.parquet') e "
        f"JOIN read_parquet('{out}/users/users.parquet') u USING (user_id) WHERE e.event_ts < u.signup_ts"
    ).fetchone()[0]
    assert bad_day == 0 and before_signup == 0
    assert res.events > 0 and res.payments > 0


def test_oracle_is_readable_covers_the_eligible_and_is_calibrated(site, con):
    out, _ = site
    oracle = read_oracle(out, CUTOFF)
    assert list(oracle.columns) == ["user_id", "p_churn"]
    assert oracle["p_churn"].dtype == np.float64
    assert oracle["p_churn"].between(0, 1).all()
    labels = _labels(con, CUTOFF)
    merged = labels.merge(oracle, on="user_id", how="left")
    assert merged["p_churn"].notna().all()  # every eligible user has a true probability
    # Summed over a few thousand users the true probabilities match the realised churn.
    assert abs(merged["p_churn"].mean() - merged["churned"].mean()) < 0.03
    assert read_oracle(out, END + dt.timedelta(days=1)) is None  # no oracle for a day never generated


def test_oracle_only_uses_the_past(tmp_path, monkeypatch):
    """Redraw every day from T on: the oracle up to T must not move, the data from T must."""
    days, end, t_index = 40, dt.date(2026, 6, 1), 25
    cutoff = end - dt.timedelta(days=days - t_index)
    generate(tmp_path / "a", users=400, days=days, seed=3, end_date=end)
    original = gen._daily_rng
    monkeypatch.setattr(gen, "_daily_rng", lambda seed, d: original(seed + 1000 if d >= t_index else seed, d))
    generate(tmp_path / "b", users=400, days=days, seed=3, end_date=end)

    def part(root, table, day):
        return pq.read_table(root / table / f"date={day.isoformat()}" / "part-0.parquet")

    for k in range(t_index + 1):
        day = end - dt.timedelta(days=days - k)
        assert part(tmp_path / "a", ORACLE_TABLE, day).equals(part(tmp_path / "b", ORACLE_TABLE, day))
    assert not part(tmp_path / "a", "events", cutoff).equals(part(tmp_path / "b", "events", cutoff))
    nxt = cutoff + dt.timedelta(days=1)
    assert not part(tmp_path / "a", ORACLE_TABLE, nxt).equals(part(tmp_path / "b", ORACLE_TABLE, nxt))


def test_about_a_quarter_of_active_users_churn(con):
    rates = [_labels(con, CUTOFF - dt.timedelta(days=7 * k))["churned"].mean() for k in range(4)]
    assert 0.15 < float(np.mean(rates)) < 0.35


def test_holidays_and_weekends_dip_without_meaning_churn(con):
    dau = dict(con.execute("SELECT day, count(*) FROM daily GROUP BY day").fetchall())
    december = np.mean([dau[dt.date(2026, 12, d)] for d in range(1, 15)])
    holiday = np.mean([dau[dt.date(2026, 12, d)] for d in range(22, 31)])
    assert holiday < 0.7 * december
    weekdays = [v for d, v in dau.items() if d.weekday() == 1]
    saturdays = [v for d, v in dau.items() if d.weekday() == 5]
    assert np.mean(saturdays) < 0.85 * np.mean(weekdays)


def test_overdue_is_relative_to_the_users_own_rhythm(con):
    """The same 8-15 day silence is alarming for a daily learner and normal for a weekly one."""
    frames = []
    for k in range(8):
        cutoff = CUTOFF - dt.timedelta(days=7 * k)
        lab = _labels(con, cutoff)
        typical = con.execute(
            """SELECT user_id, median(gap) AS typical FROM (
                 SELECT user_id, day - lag(day) OVER (PARTITION BY user_id ORDER BY day) AS gap
                 FROM daily WHERE day < $t) WHERE gap IS NOT NULL GROUP BY user_id""",
            {"t": cutoff},
        ).df()
        frames.append(lab.merge(typical, on="user_id"))
    df = __import__("pandas").concat(frames)
    quiet = df[df["gap"].between(8, 15)]
    daily = quiet[quiet["typical"] <= 2]["churned"]
    weekly = quiet[quiet["typical"] >= 6]["churned"]
    assert len(daily) > 30 and len(weekly) > 30
    assert daily.mean() > weekly.mean() + 0.05


def test_consecutive_payment_failures_raise_churn_a_single_one_barely(con):
    rows = con.execute(
        """WITH p AS (SELECT user_id, CAST(payment_ts AS DATE) AS day, status,
                             lag(status) OVER (PARTITION BY user_id ORDER BY payment_ts) AS prev
                      FROM pays),
           f AS (SELECT p.user_id, p.day, p.status, p.prev,
                        NOT EXISTS (SELECT 1 FROM daily d WHERE d.user_id = p.user_id
                                    AND d.day > p.day AND d.day <= p.day + 30) AS churned
                 FROM p WHERE p.day <= DATE '2027-01-01' AND p.prev IS NOT NULL)
           SELECT avg(churned::INT) FILTER (WHERE status = 'succeeded' AND prev = 'succeeded'),
                  avg(churned::INT) FILTER (WHERE status = 'failed' AND prev = 'succeeded'),
                  avg(churned::INT) FILTER (WHERE status = 'failed' AND prev = 'failed'),
                  count(*) FILTER (WHERE status = 'failed' AND prev = 'failed')
           FROM f"""
    ).fetchone()
    ok, single, streak, n_streak = rows
    assert n_streak >= 20
    assert streak > 2 * single and streak > 2 * ok


def test_completing_a_course_is_a_pause_not_a_goodbye(con):
    """After a completion users go quiet for a while, and most of them come back."""
    row = con.execute(
        """WITH a AS (SELECT d.user_id, d.day, d.completions > 0 AS done,
                             (SELECT count(*) FROM daily n WHERE n.user_id = d.user_id
                              AND n.day > d.day AND n.day <= d.day + 7) AS next_week,
                             EXISTS (SELECT 1 FROM daily n WHERE n.user_id = d.user_id
                                     AND n.day > d.day + 7 AND n.day <= d.day + 60) AS back_later
                      FROM daily d WHERE d.day <= DATE '2026-11-15')
           SELECT avg(next_week) FILTER (WHERE done), avg(next_week) FILTER (WHERE NOT done),
                  avg(back_later::INT) FILTER (WHERE done) FROM a"""
    ).fetchone()
    after_completion, after_other_day, came_back = row
    assert after_completion < 0.5 * after_other_day
    assert came_back > 0.5


def test_low_engagement_hurts_paying_users_far_more_than_free_ones(con):
    df = __import__("pandas").concat(
        [
            _labels(con, CUTOFF - dt.timedelta(days=7 * k)).merge(
                con.execute(
                    """SELECT user_id, plan, avg(minutes) AS mpd FROM daily JOIN users USING (user_id)
                       WHERE day < $t AND minutes > 0 GROUP BY user_id, plan""",
                    {"t": CUTOFF - dt.timedelta(days=7 * k)},
                ).df(),
                on="user_id",
            )
            for k in range(8)
        ]
    )
    df["low"] = df.groupby("plan")["mpd"].transform(lambda s: s <= s.quantile(0.25))
    by = df.groupby([df["plan"] == "free", "low"])["churned"].mean()
    paid_gap = by[(False, True)] - by[(False, False)]
    free_gap = by[(True, True)] - by[(True, False)]
    assert paid_gap > 0.05
    assert paid_gap > free_gap + 0.05


def test_completions_bind_established_users_not_newcomers():
    fade_static = np.full(4, gen.FADE_BASE_HAZARD)
    tenure = np.array([5.0, 5.0, 300.0, 300.0])
    completions = np.array([0, 3, 0, 3])
    h = gen._fade_hazard(fade_static, tenure, completions)
    assert h[1] > 0.85 * h[0]  # newcomers: a completion changes little
    assert h[3] < 0.3 * h[2]  # established users: completions make them loyal


def test_a_phase_change_shows_at_the_visit_that_makes_it(site, con):
    """Last visit a single glance (login, logout: FADING) → high churn; last visit with a video
    (NORMAL, or a break after a completion) or browsing only (DRIFTING: visits thin out, the glance
    comes later) → low churn. The oracle agrees on each group: the phase is no secret."""
    out, _ = site
    looks = con.execute(
        f"""WITH d AS (SELECT user_id, CAST(event_ts AS DATE) AS day,
                           count(*) FILTER (WHERE event_type = 'video_watch') AS videos,
                           count(*) FILTER (WHERE event_type = 'course_view') AS views
                    FROM read_parquet('{out}/events/*/*.parquet') WHERE CAST(event_ts AS DATE) < $t
                    GROUP BY ALL)
            SELECT user_id, arg_max(CASE WHEN videos > 0 THEN 'normal' WHEN views > 0 THEN 'browse'
                                    ELSE 'glance' END, day) AS look
            FROM d GROUP BY user_id""",
        {"t": CUTOFF},
    ).df()
    df = _labels(con, CUTOFF).merge(looks, on="user_id").merge(read_oracle(out, CUTOFF), on="user_id")
    by = df.groupby("look")[["churned", "p_churn"]].mean()
    assert by.loc["glance", "churned"] > 0.35
    assert by.loc["normal", "churned"] < 0.15 and by.loc["browse", "churned"] < 0.15
    assert (by["churned"] - by["p_churn"]).abs().max() < 0.06
