"""Shared fixtures: a small synthetic site, generated and aggregated once per test session."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from churn.settings import Settings

SMALL_END = dt.date(2026, 11, 1)
SMALL_USERS = 400
SMALL_DAYS = 120


def make_settings(data_dir: Path, **env: str) -> Settings:
    """Settings for a test data dir; extra CHURN_* values as keyword arguments (lower-case names)."""
    values = {"CHURN_DATA_DIR": str(data_dir), "CHURN_FRESHNESS_MAX_HOURS": "0"}
    values.update({f"CHURN_{k.upper()}": str(v) for k, v in env.items()})
    return Settings.from_env(env=values)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """400 users × 120 days of synthetic data with daily feature tables built (read-only for tests)."""
    from jobs.aggregate import build_features
    from jobs.ingest import generate_store

    settings = make_settings(tmp_path_factory.mktemp("small_store"))
    generate_store(settings, users=SMALL_USERS, days=SMALL_DAYS, seed=7, end_date=SMALL_END)
    build_features(settings)
    return settings
