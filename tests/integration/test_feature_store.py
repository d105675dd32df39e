"""Feature store integration: apply → materialize → online == offline; fast path == Feast's;
point-in-time correctness; idle users decay; SQL registry on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pandas as pd
import pyarrow.parquet as pq
import pytest

from churn.schema import ALL_FEATURES, FEATURE_VIEWS
from feature_repo import store as cfs
from feature_repo.definitions import FEATURE_SERVICE
from tests.support.settings import make_settings, redis_settings
from tests.support.sites import clone_data_dir


def _partition(settings, view: str, day: dt.date) -> pd.DataFrame:
    return (
        pq.read_table(settings.features_dir / view / f"date={day.isoformat()}")
        .to_pandas()
        .set_index("user_id")
    )


def _same(a, b) -> bool:
    if (
        a is None
        or b is None
        or (isinstance(a, float) and math.isnan(a))
        or (isinstance(b, float) and math.isnan(b))
    ):
        return (a is None or (isinstance(a, float) and math.isnan(a))) and (
            b is None or (isinstance(b, float) and math.isnan(b))
        )
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    return a == b


def _online_equals_offline(env):
    from feature_repo.online import online_store

    latest = {view: _partition(env.settings, view, env.end) for view in FEATURE_VIEWS}
    users = sorted(latest["engagement"].index)
    reader = online_store(env.settings, store=env.store)
    result = reader.read(users).by_user()
    assert len(result) == len(users) > 50
    for uid in users:
        got = result[uid]
        assert got.known
        for view, cols in FEATURE_VIEWS.items():
            row = latest[view].loc[uid]
            for col in cols:
                expected = row[col]
                expected = (
                    None if pd.isna(expected) else expected.item() if hasattr(expected, "item") else expected
                )
                assert _same(got.features[col], expected), (uid, col, got.features[col], expected)


def test_apply_registers_service(sqlite_env):
    store = sqlite_env.store
    service = store.get_feature_service(FEATURE_SERVICE)
    assert sorted(p.name for p in service.feature_view_projections) == sorted(FEATURE_VIEWS)
    names = [f.name for p in service.feature_view_projections for f in p.features]
    assert sorted(names) == sorted(ALL_FEATURES)
    # applying twice is idempotent, and the frozen first service stays for the models that use it
    cfs.apply(sqlite_env.settings, store)
    assert len(store.list_feature_views()) == len(FEATURE_VIEWS)
    assert {s.name for s in store.list_feature_services()} == {"churn_v1", "churn_v2"}


def test_online_equals_latest_offline_sqlite(sqlite_env):
    _online_equals_offline(sqlite_env)


@pytest.mark.redis
def test_online_equals_latest_offline_redis(redis_env):
    _online_equals_offline(redis_env)


def _feast_reference(settings, end: dt.date):
    store = cfs.get_store(settings)
    cfs.apply(settings, store)
    end_ts = cfs.midnight_utc(end)
    store.materialize(end_ts - dt.timedelta(days=3), end_ts)
    return store


def _compare_fast_vs_feast(ours, theirs, end):
    users = sorted(_partition(ours.settings, "engagement", end).index)[::3] + ["no-such-user"]
    rows = [{"user_id": u} for u in users]
    a = ours.store.get_online_features(ours.store.get_feature_service(FEATURE_SERVICE), rows).to_dict()
    b = theirs.get_online_features(theirs.get_feature_service(FEATURE_SERVICE), rows).to_dict()
    assert sorted(a) == sorted(b)
    for name in sorted(a):  # by name: Feast's response order is not stable
        for ua, va, vb in zip(users, a[name], b[name], strict=True):
            assert _same(va, vb), (name, ua, va, vb)


def test_fast_path_equals_feast_materialize_sqlite(sqlite_env, tmp_path):
    s = make_settings(
        clone_data_dir(sqlite_env.settings.data_dir.resolve() / "features" / "..", tmp_path / "ref")
    )
    theirs = _feast_reference(s, sqlite_env.end)
    _compare_fast_vs_feast(sqlite_env, theirs, sqlite_env.end)


@pytest.mark.redis
def test_fast_path_equals_feast_materialize_redis(redis_env, redis_server, tmp_path):
    s = redis_settings(
        clone_data_dir(redis_env.settings.data_dir / "features" / "..", tmp_path / "ref"), redis_server, 14
    )
    theirs = _feast_reference(s, redis_env.end)
    _compare_fast_vs_feast(redis_env, theirs, redis_env.end)


def test_incremental_materialize_is_noop_then_full(sqlite_env):
    from jobs.materialize import materialize, materialized_through

    assert materialized_through(sqlite_env.settings, sqlite_env.store) == sqlite_env.end
    again = materialize(sqlite_env.settings, sqlite_env.end, store=sqlite_env.store)
    assert again.total_rows == 0
    full = materialize(sqlite_env.settings, sqlite_env.end, store=sqlite_env.store, full=True)
    assert full.total_rows >= 4 * 50
    fv = sqlite_env.store.get_feature_view("engagement")
    assert fv.materialization_intervals and fv.materialization_intervals[-1][1] == cfs.midnight_utc(
        sqlite_env.end
    )
    _online_equals_offline(sqlite_env)


def test_point_in_time_correctness(sqlite_env):
    s, end = sqlite_env.settings, sqlite_env.end
    days = [end - dt.timedelta(days=k) for k in (5, 3, 1)]
    frames = {d: _partition(s, "recency", d) for d in days}
    users = sorted(set.intersection(*(set(f.index) for f in frames.values())))[:20]
    rows = []
    for d in days:
        midnight = cfs.midnight_utc(d)
        for u in users:
            # exactly at the partition time, and just before the next one: both see day d's row
            rows.append((u, midnight, d))
            rows.append((u, midnight + dt.timedelta(hours=23, minutes=59), d))
            # one microsecond before midnight must see the previous day's row, never day d's
            rows.append((u, midnight - dt.timedelta(microseconds=1), d - dt.timedelta(days=1)))
    entity_df = pd.DataFrame([(u, ts) for u, ts, _ in rows], columns=["user_id", "event_timestamp"])
    out = cfs.historical_features(
        s, entity_df, sqlite_env.store, features=["recency:days_since_last_activity", "engagement:logins_30d"]
    )
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    got = out.set_index(["user_id", "event_timestamp"])
    for u, ts, valid_day in rows:
        expected = _partition(s, "recency", valid_day).loc[u, "days_since_last_activity"]
        value = got.loc[(u, pd.Timestamp(ts))]["days_since_last_activity"]
        value = value.iloc[0] if isinstance(value, pd.Series) else value
        assert _same(float(value), float(expected)), (u, ts, value, expected)


def test_idle_user_decays(sqlite_env):
    s, end = sqlite_env.settings, sqlite_env.end
    last = _partition(s, "engagement", end)
    rec = _partition(s, "recency", end)
    idle = [
        u
        for u in last.index
        if last.loc[u, "active_days_7d"] == 0 and rec.loc[u, "days_since_last_activity"] >= 9
    ]
    assert idle, "fixture should contain idle users"
    user = idle[0]
    dates = [end - dt.timedelta(days=k) for k in range(8, -1, -1)]
    entity_df = pd.DataFrame(
        {"user_id": [user] * len(dates), "event_timestamp": [cfs.midnight_utc(d) for d in dates]}
    )
    out = cfs.historical_features(s, entity_df, sqlite_env.store).sort_values("event_timestamp")
    ds = out["days_since_last_activity"].tolist()
    assert all(b - a == pytest.approx(1.0) for a, b in zip(ds, ds[1:], strict=False)), ds
    assert out["active_days_7d"].iloc[-1] == 0 and out["logins_7d"].iloc[-1] == 0
    # the 7-day window is empty for the last day; the 30-day one still remembers older activity
    assert out["active_days_30d"].iloc[0] >= out["active_days_30d"].iloc[-1]


@pytest.mark.postgres
def test_sql_registry_on_postgres(sqlite_env, tmp_path):
    psycopg = pytest.importorskip("psycopg")
    name = f"churn_reg_{uuid.uuid4().hex[:8]}"
    admin = None
    for user in ("postgres", "root"):
        try:
            admin = psycopg.connect(
                f"postgresql://{user}@127.0.0.1:5432/test", autocommit=True, connect_timeout=3
            )
            break
        except psycopg.OperationalError:
            continue
    if admin is None:
        import os

        if os.environ.get("CI"):
            pytest.fail("PostgreSQL not reachable at 127.0.0.1:5432")
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    pg_user = admin.info.user
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+psycopg://{pg_user}@127.0.0.1:5432/{name}"
        s = make_settings(
            clone_data_dir(sqlite_env.settings.data_dir / "features" / "..", tmp_path / "pg"),
            feast_registry_url=url,
        )
        store = cfs.get_store(s)
        cfs.apply(s, store)
        fresh = cfs.get_store(s)  # a new client reads the service back from PostgreSQL
        service = fresh.get_feature_service(FEATURE_SERVICE)
        assert sorted(p.name for p in service.feature_view_projections) == sorted(FEATURE_VIEWS)
        from jobs.materialize import materialize

        res = materialize(s, sqlite_env.end, store=fresh)
        assert res.total_rows > 0
        assert fresh.registry.get_feature_view("engagement", "churn").materialization_intervals
        for st in (store, fresh):
            st.registry.teardown() if hasattr(st.registry, "teardown") else None
    finally:
        import gc

        gc.collect()
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def _online_rows(settings) -> dict[str, list[tuple]]:
    """Every row of every view table of the SQLite online store, plus its schema text."""
    import sqlite3

    from feature_repo.online.sqlite import STATE_TABLE

    path = settings.feast_dir / "online_store.db"
    with sqlite3.connect(path) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            if r[0] != STATE_TABLE
        ]
        out = {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY entity_key, feature_name').fetchall() for t in tables}
        out["__schema__"] = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
    return out


def test_failed_full_reload_leaves_previous_data_intact(sqlite_env, tmp_path, monkeypatch):
    """A load that dies half-way (here: after its first chunk) rolls back to the previous tables."""
    import jobs.materialize as jm
    from feature_repo.online.sqlite import SqliteOnlineStore

    s = make_settings(clone_data_dir(sqlite_env.settings.data_dir / "features" / "..", tmp_path / "crash"))
    store = cfs.get_store(s)
    cfs.apply(s, store)
    jm.materialize(s, sqlite_env.end, store=store, full=True)
    before = _online_rows(s)
    assert sum(len(v) for k, v in before.items() if k != "__schema__") > 0

    monkeypatch.setattr(jm, "_PREPARE_ROWS", 7)  # many chunks per view
    sent = {"n": 0}
    original = SqliteOnlineStore.send

    def flaky_send(self, prepared):
        sent["n"] += 1
        if sent["n"] == 3:
            raise RuntimeError("simulated crash mid-load")
        original(self, prepared)

    monkeypatch.setattr(SqliteOnlineStore, "send", flaky_send)
    with pytest.raises(RuntimeError, match="simulated crash"):
        jm.materialize(s, sqlite_env.end, store=store, full=True)
    assert _online_rows(s) == before  # same rows, same Feast DDL and indexes, nothing left over
    monkeypatch.setattr(SqliteOnlineStore, "send", original)
    assert jm.materialize(s, sqlite_env.end, store=store, full=True).total_rows > 0
    assert _online_rows(s) == before  # a full reload is deterministic


def test_incremental_day_equals_full_load(sqlite_env, tmp_path):
    """Yesterday full, then today incremental (upserts) == today loaded in full."""
    from jobs.materialize import materialize

    s_inc = make_settings(clone_data_dir(sqlite_env.settings.data_dir / "features" / "..", tmp_path / "inc"))
    s_full = make_settings(clone_data_dir(sqlite_env.settings.data_dir / "features" / "..", tmp_path / "full"))
    for s in (s_inc, s_full):
        cfs.apply(s, cfs.get_store(s))
    materialize(s_inc, sqlite_env.end - dt.timedelta(days=1), full=True)
    inc = materialize(s_inc, sqlite_env.end)
    assert inc.start_date == sqlite_env.end and inc.total_rows > 0
    materialize(s_full, sqlite_env.end, full=True)
    a, b = _online_rows(s_inc), _online_rows(s_full)
    # users who dropped out of scope today keep yesterday's rows (Feast never deletes online rows)
    for table in b:
        if table == "__schema__":
            continue
        keys_today = {r[0] for r in b[table]}
        assert [r for r in a[table] if r[0] in keys_today] == b[table], table
    assert a["__schema__"] == b["__schema__"]
