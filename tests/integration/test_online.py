"""OnlineFeatureReader: by-name features, unknown vs missing, freshness, timeouts."""

from __future__ import annotations

import time

import pytest

from churn.online import OnlineFeatureReader, OnlineStoreUnavailable
from churn.schema import ALL_FEATURES
from tests.integration.conftest import make_settings


def _check_reader(env):
    reader = OnlineFeatureReader(env.settings)
    assert reader.ping()
    import pyarrow.parquet as pq

    users = (
        pq.read_table(env.settings.features_dir / "engagement" / f"date={env.end}")
        .column("user_id")
        .to_pylist()
    )
    res = reader.read([users[0], "ghost-user", users[1]])
    by = res.by_user()
    assert [u.user_id for u in res] == [users[0], "ghost-user", users[1]]
    known = by[users[0]]
    assert known.known and set(known.features) == set(ALL_FEATURES)
    assert known.feature_age_seconds is not None and known.feature_age_seconds > 0
    ghost = by["ghost-user"]
    assert not ghost.known and ghost.feature_age_seconds is None
    assert all(v is None for v in ghost.features.values()) and sorted(ghost.missing) == sorted(ALL_FEATURES)
    # known user with a missing value: null values are reported as missing, row still known
    for u in res:
        if u.known:
            assert set(u.missing) == {k for k, v in u.features.items() if v is None}


def test_reader_sqlite(sqlite_env):
    _check_reader(sqlite_env)


@pytest.mark.redis
def test_reader_redis(redis_env):
    _check_reader(redis_env)


@pytest.mark.redis
def test_dead_redis_fails_fast(redis_env, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    s = make_settings(
        redis_env.settings.data_dir,
        online_store="redis",
        redis_url=f"redis://127.0.0.1:{port}/0",
        online_timeout_ms=200,
    )
    reader = OnlineFeatureReader(s)
    t0 = time.perf_counter()
    with pytest.raises(OnlineStoreUnavailable):
        reader.read(["u0000001"])
    with pytest.raises(OnlineStoreUnavailable):
        reader.ping()
    assert time.perf_counter() - t0 < 3


def test_missing_registry_is_clear(tmp_path):
    with pytest.raises(OnlineStoreUnavailable):
        OnlineFeatureReader(make_settings(tmp_path / "empty"))
