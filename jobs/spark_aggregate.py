"""``CHURN_ENGINE=spark``: the daily aggregation as Spark SQL, from the same ``jobs/sql`` statements.

Each statement is translated by :mod:`jobs.spark_sql` and becomes a cached temporary view of the
session Feast's Spark offline store also uses (same master, same configuration). Views are written
by Spark, partitioned by date, into a staging folder; each partition is checked against the view's
schema and swapped in as DuckDB's are, so readers never see half a day.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from churn.errors import AggregationError
from churn.io import replace_dirs, staging_dir
from churn.layout import parse_partition
from churn.schema import feature_table_schema
from churn.settings import Settings
from feature_repo.store import spark_conf
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
        self.spark.read.parquet(*files).createOrReplaceTempView(view)
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

    def write_view(self, root: Path, view: str, table: str) -> None:
        schema = feature_table_schema(view)
        frame = self.spark.table(table).select(*schema.names, "date")
        with staging_dir(root) as tmp:
            out = tmp / "spark"
            frame.write.partitionBy("date").option("compression", "zstd").parquet(str(out))
            written = out.iterdir() if out.exists() else ()  # no rows, no folder
            parts = sorted(p for p in written if p.is_dir() and parse_partition(p.name) is not None)
            for part in parts:
                _keep_parquet_only(part)
                _check_schema(view, part, schema)
            replace_dirs([(part, root / part.name) for part in parts])

    def close(self) -> None:
        for view in self.views:
            self.spark.catalog.dropTempView(view)
        self.spark.catalog.clearCache()
        for key, value in self.restore.items():
            self.spark.conf.unset(key) if value is None else self.spark.conf.set(key, value)


def _keep_parquet_only(part: Path) -> None:
    """Spark's checksum side files are not partition content."""
    for entry in part.iterdir():
        if not entry.name.endswith(".parquet"):
            os.remove(entry)


def _check_schema(view: str, part: Path, schema: pa.Schema) -> None:
    """Every file Spark wrote has the view's columns and types (Feast and DuckDB read them as one)."""
    for file in part.glob("*.parquet"):
        got = pq.read_schema(file)
        names = got.names
        if names != schema.names:
            raise AggregationError(f"{view}/{part.name}: Spark wrote columns {names}, expected {schema.names}")
        for want in schema:
            have = got.field(want.name).type
            if have != want.type:
                raise AggregationError(f"{view}/{part.name}: {want.name} is {have}, expected {want.type}")
