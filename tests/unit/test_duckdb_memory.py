"""DuckDB's memory limit and spill folder for the batch steps (``CHURN_DUCKDB_MEMORY_LIMIT``).

Past its limit DuckDB spills to disk; the platform's part is to hand every batch step's connection
the limit and a node-local spill folder (DuckDB's own default is ``.tmp`` in the working directory,
which a pod's read-only root refuses), and to say which setting to change when even spilling is
not enough.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from churn.errors import AggregationError, SettingsError
from churn.layout import partition_dates, partition_dir
from churn.schema import FEATURE_VIEWS
from churn.settings import Settings
from jobs.aggregate import DuckDBAggregation, build_features
from tests.support.settings import make_settings
from tests.support.sites import copy_site, view_rows


def test_spill_folder_is_node_local_scratch_and_limit_optional(tmp_path: Path) -> None:
    local = make_settings(tmp_path / "data")
    assert local.duckdb_config == {"temp_directory": str(tmp_path / "data" / "duckdb-spill")}
    limited = make_settings(tmp_path / "data", duckdb_memory_limit="6GB", local_dir=str(tmp_path / "node"))
    assert limited.duckdb_config == {"temp_directory": str(tmp_path / "node" / "duckdb-spill"), "memory_limit": "6GB"}
    remote = Settings.from_env(env={"CHURN_DATA_DIR": "s3://bucket/site"})
    assert Path(remote.duckdb_config["temp_directory"]) == remote.scratch_dir / "duckdb-spill"
    assert not remote.duckdb_config["temp_directory"].startswith("s3")


@pytest.mark.parametrize("value", ["8GB", "512MiB", "1.5gb", "100 MB", "2TiB"])
def test_sizes_duckdb_takes_are_accepted(tmp_path: Path, value: str) -> None:
    assert make_settings(tmp_path, duckdb_memory_limit=value).duckdb_config["memory_limit"] == value


@pytest.mark.parametrize("value", ["80%", "8", "8 gigs", "GB", "-1GB"])
def test_other_sizes_are_refused_when_settings_load(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="CHURN_DUCKDB_MEMORY_LIMIT"):
        make_settings(tmp_path, duckdb_memory_limit=value)


def test_the_aggregation_connection_gets_them(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", duckdb_memory_limit="300MiB")
    session = DuckDBAggregation(settings)
    try:
        limit, spill = session.con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    finally:
        session.close()
    assert limit == "300.0 MiB" and spill == str(settings.layout.duckdb_spill_dir)


def _without_newest(small_store: Settings, root: Path, **fields: str) -> tuple[Settings, list]:
    site = copy_site(small_store, root, **fields)
    days = partition_dates(site.features_dir / "engagement")[-2:]
    for view in FEATURE_VIEWS:
        for day in days:
            shutil.rmtree(partition_dir(site.layout.feature_view_dir(view), day))
    return site, days


def test_a_build_under_a_limit_writes_the_same_rows(small_store: Settings, tmp_path: Path) -> None:
    site, days = _without_newest(small_store, tmp_path / "site", duckdb_memory_limit="256MB")
    build_features(site)
    for view in FEATURE_VIEWS:
        assert view_rows(site, view, days).equals(view_rows(small_store, view, days)), view
    assert not site.layout.duckdb_spill_dir.exists()  # DuckDB removes what it spilled


def test_a_limit_too_small_even_to_spill_names_the_settings_and_publishes_nothing(
    small_store: Settings, tmp_path: Path
) -> None:
    site, days = _without_newest(small_store, tmp_path / "site", duckdb_memory_limit="8MB")
    with pytest.raises(AggregationError, match="CHURN_DUCKDB_MEMORY_LIMIT.*CHURN_BUILD_CHUNK_DAYS"):
        build_features(site)
    for view in FEATURE_VIEWS:
        assert partition_dates(site.layout.feature_view_dir(view))[-1] < days[0], view
