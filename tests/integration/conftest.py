"""Integration fixtures: one small feature store (SQLite and Redis) built once per session, a Redis
server, the served site shared by test_faults.py and test_hostile_input.py, and its scored copy
the operator console shows (test_console.py).

Feature tables come from the real pipeline (``jobs.generate`` + ``jobs.aggregate``) on a few hundred
users. Redis: 127.0.0.1:6379 (databases flushed before use); if unreachable, a throw-away
``redis-server`` on a free port; if that is impossible the Redis tests skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from churn.settings import Settings
from tests.support.servers import reachable_redis
from tests.support.settings import make_settings, redis_settings
from tests.support.sites import (
    SHARED_SITE_ADMIN_TOKEN,
    SHARED_SITE_MAX_BATCH,
    ScoredSite,
    ServedSite,
    StoreEnv,
    build_feature_data,
    build_scored_site,
    build_served_site,
    build_store_env,
    clone_data_dir,
)


@pytest.fixture(scope="session")
def feature_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dt.date]:
    """Raw data + daily feature tables; returns (data_dir, newest feature date)."""
    data_dir = tmp_path_factory.mktemp("churn-data")
    return data_dir, build_feature_data(data_dir)


@pytest.fixture(scope="session")
def sqlite_env(feature_data: tuple[Path, dt.date], tmp_path_factory: pytest.TempPathFactory) -> StoreEnv:
    data_dir, end = feature_data
    settings = make_settings(clone_data_dir(data_dir, tmp_path_factory.mktemp("sqlite-store")))
    return build_store_env(settings, end)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """``redis://host:port`` of a reachable Redis (the shared one or a throw-away server)."""
    with reachable_redis() as url:
        yield url


@pytest.fixture(scope="session")
def redis_env(
    feature_data: tuple[Path, dt.date], redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> StoreEnv:
    data_dir, end = feature_data
    settings = redis_settings(clone_data_dir(data_dir, tmp_path_factory.mktemp("redis-store")), redis_server, 15)
    return build_store_env(settings, end)


@pytest.fixture(scope="session")
def shared_site(small_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> ServedSite:
    """A served site (SQLite online store, promoted model) for test_faults.py and test_hostile_input.py;
    read-only for tests (copy it to write)."""
    return build_served_site(
        small_store,
        tmp_path_factory.mktemp("reliability") / "data",
        max_batch_size=SHARED_SITE_MAX_BATCH,
        admin_token=SHARED_SITE_ADMIN_TOKEN,
    )


@pytest.fixture(scope="session")
def scored_site(shared_site: ServedSite, tmp_path_factory: pytest.TempPathFactory) -> ScoredSite:
    """A copy of ``shared_site`` scored on its newest three days, with drift reports and a daily run
    recorded: what the operator console shows (test_console.py and the browser tests); read-only."""
    return build_scored_site(shared_site, tmp_path_factory.mktemp("console") / "data")
