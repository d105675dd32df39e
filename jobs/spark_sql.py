"""The aggregation's SQL (``jobs/sql``, written for DuckDB) as Spark SQL: one definition, two engines.

The statements are kept to what both engines mean the same way (date differences as
``date_diff``, sources as relations the engine names, signed 64-bit streak masks), so most of the
translation is sqlglot's. Two things sqlglot cannot carry over are done here: ``$name`` parameters
become typed literals, and DuckDB's ``ASOF`` joins (which Spark lacks, and which sqlglot drops
without a word) become an equivalent sort-based lookup. Whatever sqlglot cannot express in Spark
raises instead of being dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from churn.errors import AggregationError


def spark_statements(sql: str, params: Mapping[str, object] | None = None) -> list[tuple[str, str]]:
    """``(table, Spark SELECT)`` for each ``CREATE OR REPLACE TEMP TABLE table AS SELECT …`` in ``sql``."""
    out = []
    for statement in sqlglot.parse(sql, read="duckdb"):
        if statement is None:
            continue
        if not isinstance(statement, exp.Create) or statement.args.get("kind") != "TABLE":
            raise AggregationError(f"only CREATE TABLE … AS SELECT translates to Spark: {statement.sql()[:80]}")
        query = bind_parameters(statement.expression, params or {})
        query = rewrite_asof_joins(name_known_functions(query))
        try:
            text = query.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)
        except sqlglot.errors.UnsupportedError as e:
            raise AggregationError(f"{statement.this.name}: not expressible in Spark SQL: {e}") from e
        out.append((statement.this.name, text))
    return out


def bind_parameters(query: exp.Expression, params: Mapping[str, object]) -> exp.Expression:
    """``$name`` placeholders replaced by typed literals (Spark SQL has no named parameters here)."""

    def literal(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Placeholder):
            return node
        if node.name not in params:
            raise AggregationError(f"SQL parameter ${node.name} has no value")
        return _literal(params[node.name])

    return query.transform(literal)


def _literal(value: object) -> exp.Expression:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        # sessions run in UTC (the stores' timestamps are UTC)
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP"))
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))
    raise AggregationError(f"no SQL literal for {value!r}: the aggregation's parameters are dates and times")


_DUCKDB_FUNCTIONS: dict[str, type[exp.Func]] = {"EPOCH_US": exp.UnixMicros}
"""DuckDB functions sqlglot parses as unknown ones, and the expressions it writes in Spark."""


def name_known_functions(query: exp.Expression) -> exp.Expression:
    """Calls of the functions in ``_DUCKDB_FUNCTIONS`` as sqlglot's own expressions (``epoch_us``
    would otherwise reach Spark under DuckDB's name)."""

    def known(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and str(node.this).upper() in _DUCKDB_FUNCTIONS:
            return _DUCKDB_FUNCTIONS[str(node.this).upper()](this=node.expressions[0])
        return node

    return query.transform(known)


def rewrite_asof_joins(query: exp.Expression) -> exp.Expression:
    """Every ``ASOF [LEFT] JOIN`` replaced by a plain join on an equivalent lookup.

    ``b ASOF LEFT JOIN r ON r.k = b.k AND r.day < probe(b)`` takes, for each row of ``b``, the row
    of ``r`` with the same key and the latest ``day`` before the probe. Written portably: the
    distinct probes of ``b`` and the days of ``r`` are sorted together per key (a probe before a
    day equal to it for ``<``, after for ``<=``), a running max over that order gives each probe
    the latest day before it, and ``r`` is joined back on key and that day. Like DuckDB's, it
    assumes one ``r`` row per key and day. The probe may only use ``b``'s columns, ``b`` being the
    first relation of the FROM clause.
    """
    query = query.copy()
    for select in list(query.find_all(exp.Select)):
        joins = select.args.get("joins") or []
        if not any(_is_asof(j) for j in joins):
            continue
        base = select.args["from_"].this
        select.set("joins", [_asof_lookup(base, j) if _is_asof(j) else j for j in joins])
    left = [j for j in query.find_all(exp.Join) if _is_asof(j)]
    if left:
        raise AggregationError(f"ASOF join left untranslated: {left[0].sql()[:80]}")
    return query


def _is_asof(join: exp.Join) -> bool:
    return str(join.args.get("method") or "").upper() == "ASOF"


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    return [*_conjuncts(node.left), *_conjuncts(node.right)] if isinstance(node, exp.And) else [node]


def _tables(node: exp.Expression) -> set[str]:
    return {c.table for c in node.find_all(exp.Column)}


def _asof_lookup(base: exp.Expression, join: exp.Join) -> exp.Join:
    right = join.this
    r, b = right.alias_or_name, base.alias_or_name
    keys: list[tuple[str, exp.Expression]] = []
    day = probe = None
    strict = True
    for cond in _conjuncts(join.args["on"]):
        sides = (cond.left, cond.right) if isinstance(cond, exp.Binary) else ()
        if isinstance(cond, exp.EQ):
            ledger, other = sides if _tables(sides[0]) == {r} else sides[::-1]
            if not isinstance(ledger, exp.Column) or ledger.table != r or _tables(other) != {b}:
                raise AggregationError(f"ASOF key must be {r}.column = {b}.expression: {cond.sql()}")
            keys.append((ledger.name, other))
        elif isinstance(cond, exp.LT | exp.LTE | exp.GT | exp.GTE) and probe is None:
            # normalise to `ledger_day < probe` (or <=)
            ledger_left = _tables(sides[0]) == {r}
            ledger, other = sides if ledger_left else sides[::-1]
            if not isinstance(ledger, exp.Column) or _tables(other) != {b}:
                raise AggregationError(f"ASOF inequality must compare {r}.day with {b}'s columns: {cond.sql()}")
            below = isinstance(cond, exp.LT | exp.LTE) == ledger_left
            if not below:
                raise AggregationError(f"ASOF lookups of later rows are not supported: {cond.sql()}")
            strict = isinstance(cond, exp.LT | exp.GT)
            day, probe = ledger.name, other
        else:
            raise AggregationError(f"unsupported ASOF condition: {cond.sql()}")
    if not keys or probe is None:
        raise AggregationError(f"ASOF join needs keys and one inequality: {join.sql()}")
    probe_kind = 0 if strict else 2  # sorts before (strict) or after a ledger day equal to it
    k_out = ", ".join(f"{_duck(e)} AS __k{i}" for i, (_, e) in enumerate(keys))
    k_in = ", ".join(f"{r}.{name}" for name, _ in keys)
    k_cols = ", ".join(f"__k{i}" for i in range(len(keys)))
    back = " AND ".join(f"{r}.{name} = m.__k{i}" for i, (name, _) in enumerate(keys))
    on = " AND ".join(f"{r}.__k{i} = {_duck(e)}" for i, (_, e) in enumerate(keys))
    side = (join.args.get("side") or "").upper()
    lookup = f"""
        SELECT x FROM t {side} JOIN (
            SELECT {", ".join(f"m.__k{i}" for i in range(len(keys)))}, m.__probe, {r}.* FROM (
                SELECT {k_cols}, __probe, __kind,
                       max(CASE WHEN __kind = 1 THEN __probe END) OVER (
                           PARTITION BY {k_cols} ORDER BY __probe, __kind
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __day
                FROM (
                    SELECT DISTINCT {k_out}, {_duck(probe)} AS __probe, {probe_kind} AS __kind FROM {_duck(base)}
                    UNION ALL
                    SELECT {k_in}, {r}.{day}, 1 FROM {_duck(right)}
                ) AS __u
            ) AS m JOIN {_duck(right)} ON {back} AND {r}.{day} = m.__day
            WHERE m.__kind = {probe_kind}
        ) AS {r} ON {on} AND {r}.__probe = {_duck(probe)}
    """
    return sqlglot.parse_one(lookup, read="duckdb").args["joins"][0]


def _duck(node: exp.Expression) -> str:
    return node.sql(dialect="duckdb")


__all__ = ["bind_parameters", "name_known_functions", "rewrite_asof_joins", "spark_statements"]
