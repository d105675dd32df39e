"""``CHURN_ENGINE=spark`` (Spark in local mode, the installed Java) against the DuckDB default.

- The daily aggregation on Spark (``jobs/sql`` translated) writes the same feature rows, column for
  column and type for type, whether it starts from stored totals or reads every raw event.
- Those rows materialize into the same online values.
- The point-in-time training set from Feast's Spark offline store equals the DuckDB one.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.layout import partition_dates, partition_dir
from churn.schema import FEATURE_VIEWS
from churn.settings import Settings
from tests.support.sites import copy_site, view_rows

EXTREME = 10**9
T = dt.date(2026, 10, 2)  # the small store's test cutoff (last fully labelled)
REBUILT = 2  # newest dates each Spark build writes
SPARK_CONF = "spark.sql.shuffle.partitions=3"


@pytest.fixture(scope="module")
def spark_built(small_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Settings]:
    """The small site's newest dates rebuilt on Spark, two ways.

    ``carried``: a copy with those dates removed from every view, so the build starts from the
    running totals stored before them (as every daily build does). ``fresh``: raw data only, built
    from the same first date, so the ledgers come from every raw event instead.
    """
    from jobs.aggregate import build_features

    root = tmp_path_factory.mktemp("spark-built")
    carried = copy_site(small_store, root / "carried", engine="spark", spark_conf=SPARK_CONF)
    newest = partition_dates(carried.features_dir / "engagement")[-REBUILT:]
    for view in FEATURE_VIEWS:
        for day in newest:
            shutil.rmtree(partition_dir(carried.layout.feature_view_dir(view), day))
    fresh_dir = root / "fresh"
    fresh_dir.mkdir()
    shutil.copytree(small_store.raw_dir, fresh_dir / "raw")
    fresh = copy_site(fresh_dir, root / "fresh-site", engine="spark", spark_conf=SPARK_CONF)
    for settings in (carried, fresh):
        result = build_features(settings, start_date=newest[0])
        assert (result.start, result.end, result.dates) == (newest[0], newest[-1], REBUILT)
    return {"carried": carried, "fresh": fresh}


@pytest.mark.parametrize("start", ["carried", "fresh"])
def test_spark_aggregation_writes_the_duckdb_rows(
    small_store: Settings, spark_built: dict[str, Settings], start: str
) -> None:
    days = partition_dates(small_store.features_dir / "engagement")[-REBUILT:]
    spark = spark_built[start]
    for view in FEATURE_VIEWS:
        want, got = view_rows(small_store, view, days), view_rows(spark, view, days)
        assert len(want) > 300
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=f"{view} ({start})")
    staged = [p for p in spark.features_dir.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".crc"]
    assert staged == []


def test_spark_built_rows_materialize_the_same_online_values(
    small_store: Settings, spark_built: dict[str, Settings], tmp_path: pytest.TempPathFactory
) -> None:
    from feature_repo.store import apply, get_store
    from jobs.materialize import materialize

    duck = copy_site(small_store, tmp_path / "duck")
    values = []
    for settings in (duck, spark_built["carried"]):
        apply(settings)
        materialize(settings, full=True)
        store = get_store(settings)
        users = pq.read_table(settings.raw_dir / "users" / "users.parquet", columns=["user_id"]).column(0)
        rows = [{"user_id": u} for u in users.to_pylist()]
        values.append(store.get_online_features(store.get_feature_service("churn_v2"), rows).to_df())
    assert values[0]["logins_7d"].notna().sum() > 100
    pd.testing.assert_frame_equal(values[1], values[0], check_exact=True)


@pytest.fixture(scope="module")
def engines(small_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Settings]:
    """Two writable copies of the small site, one per engine, each with its own Feast registry.

    Each copy also holds a half-written ``.tmp-*`` sibling of a real partition with an absurd
    value, as an interrupted atomic write would leave it: neither engine may read it.
    """
    from feature_repo.store import apply

    root = tmp_path_factory.mktemp("engines")
    out = []
    for engine in ("duckdb", "spark"):
        settings = copy_site(
            small_store, root / engine, reference_sample_rows=300, min_history_days=7, engine=engine,
            spark_conf="spark.sql.shuffle.partitions=3" if engine == "spark" else "",
        )  # fmt: skip
        scored = settings.features_dir / "engagement" / f"date={T}"
        stray = settings.features_dir / "engagement" / f".tmp-{scored.name}"
        shutil.copytree(scored, stray)
        table = pq.read_table(stray / "part-0.parquet")
        column = table.schema.get_field_index("logins_7d")
        planted = pa.array([EXTREME] * table.num_rows, type=table.schema.field(column).type)
        pq.write_table(table.set_column(column, "logins_7d", planted), stray / "part-0.parquet")
        apply(settings)
        out.append(settings)
    return out[0], out[1]


def test_spark_offline_store_is_what_the_settings_select(engines: tuple[Settings, Settings]) -> None:
    from feature_repo.store import get_store

    duck, spark = engines
    assert type(get_store(duck).config.offline_store).__name__ == "DuckDBOfflineStoreConfig"
    store = get_store(spark)
    assert type(store.config.offline_store).__name__ == "SparkOfflineStoreConfig"
    assert store.config.offline_store.spark_conf["spark.sql.session.timeZone"] == "UTC"
    sources = {v.name: type(v.batch_source).__name__ for v in store.list_feature_views()}
    assert set(sources.values()) == {"SparkSource"}, sources


def test_spark_training_set_equals_the_duckdb_one(engines: tuple[Settings, Settings]) -> None:
    from training.dataset import build_training_set

    duck, spark = engines
    a, b = build_training_set(duck), build_training_set(spark)
    assert (a.valid, a.test, a.cutoffs) == (b.valid, b.test, b.cutoffs)
    assert a.features == b.features and a.categorical == b.categorical
    assert len(a.frame) > 300 and a.frame["logins_7d"].notna().any()
    pd.testing.assert_frame_equal(a.frame, b.frame[list(a.frame.columns)])
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()  # the one Feast ran the join in, with the settings' conf
    assert session is not None and session.conf.get("spark.sql.shuffle.partitions") == "3"
    assert session.conf.get("spark.sql.session.timeZone") == "UTC"
    assert a.test == T
    at_t = a.frame[a.frame["cutoff"] == T]
    assert len(at_t) > 50 and at_t["logins_7d"].max() < EXTREME  # the half-written sibling was not read


def test_spark_submit_driver_keeps_the_submitted_master(small_store: Settings, tmp_path) -> None:
    """As a Spark Operator application's driver runs the CLI: ``spark-submit … cli/main.py features
    build``. The settings name a master that does not exist: the build succeeds only if the session
    keeps the one spark-submit was given, and it writes DuckDB's rows."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pyspark

    from tests.support.env import REPO

    site = copy_site(small_store, tmp_path / "site", engine="spark", spark_master="spark://nowhere.invalid:7077")
    newest = partition_dates(site.features_dir / "engagement")[-1]
    for view in FEATURE_VIEWS:
        shutil.rmtree(partition_dir(site.layout.feature_view_dir(view), newest))
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")} | site.as_env()
    env |= {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(submit), "--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=3",
           str(REPO / "cli" / "main.py"), "features", "build"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for view in FEATURE_VIEWS:
        want, got = view_rows(small_store, view, [newest]), view_rows(site, view, [newest])
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=view)
