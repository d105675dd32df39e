"""Settings builders: every test builds its Settings here (never from the process environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from churn.settings import Settings


def make_settings(data_dir: Path, **fields: Any) -> Settings:
    """Settings for a test data dir; extra fields as keyword arguments (lower-case names).

    Values go through the ``CHURN_*`` parsing (``reference_sample_rows=300``, ``registry_dir=str(p)``
    both work); freshness checks are off (``freshness_max_hours=0``) unless given.
    """
    values = {"CHURN_DATA_DIR": str(data_dir), "CHURN_FRESHNESS_MAX_HOURS": "0"}
    values.update({f"CHURN_{k.upper()}": str(v) for k, v in fields.items() if v is not None})
    return Settings.from_env(env=values)


def redis_settings(data_dir: Path, server: str, db: int, **fields: Any) -> Settings:
    """Settings on the Redis online store ``server`` (``redis://host:port``), database ``db`` flushed."""
    import redis

    url = f"{server}/{db}"
    redis.Redis.from_url(url).flushdb()
    return make_settings(data_dir, online_store="redis", redis_url=url, **fields)
