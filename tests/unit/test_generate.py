"""Data checks on the synthetic generator: schema, determinism, and a learnable churn signal."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow.parquet as pq
import pytest

from churn.schema import EVENTS_SCHEMA, PAYMENTS_SCHEMA, USERS_SCHEMA
from jobs.generate import generate

END = dt.date(2026, 6, 1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    res = generate(out, users=3000, days=150, seed=11, end_date=END)
    return out, res


def _con():
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def test_schemas_match_the_contract(site):
    out, _ = site
    assert pq.read_schema(out / "users" / "users.parquet") == USERS_SCHEMA
    first_events = sorted((out / "events").glob("date=*/*.parquet"))[0]
    assert pq.read_schema(first_events).remove_metadata() == EVENTS_SCHEMA
    first_pay = sorted((out / "payments").glob("date=*/*.parquet"))[0]
    assert pq.read_schema(first_pay).remove_metadata() == PAYMENTS_SCHEMA


def test_same_seed_same_data(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, users=200, days=20, seed=5, end_date=END)
    generate(b, users=200, days=20, seed=5, end_date=END)
    generate(c, users=200, days=20, seed=6, end_date=END)
    read = lambda p: pq.read_table(sorted((p / "events").glob("date=*/*.parquet"))[-1])  # noqa: E731
    assert read(a).equals(read(b))
    assert not read(a).equals(read(c))


def test_events_stay_in_their_day_and_after_signup(site):
    out, res = site
    con = _con()
    bad_day = con.execute(
        f"SELECT count(*) FROM read_parquet('{out}/events/*/*.parquet', hive_partitioning=true) "
        "WHERE CAST(event_ts AS DATE) <> CAST(date AS DATE)"
    ).fetchone()[0]
    before_signup = con.execute(
        f"SELECT count(*) FROM read_parquet('{out}/events/*/*.parquet') e "
        f"JOIN read_parquet('{out}/users/users.parquet') u USING (user_id) WHERE e.event_ts < u.signup_ts"
    ).fetchone()[0]
    assert bad_day == 0 and before_signup == 0
    assert res.events > 0 and res.payments > 0


def test_about_a_quarter_of_active_users_churn_and_engagement_decays_before(site):
    out, _ = site
    con = _con()
    row = con.execute(
        f"""
        WITH e AS (SELECT user_id, event_ts FROM read_parquet('{out}/events/*/*.parquet')),
        elig AS (SELECT user_id, count(*) AS n_recent FROM e
                 WHERE event_ts >= TIMESTAMPTZ '2026-04-02' - INTERVAL 30 DAY AND event_ts < TIMESTAMPTZ '2026-04-02'
                 GROUP BY user_id),
        fut AS (SELECT DISTINCT user_id FROM e WHERE event_ts >= TIMESTAMPTZ '2026-04-02'
                AND event_ts < TIMESTAMPTZ '2026-05-02')
        SELECT avg(CASE WHEN f.user_id IS NULL THEN 1.0 ELSE 0.0 END),
               avg(n_recent) FILTER (WHERE f.user_id IS NULL),
               avg(n_recent) FILTER (WHERE f.user_id IS NOT NULL)
        FROM elig LEFT JOIN fut f USING (user_id)
        """
    ).fetchone()
    churn_rate, recent_churners, recent_stayers = row
    assert 0.15 < churn_rate < 0.35
    assert recent_churners < 0.7 * recent_stayers  # churners were already fading


def test_payment_failures_cluster_among_churners(site):
    out, _ = site
    con = _con()
    rates = con.execute(
        f"""
        WITH last_ev AS (SELECT user_id, max(event_ts) AS last_ts FROM read_parquet('{out}/events/*/*.parquet')
                         GROUP BY user_id),
        p AS (SELECT p.*, l.last_ts FROM read_parquet('{out}/payments/*/*.parquet') p JOIN last_ev l USING (user_id))
        SELECT avg(CASE WHEN status = 'failed' THEN 1.0 ELSE 0 END) FILTER (WHERE last_ts < TIMESTAMPTZ '2026-05-01'),
               avg(CASE WHEN status = 'failed' THEN 1.0 ELSE 0 END) FILTER (WHERE last_ts >= TIMESTAMPTZ '2026-05-25')
        FROM p
        """
    ).fetchone()
    churned_fail, retained_fail = rates
    assert churned_fail > 1.5 * retained_fail
