"""``CHURN_ENGINE=spark``: the daily aggregation as Spark SQL, from the same ``jobs/sql`` statements.

Each statement is translated by :mod:`jobs.spark_sql` and becomes a cached temporary view of the
session Feast's Spark offline store also uses (same master, same configuration). Views are written
by Spark, partitioned by date, into a staging folder and published by the same check and swap as
DuckDB's (:func:`jobs.aggregate.publish_partitions`), so readers never see half a day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from churn.io import shared_staging_dir
from churn.schema import feature_table_schema
from churn.settings import Settings
from churn.storage import DataPath, spark_uri
from feature_repo.store import spark_conf
from jobs.aggregate import publish_partitions
from jobs.spark_sql import spark_statements

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ADAPTIVE = "spark.sql.adaptive.enabled"


def spark_session(settings: Settings) -> SparkSession:
    """The process's Spark session, opened (or joined) with the platform's configuration."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkAggregation:
    """One span's statements on Spark; its cached views are dropped when the span closes."""

    def __init__(self, settings: Settings) -> None:
        self.spark = spark_session(settings)
        self.views: list[str] = []
        self.restore: dict[str, str | None] = {}
        if ADAPTIVE not in settings.spark_conf_items:
            # Adaptive execution re-plans the whole query after every stage, and the long-run
            # rows are one plan of many small stages: re-planning costs several times the work
            # (README, Scale). Off for the aggregation unless CHURN_SPARK_CONF says otherwise.
            self.restore[ADAPTIVE] = self.spark.conf.get(ADAPTIVE, None)
            self.spark.conf.set(ADAPTIVE, "false")

    def relation(self, name: str, files: list[str]) -> str:
        # explicit files: Spark discovers no partition columns from their folders
        view = f"source_{name}"
        self.spark.read.parquet(*(spark_uri(f) for f in files)).createOrReplaceTempView(view)
        self.views.append(view)
        return view

    def run(self, sql: str, params: dict[str, object] | None = None) -> None:
        for table, query in spark_statements(sql, params):
            frame = self.spark.sql(query).persist()
            frame.createOrReplaceTempView(table)
            self.views.append(table)

    def scalar(self, sql: str) -> int:
        (table, query), *_ = spark_statements(f"CREATE OR REPLACE TEMP TABLE scalar AS {sql}")
        return int(self.spark.sql(query).collect()[0][0])

    def write_view(self, root: DataPath, view: str, table: str) -> None:
        # Staged on the view's own storage, where every executor can write (a bucket prefix on
        # object storage), then checked and published like DuckDB's.
        frame = self.spark.table(table).select(*feature_table_schema(view).names, "date")
        with shared_staging_dir(root) as tmp:
            frame.write.partitionBy("date").option("compression", "zstd").parquet(spark_uri(tmp / "spark"))
            publish_partitions(root, view, tmp / "spark")

    def close(self) -> None:
        for view in self.views:
            self.spark.catalog.dropTempView(view)
        self.spark.catalog.clearCache()
        for key, value in self.restore.items():
            self.spark.conf.unset(key) if value is None else self.spark.conf.set(key, value)
