"""Session fixtures: one small feature store (SQLite and Redis), built once per test session.

Feature tables come from the real pipeline (``jobs.generate`` + ``jobs.aggregate``) on a few
hundred users. Redis: 127.0.0.1:6379 db 15 (flushed); if unreachable, a throw-away
``redis-server`` on a free port; if that is impossible the Redis tests skip, or fail when
``CI`` is set.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from churn.settings import Settings

USERS = 300
DAYS = 75
SEED = 11
END = dt.date(2024, 3, 1)


@dataclass
class Env:
    settings: Settings
    store: object
    end: dt.date


def make_settings(data_dir: Path, **overrides) -> Settings:
    return Settings.from_env(env={}, data_dir=data_dir, **overrides)


@pytest.fixture(scope="session")
def feature_data(tmp_path_factory) -> tuple[Path, dt.date]:
    """Raw data + daily feature tables; returns (data_dir, newest feature date)."""
    from jobs.aggregate import build_features, partition_dates
    from jobs.generate import generate

    data_dir = tmp_path_factory.mktemp("churn-data")
    s = make_settings(data_dir)
    generate(s.raw_dir, users=USERS, days=DAYS, seed=SEED, end_date=END)
    build_features(s)
    dates = partition_dates(s.features_dir / "engagement")
    assert dates, "aggregation produced no feature partitions"
    return data_dir, dates[-1]


def _clone_data_dir(src: Path, dst: Path) -> Path:
    """A data dir sharing the feature tables of ``src`` but with its own Feast files."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "features").symlink_to(src / "features", target_is_directory=True)
    return dst


@pytest.fixture(scope="session")
def sqlite_env(feature_data, tmp_path_factory) -> Env:
    from churn import feature_store as cfs
    from jobs.materialize import materialize

    data_dir, end = feature_data
    s = make_settings(_clone_data_dir(data_dir, tmp_path_factory.mktemp("sqlite-store")))
    store = cfs.get_store(s)
    cfs.apply(s, store)
    materialize(s, end, store=store)
    return Env(s, store, end)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _skip_or_fail(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: Redis tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server():
    """``redis://host:port`` of a reachable Redis (existing one or a throw-away server)."""
    if _port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379"
        return
    exe = shutil.which("redis-server")
    if not exe:
        _skip_or_fail("no Redis at 127.0.0.1:6379 and no redis-server on PATH")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            if _port_open("127.0.0.1", port):
                break
            time.sleep(0.1)
        else:
            _skip_or_fail("redis-server did not start")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def redis_settings(data_dir: Path, server: str, db: int) -> Settings:
    import redis

    url = f"{server}/{db}"
    redis.Redis.from_url(url).flushdb()
    return make_settings(data_dir, online_store="redis", redis_url=url)


@pytest.fixture(scope="session")
def redis_env(feature_data, redis_server, tmp_path_factory) -> Env:
    from churn import feature_store as cfs
    from jobs.materialize import materialize

    data_dir, end = feature_data
    s = redis_settings(_clone_data_dir(data_dir, tmp_path_factory.mktemp("redis-store")), redis_server, 15)
    store = cfs.get_store(s)
    cfs.apply(s, store)
    materialize(s, end, store=store)
    return Env(s, store, end)
