"""The aggregation SQL's Spark translation, checked where it can be without Spark: the portable
replacement of DuckDB's ASOF join, run by DuckDB itself, returns what the ASOF join returns."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest
import sqlglot

from churn.errors import AggregationError
from jobs.spark_sql import rewrite_asof_joins, spark_statements


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    """Keys probing a ledger: random days, shared keys, ties between probe and ledger days."""
    rng = np.random.default_rng(5)
    con = duckdb.connect()
    con.execute("CREATE TABLE ledger (uid INTEGER, day DATE, total BIGINT, note VARCHAR)")
    con.execute("CREATE TABLE keys (uid INTEGER, date DATE, tag VARCHAR)")
    start = dt.date(2026, 1, 1)
    ledger = {
        (int(u), start + dt.timedelta(days=int(d)))
        for u, d in zip(rng.integers(0, 40, 600), rng.integers(0, 90, 600), strict=True)
    }
    con.executemany(
        "INSERT INTO ledger VALUES (?, ?, ?, ?)",
        [
            (u, d, int(rng.integers(0, 1000)), None if i % 7 == 0 else f"n{i}")
            for i, (u, d) in enumerate(sorted(ledger))
        ],
    )
    keys = zip(rng.integers(0, 45, 500), rng.integers(0, 100, 500), strict=True)  # some keys have no ledger rows
    con.executemany(
        "INSERT INTO keys VALUES (?, ?, ?)",
        [(int(u), start + dt.timedelta(days=int(d)), f"t{i}") for i, (u, d) in enumerate(keys)],
    )
    return con


def _both(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list, list]:
    native = sorted(con.execute(sql).fetchall(), key=repr)
    rewritten = rewrite_asof_joins(sqlglot.parse_one(sql, read="duckdb")).sql(dialect="duckdb")
    assert "ASOF" not in rewritten.upper()
    return native, sorted(con.execute(rewritten).fetchall(), key=repr)


@pytest.mark.parametrize(
    "condition",
    ["l.day < k.date", "k.date > l.day", "l.day <= k.date", "l.day < k.date - 7", "k.date - 30 >= l.day"],
)
def test_rewritten_asof_join_returns_what_duckdb_asof_returns(con, condition: str) -> None:
    native, rewritten = _both(
        con,
        f"SELECT k.uid, k.date, k.tag, l.day, l.total, l.note FROM keys k "
        f"ASOF LEFT JOIN ledger l ON l.uid = k.uid AND {condition}",
    )
    assert len(native) == 500 and sum(r[3] is None for r in native) > 20
    assert rewritten == native


def test_chained_asof_joins_and_a_subquery_ledger(con) -> None:
    native, rewritten = _both(
        con,
        "SELECT k.uid, k.date, a.day, a.total, b.day, b.note FROM keys k "
        "ASOF LEFT JOIN ledger a ON a.uid = k.uid AND a.day < k.date "
        "LEFT JOIN (SELECT DISTINCT uid FROM ledger) d ON d.uid = k.uid "
        "ASOF LEFT JOIN (SELECT uid, day, note FROM ledger WHERE note IS NOT NULL) b "
        "ON b.uid = k.uid AND b.day < k.date - 14",
    )
    assert rewritten == native


def test_inner_asof_join(con) -> None:
    native, rewritten = _both(
        con, "SELECT k.tag, l.total FROM keys k ASOF JOIN ledger l ON l.uid = k.uid AND l.day < k.date"
    )
    assert 0 < len(native) < 500 and rewritten == native


def test_statements_become_spark_selects_with_literal_parameters() -> None:
    (table, query), (table2, _) = spark_statements(
        "CREATE OR REPLACE TEMP TABLE a AS SELECT user_id FROM e WHERE ts >= $since::TIMESTAMPTZ AND d < $end::DATE;"
        "CREATE OR REPLACE TEMP TABLE b AS SELECT count(*) FILTER (WHERE x > 1) AS n FROM a GROUP BY ALL",
        {"since": dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.UTC), "end": dt.date(2026, 3, 5)},
    )
    assert (table, table2) == ("a", "b")
    assert "CAST('2026-03-04 05:06:00' AS TIMESTAMP)" in query and "CAST('2026-03-05' AS DATE)" in query
    assert "$" not in query and ":" not in query.replace("05:06:00", "")


def test_duckdb_functions_sqlglot_does_not_know_reach_spark_under_spark_names() -> None:
    from churn.layout import day_sql

    [(_, text)] = spark_statements(f"CREATE OR REPLACE TEMP TABLE d AS SELECT {day_sql('event_ts')} AS day FROM e")
    assert "UNIX_MICROS(event_ts)" in text and "EPOCH_US" not in text.upper()


@pytest.mark.parametrize(
    ("sql", "params", "message"),
    [
        ("CREATE OR REPLACE TEMP TABLE a AS SELECT $x AS v", {}, "no value"),
        ("SELECT 1", {}, "only CREATE TABLE"),
        ("CREATE TEMP TABLE a AS SELECT * FROM read_parquet(['x', 'y'], hive_partitioning = false)", {}, "Spark SQL"),
        (
            "CREATE TEMP TABLE a AS SELECT * FROM k ASOF LEFT JOIN l ON l.uid = k.uid AND l.day > k.date",
            {},
            "later rows",
        ),
    ],
)
def test_what_cannot_be_translated_is_refused(sql: str, params: dict, message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        spark_statements(sql, params)
