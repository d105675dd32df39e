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
from churn.io import TMP_PREFIX, clean_tmp
from churn.layout import partition_dates, partition_dir
from churn.schema import FEATURE_VIEWS
from churn.settings import Settings
from churn.storage import duckdb_connect, spill_folders
from jobs.aggregate import DuckDBAggregation, build_features
from tests.support.settings import make_settings
from tests.support.sites import copy_site, view_rows


def test_spill_folder_is_node_local_scratch_and_limit_optional(tmp_path: Path) -> None:
    local = make_settings(tmp_path / "data")
    assert local.duckdb_config == {"temp_directory": str(tmp_path / "data")}
    limited = make_settings(tmp_path / "data", duckdb_memory_limit="6GB", local_dir=str(tmp_path / "node"))
    assert limited.duckdb_config == {"temp_directory": str(tmp_path / "node"), "memory_limit": "6GB"}
    remote = Settings.from_env(env={"CHURN_DATA_DIR": "s3://bucket/site"})
    assert Path(remote.duckdb_config["temp_directory"]) == remote.scratch_dir
    assert not remote.duckdb_config["temp_directory"].startswith("s3")


@pytest.mark.parametrize("value", ["8GB", "512MiB", "1.5gb", "100 MB", "2TiB"])
def test_sizes_duckdb_takes_are_accepted(tmp_path: Path, value: str) -> None:
    assert make_settings(tmp_path, duckdb_memory_limit=value).duckdb_config["memory_limit"] == value


@pytest.mark.parametrize("value", ["80%", "8", "8 gigs", "GB", "-1GB"])
def test_other_sizes_are_refused_when_settings_load(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="CHURN_DUCKDB_MEMORY_LIMIT"):
        make_settings(tmp_path, duckdb_memory_limit=value)


def test_each_connection_spills_into_a_folder_of_its_own(tmp_path: Path) -> None:
    """DuckDB names its spill files alike in every instance: a shared folder would mix two steps'
    files. Each folder is a ``.tmp-`` one inside the data dir, which housekeeping removes once stale."""
    settings = make_settings(tmp_path / "data", duckdb_memory_limit="300MiB")
    sessions = [DuckDBAggregation(settings) for _ in range(2)]
    try:
        found = [
            s.con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
            for s in sessions
        ]
    finally:
        for session in sessions:
            session.close()
    assert [limit for limit, _ in found] == ["300.0 MiB"] * 2
    folders = [Path(spill) for _, spill in found]
    assert folders[0] != folders[1]
    for folder in folders:
        assert folder.parent == settings.layout.duckdb_spill_root and folder.name.startswith(TMP_PREFIX)
        assert folder.parent.is_dir()  # DuckDB creates the last folder only
    assert spill_folders(settings.layout.duckdb_spill_root) == []  # created only when something spills
    # what a killed step leaves (DuckDB removes its folder only on close) goes with housekeeping's sweep
    folders[0].mkdir()
    (folders[0] / "duckdb_temp_storage_DEFAULT-0.tmp").write_bytes(b"spilled")
    assert clean_tmp(settings.data_dir) == 1 and not folders[0].exists()


def test_a_spilling_connection_cleans_up_after_itself(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", duckdb_memory_limit="64MB")
    con = duckdb_connect(settings.data_dir, config=settings.duckdb_config)
    try:
        con.execute("CREATE TEMP TABLE t AS SELECT range AS i, random() AS r FROM range(8000000)")
        assert con.execute("SELECT count(*) FROM duckdb_temporary_files()").fetchone()[0] > 0
        assert len(spill_folders(settings.layout.duckdb_spill_root)) == 1
        assert con.execute("SELECT sum(i) FROM t").fetchone()[0] == 8000000 * 7999999 // 2
    finally:
        con.close()
    assert spill_folders(settings.layout.duckdb_spill_root) == []


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
    assert spill_folders(site.layout.duckdb_spill_root) == []  # DuckDB removes what it spilled


def test_a_limit_too_small_even_to_spill_names_the_settings_and_publishes_nothing(
    small_store: Settings, tmp_path: Path
) -> None:
    site, days = _without_newest(small_store, tmp_path / "site", duckdb_memory_limit="8MB")
    with pytest.raises(AggregationError, match="CHURN_DUCKDB_MEMORY_LIMIT.*CHURN_BUILD_CHUNK_DAYS"):
        build_features(site)
    for view in FEATURE_VIEWS:
        assert partition_dates(site.layout.feature_view_dir(view))[-1] < days[0], view
