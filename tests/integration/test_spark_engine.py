"""``CHURN_ENGINE=spark``: the point-in-time training set from Feast's Spark offline store (Spark in
local mode, the installed Java) equals the DuckDB one, row for row and dtype for dtype.

Both engines read the same daily partitions of the small site; only the offline store differs.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.settings import Settings
from tests.support.sites import copy_site

EXTREME = 10**9
T = dt.date(2026, 10, 2)  # the small store's test cutoff (last fully labelled)


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
