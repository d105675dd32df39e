"""Daily per-user feature tables from raw events and payments, computed by DuckDB over Parquet
(or, with ``CHURN_ENGINE=spark``, by Spark from the same statements: ``jobs.spark_aggregate``).

Arrow: raw Parquet → ``features/<view>/date=D/part-0.parquet`` (one table per Feast feature view).
Builds are incremental: by default only dates after the newest built partition are computed, and
only the raw partitions those dates need are read (short windows + scope), so a daily run costs one
day's worth of work. The SQL lives in ``jobs/sql/*.sql``.

Long horizons and lifetime totals never read old raw events: they are differences of per-user
running totals (a ledger with one entry per active day), and an incremental build takes the
totals before its first date from the stored ``history`` rows (which hold them), adding only the
days it reads. A full build computes the same ledger from raw events alone; sums are exact
decimals, so both give identical rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from churn.errors import AggregationError
from churn.io import replace_dirs, staging_dir
from churn.layout import day_sql, parse_partition, partition_dates, partition_files
from churn.schema import (
    ENGAGEMENT_METRICS,
    FEATURE_SERVICES,
    FEATURE_VIEWS,
    FLOAT_METRICS,
    HISTORY_METRICS,
    LONG_WINDOWS,
    STREAK_DAYS,
    TREND_METRICS,
    TREND_PAIRS,
    WINDOWS,
    feature_table_schema,
)
from churn.settings import PREFIX, Settings
from churn.storage import DataPath, duckdb_connect, read_schema

SQL_DIR = Path(__file__).parent / "sql"
MAX_WINDOW = max(*WINDOWS, STREAK_DAYS)
"""Days of activity before a built date that its windows and streak sum up."""
STREAK_PERIOD = STREAK_DAYS + 1
"""Bit positions of the streak mask: a frame of ``STREAK_DAYS`` days never wraps onto itself."""
if 2 * STREAK_PERIOD > 63:
    raise ImportError(f"STREAK_DAYS={STREAK_DAYS}: a doubled streak mask must fit in a signed 64-bit integer")
CARRY_VIEW = "history"
"""The view whose stored rows hold the running totals an incremental build starts from."""
PAYMENT_METRICS = frozenset({"spend"})
"""Running totals taken from payments (read in full); the others come from events."""
ACTIVITY_METRICS = tuple(m for m in HISTORY_METRICS if m not in PAYMENT_METRICS)
BASE_VIEWS = FEATURE_SERVICES["churn_v1"]
"""Views written from ``feature_rows`` (short windows); the others from ``long_rows``."""


@dataclass(frozen=True)
class BuildResult:
    start: dt.date | None
    end: dt.date | None
    rows: int
    dates: int
    seconds: float = 0.0

    def summary(self) -> str:
        if self.start is None:
            return "features up to date: nothing to build"
        return f"built {self.rows:,} feature rows for {self.dates} dates {self.start}..{self.end}"


def _sql(name: str, **fmt: object) -> str:
    return (SQL_DIR / f"{name}.sql").read_text().format(**fmt)


PAYMENT_WINDOW = 30
"""Days of the ``payments`` view's window sums."""
if PAYMENT_WINDOW not in WINDOWS:
    raise ImportError(f"PAYMENT_WINDOW={PAYMENT_WINDOW} must be one of the short windows {WINDOWS}")


def _window_sql() -> dict[str, str]:
    """The generated parts of ``features.sql``: per-row window sums over the active days and the
    payment days in the window, then the feature columns (zero where none)."""
    source = {"active_days": "1", **{m: f"a.{m}" for m in ENGAGEMENT_METRICS if m != "active_days"}}
    sums, payment_sums, cols, select = [], [], [], []
    for w in WINDOWS:
        for m in ENGAGEMENT_METRICS:
            cast = "DOUBLE" if m in FLOAT_METRICS else "BIGINT"
            sums.append(f"           sum({source[m]}) FILTER (WHERE a.day >= k.date - {w}) AS {m}_{w}d")
            cols.append(f"           CAST(coalesce(a.{m}_{w}d, 0) AS {cast}) AS {m}_{w}d")
            select.append(f"    {m}_{w}d,")
    for name, src, cast in [
        ("payments_succeeded", "n_succeeded", "BIGINT"),
        ("payments_failed", "n_failed", "BIGINT"),
        ("payments_refunded", "n_refunded", "BIGINT"),
        ("amount_succeeded", "amt_succeeded", "DOUBLE"),
        ("amount_failed", "amt_failed", "DOUBLE"),
    ]:
        payment_sums.append(f"           sum(p.{src}) AS {name}_{PAYMENT_WINDOW}d")
        cols.append(f"           CAST(coalesce(p.{name}_{PAYMENT_WINDOW}d, 0) AS {cast}) AS {name}_{PAYMENT_WINDOW}d")
    return {
        "activity_window_columns": ",\n".join(sums),
        "payment_window_columns": ",\n".join(payment_sums),
        "window_columns": ",\n".join(cols),
        "select_columns": "\n".join(select),
        "max_window": str(max(WINDOWS)),
        "recent_days": str(MAX_WINDOW),
        "payment_window": str(PAYMENT_WINDOW),
    }


def days_since_sql(ts: str, date: str) -> str:
    """Days from timestamp ``ts`` to the start of date ``date``, rounded half up to four places.

    In whole microseconds and one division, so that DuckDB and Spark round the same way (their
    ``round`` of a double differ on ties).
    """
    micros = f"date_diff('microsecond', {ts}, CAST({date} AS TIMESTAMPTZ))"
    half, unit = 86_400_000_000 // 20_000, 86_400_000_000 // 10_000
    return f"floor(({micros} + {half}) / {unit}) / 10000"


def _ledger_type(metric: str) -> str:
    """Running totals are exact: decimals for minutes and amounts, integers for counts."""
    return "DECIMAL(38, 6)" if metric in FLOAT_METRICS else "BIGINT"


def _feature_type(metric: str) -> str:
    return "DOUBLE" if metric in FLOAT_METRICS else "BIGINT"


def _daily_source(metric: str) -> str:
    """The ``daily_activity`` expression a running total adds up (an active day counts once)."""
    return "1" if metric == "active_days" else f"a.{metric}"


def _ledger_sql() -> dict[str, str]:
    """Column lists of ``carried_totals.sql`` and ``activity_ledger.sql``, one per activity metric."""
    carried = [f"    CAST({m}_lifetime AS {_ledger_type(m)}) AS {m}" for m in ACTIVITY_METRICS]
    base = [f"           max({m}) AS {m}" for m in ACTIVITY_METRICS]
    fresh = [
        f"           CAST(coalesce(b.{m}, 0) + sum({_daily_source(m)}) OVER w AS {_ledger_type(m)}) AS {m}"
        for m in ACTIVITY_METRICS
    ]
    return {
        "carried_columns": ",\n".join(carried),
        "base_columns": ",\n".join(base),
        "fresh_columns": ",\n".join(fresh),
    }


def _empty_table_sql(table: str, columns: list[tuple[str, str]]) -> str:
    """``table`` with ``columns`` and no rows, written as a query both engines run."""
    cols = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in columns)
    return f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {cols} WHERE false"


def _empty_carried_sql() -> str:
    """``carried_totals`` with no rows: a build that reads every raw event carries nothing over."""
    return _empty_table_sql(
        "carried_totals", [("user_id", "VARCHAR"), ("day", "DATE"), *((m, _ledger_type(m)) for m in ACTIVITY_METRICS)]
    )


EMPTY_ACTIVITY = [
    ("user_id", "VARCHAR"), ("day", "DATE"), ("activity", "BIGINT"), ("logins", "BIGINT"),
    ("minutes", "DECIMAL(38, 6)"), ("course_views", "BIGINT"), ("quiz_attempts", "BIGINT"),
    ("completions", "BIGINT"), ("last_event_ts", "TIMESTAMPTZ"), ("last_login_ts", "TIMESTAMPTZ"),
]  # fmt: skip
"""``daily_activity``'s columns, for a span with no event partitions to read."""
EMPTY_PAYMENTS = [
    ("user_id", "VARCHAR"), ("day", "DATE"), ("n_succeeded", "BIGINT"), ("n_failed", "BIGINT"),
    ("n_refunded", "BIGINT"), ("amt_succeeded", "DECIMAL(38, 6)"), ("amt_failed", "DECIMAL(38, 6)"),
    ("last_payment_ts", "TIMESTAMPTZ"), ("last_failed_ts", "TIMESTAMPTZ"),
]  # fmt: skip
"""``daily_payments``'s columns, for a store with no payments yet."""


def _metric_windows() -> dict[str, tuple[int, ...]]:
    """Per running total, the windows some long-run feature takes as a difference of totals."""
    trend = {w for pair in TREND_PAIRS for w in pair}
    return {m: tuple(sorted({*LONG_WINDOWS, *(trend if m in TREND_METRICS else ())})) for m in HISTORY_METRICS}


def _long_sql() -> dict[str, str]:
    """The generated parts of ``long_features.sql``: lookups, window totals and feature columns.

    Each window of an activity total is one ASOF lookup ("totals before D - w"); only the windows
    some feature uses are looked up, since every lookup sorts all the rows being built. Payment
    totals are few per user: one join takes every window at once.
    """
    windows = _metric_windows()
    lookbacks = sorted({w for ws in windows.values() for w in ws})
    joins: list[str] = []
    for w in lookbacks:
        if any(w in windows[m] for m in ACTIVITY_METRICS):
            joins.append(f"    ASOF LEFT JOIN activity_totals a{w} ON a{w}.uid = k.uid AND a{w}.day < k.date - {w}")
    payments = [f"           max({c}) AS {c}" for c in ("succeeded", "failed", "refunded", "last_failed_ts")]
    for m in PAYMENT_METRICS:
        payments.append(f"           max({m}) AS {m}")
        payments += [f"           max({m}) FILTER (WHERE pt.day < k.date - {w}) AS {m}_before_{w}" for w in windows[m]]
    totals: list[str] = []
    for m, ws in windows.items():
        totals.append(f"           coalesce({'p' if m in PAYMENT_METRICS else 'n'}.{m}, 0) AS t_{m}")
        if m in PAYMENT_METRICS:
            totals += [f"           coalesce(p.{m}, 0) - coalesce(p.{m}_before_{w}, 0) AS w_{m}_{w}" for w in ws]
        else:
            totals += [f"           coalesce(n.{m}, 0) - coalesce(a{w}.{m}, 0) AS w_{m}_{w}" for w in ws]
    history = [f"    CAST(w_{m}_{w} AS {_feature_type(m)}) AS {m}_{w}d," for w in LONG_WINDOWS for m in HISTORY_METRICS]
    history += [f"    CAST(t_{m} AS {_feature_type(m)}) AS {m}_lifetime," for m in HISTORY_METRICS]
    # Per-day rates compared: zero activity over the longer window has no rate, so NULL (missing).
    ratios = [
        f"    CASE WHEN w_{m}_{b} > 0 THEN CAST(w_{m}_{a} AS DOUBLE) * {b} / (CAST(w_{m}_{b} AS DOUBLE) * {a}) END"
        f" AS {m}_ratio_{a}d_{b}d,"
        for a, b in TREND_PAIRS
        for m in TREND_METRICS
    ]
    return {
        "lookback_joins": "\n".join(joins),
        "payment_columns": ",\n".join(payments),
        "total_columns": ",\n".join(totals),
        "history_columns": "\n".join(history),
        "ratio_columns": "\n".join(ratios),
        "streak_lengths": _longest_run_sql("SELECT user_id, date, mask FROM streaks"),
        "streak_days": str(STREAK_DAYS),
        "streak_period": str(STREAK_PERIOD),
        "days_since_last_failed_payment": days_since_sql("last_failed_ts", "date"),
    }


def _longest_run_sql(source: str) -> str:
    """``source`` (with a BIGINT ``mask`` of ``STREAK_PERIOD`` bits) plus ``longest_streak``: its
    longest run of set bits.

    The mask is read circularly (bits of neighbouring days may wrap around), so it is doubled
    first; doubled, it still leaves the sign bit clear, so shifts mean the same in every engine.
    ``r_k`` marks where k set bits start; ``r_2k = r_k & (r_k >> k)``, and the length is found
    greedily from the largest power of two down, as in binary lifting. Each step is its own nested
    select: DuckDB would inline column aliases referring to one another and blow the expression up.
    """
    steps = [f"(mask | (mask << {STREAK_PERIOD})) AS r1"]
    powers = [1]
    while powers[-1] * 2 <= STREAK_DAYS:
        k = powers[-1]
        steps.append(f"r{k} & (r{k} >> {k}) AS r{2 * k}")
        powers.append(2 * k)
    steps.append("~CAST(0 AS BIGINT) AS c0, 0 AS n0")
    for i, k in enumerate(reversed(powers), 1):
        steps.append(f"c{i - 1} & (r{k} >> CAST(n{i - 1} AS INTEGER)) AS t{i}")
        steps.append(
            f"CASE WHEN t{i} <> 0 THEN t{i} ELSE c{i - 1} END AS c{i}, "
            f"n{i - 1} + CASE WHEN t{i} <> 0 THEN {k} ELSE 0 END AS n{i}"
        )
    sql = source
    for step in steps:
        sql = f"SELECT *, {step} FROM ({sql})"
    return f"SELECT *, n{len(powers)} AS longest_streak FROM ({sql})"


def _carried_history(settings: Settings, start: dt.date, first_event_day: dt.date) -> list[str] | None:
    """Stored ``history`` partitions that can stand in for every raw event before ``start``.

    They can when they run without a gap from the first date any build writes (at the latest the
    day after the first event) up to ``start - 1``: every active day before ``start - 1`` then left
    a stored row right after it with the totals through that day. Otherwise (fresh store, a first
    build from a later date, a missing day) ``None``: the build reads every raw event instead,
    slower but never wrong.
    """
    one_day = dt.timedelta(days=1)
    root = settings.layout.feature_view_dir(CARRY_VIEW)
    days = [d for d in partition_dates(root) if d < start]
    if not days or days[-1] != start - one_day or days[0] > first_event_day + one_day:
        return None
    if len(days) != (days[-1] - days[0]).days + 1:
        return None
    return [str(f) for f in partition_files(root, days)]


def _partition_files(root: Path, first: dt.date, last_exclusive: dt.date) -> list[str]:
    return [str(f) for f in partition_files(root, {d for d in partition_dates(root) if first <= d < last_exclusive})]


def build_features(
    settings: Settings, start_date: dt.date | None = None, end_date: dt.date | None = None
) -> BuildResult:
    """Compute feature partitions for dates ``start_date..end_date`` (inclusive).

    ``end_date`` defaults to the day after the newest event (features as of the end of the data);
    ``start_date`` defaults to the day after the newest built partition, or the first date with
    any history.
    """
    import time

    t0 = time.perf_counter()
    raw = settings.layout.raw_dir
    event_days = partition_dates(raw / "events")
    users_file = raw / "users" / "users.parquet"
    if not event_days or not users_file.exists():
        raise AggregationError(f"no raw data under {raw}: run `churn data generate` or `churn data import`")
    end = end_date or event_days[-1] + dt.timedelta(days=1)
    if start_date is None:
        # Resume after the view that is furthest behind: a build killed between views has swapped
        # in the new partitions of the first views only.
        built = [partition_dates(settings.layout.feature_view_dir(view)) for view in FEATURE_VIEWS]
        start = min(b[-1] for b in built) + dt.timedelta(days=1) if all(built) else event_days[0]
    else:
        start = start_date
    if start > end:
        return BuildResult(None, None, 0, 0, time.perf_counter() - t0)
    rows = dates = 0
    for span_start, span_end in build_spans(start, end, settings.build_chunk_days):
        r, d = _build_span(settings, span_start, span_end, event_days, users_file)
        rows, dates = rows + r, dates + d
    return BuildResult(start, end, rows, dates, time.perf_counter() - t0)


def build_spans(start: dt.date, end: dt.date, chunk_days: int) -> list[tuple[dt.date, dt.date]]:
    """``start..end`` cut into consecutive spans of at most ``chunk_days`` dates (0: one span).

    A site's first build covers its whole history; in one pass its memory grows with the history
    (every user in scope on every date at once). Built span by span, each span starts from the
    running totals the previous one stored, exactly as a daily build does, so memory is bounded by
    one span and the rows are the same (the incremental == full tests hold span by span).
    """
    if chunk_days <= 0:
        return [(start, end)]
    step = dt.timedelta(days=chunk_days)
    spans = []
    while start <= end:
        last = min(start + step - dt.timedelta(days=1), end)
        spans.append((start, last))
        start = last + dt.timedelta(days=1)
    return spans


class AggregationSession(Protocol):
    """Where a span's statements run: DuckDB in this process, or Spark (``jobs.spark_aggregate``)."""

    def relation(self, name: str, files: list[str]) -> str:
        """A FROM-clause relation over Parquet ``files`` (raw events, stored rows)."""
        ...

    def run(self, sql: str, params: dict[str, object] | None = None) -> None:
        """Run ``CREATE OR REPLACE TEMP TABLE … AS SELECT …`` statements."""
        ...

    def scalar(self, sql: str) -> int: ...

    def write_view(self, root: Path, view: str, table: str) -> None:
        """Publish one view's partitions (the columns of ``table``) atomically under ``root``."""
        ...

    def close(self) -> None: ...


def open_session(settings: Settings) -> AggregationSession:
    """The session ``settings.engine`` selects."""
    if settings.engine == "spark":
        from jobs.spark_aggregate import SparkAggregation

        return SparkAggregation(settings)
    return DuckDBAggregation(settings)


def _build_span(
    settings: Settings, start: dt.date, end: dt.date, event_days: list[dt.date], users_file: Path
) -> tuple[int, int]:
    """Build dates ``start..end`` (one pass); ``(rows, dates)`` written."""
    raw = settings.layout.raw_dir
    scope = settings.scope_days
    carried = _carried_history(settings, start, event_days[0])
    read_from = start - dt.timedelta(days=MAX_WINDOW + scope)
    if carried is None:  # no stored totals to start from: the ledger needs every event
        read_from = min(read_from, event_days[0])
    event_files = _partition_files(raw / "events", read_from, end)
    payment_files = _partition_files(raw / "payments", dt.date.min, end)
    session = open_session(settings)
    try:
        params = {"read_from": read_from, "end_date": end}
        if event_files:
            session.run(
                _sql("daily_activity", events=session.relation("events", event_files), event_day=day_sql("event_ts")),
                params,
            )
        else:
            session.run(_empty_table_sql("daily_activity", EMPTY_ACTIVITY))
        if payment_files:
            payments = session.relation("payments", payment_files)
            session.run(_sql("daily_payments", payments=payments, payment_day=day_sql("payment_ts")), {"end_date": end})
        else:
            session.run(_empty_table_sql("daily_payments", EMPTY_PAYMENTS))
        users = session.relation("users", [str(users_file)])
        session.run(
            _sql("scope_grid", users=users, scope_days=scope),
            # The grid holds only the rows being written: windows and streaks sum the active days
            # before a row, and recency is an ASOF lookup into the activity read (windows + scope).
            # A grid reaching back over the longest window made a daily build handle every user in
            # scope on each of those days, idle or not.
            {"grid_from": start, "end_date": end},
        )
        session.run(
            _sql(
                "features",
                users=users,
                **_window_sql(),
                days_since_last_activity=days_since_sql("la.last_event_ts", "w.date"),
                days_since_last_login=days_since_sql("la.last_login_ts", "w.date"),
                days_since_last_payment=days_since_sql("lp.last_payment_ts", "w.date"),
            ),
            {"out_from": start, "created": dt.datetime.now(dt.UTC)},
        )
        _build_long_rows(session, start, carried)
        rows = session.scalar("SELECT count(*) FROM feature_rows")
        dates = session.scalar("SELECT count(DISTINCT date) FROM feature_rows")
        for view in FEATURE_VIEWS:
            table = "feature_rows" if view in BASE_VIEWS else "long_rows"
            session.write_view(settings.layout.feature_view_dir(view), view, table)
    finally:
        session.close()
    return rows, dates


def _build_long_rows(session: AggregationSession, start: dt.date, carried: list[str] | None) -> None:
    """Ledgers of running totals, then ``long_rows`` for the rows of ``feature_rows``.

    With stored totals (``carried``) only the days from ``start - 1`` on come from raw events (the
    stored rows hold the totals through ``start - 2``); without, every day read does.
    """
    ledger = _ledger_sql()
    if carried:
        history = session.relation("history", carried)
        session.run(_sql("carried_totals", history=history, row_day=day_sql("event_timestamp"), **ledger))
        fresh_from = start - dt.timedelta(days=1)
    else:
        session.run(_empty_carried_sql())
        fresh_from = dt.date.min
    session.run(_sql("activity_ledger", **ledger), {"fresh_from": fresh_from})
    session.run(_sql("payment_ledger"))
    session.run(_sql("long_keys", activity_columns=", ".join(f"l.{m}" for m in ACTIVITY_METRICS)))
    session.run(_sql("long_features", **_long_sql()))


def publish_partitions(root: DataPath, view: str, written: DataPath) -> None:
    """Swap the ``date=`` folders an engine wrote under ``written`` into ``root``, once every file
    in them has the view's columns and types (Feast and DuckDB read both engines' files as one).
    Other entries (an engine's side files: Spark's checksums and markers) are not published.
    ``written`` is a local folder, or a staging prefix on ``root``'s object storage."""
    schema = feature_table_schema(view)
    entries = written.iterdir() if written.exists() else ()  # no rows, no folder
    parts = sorted((p for p in entries if p.is_dir() and parse_partition(p.name) is not None), key=lambda p: p.name)
    for part in parts:
        for file in part.iterdir():
            if not file.name.endswith(".parquet"):
                file.unlink()
                continue
            got = read_schema(file)
            if [(f.name, f.type) for f in got] != [(f.name, f.type) for f in schema]:
                raise AggregationError(f"{view}/{part.name}: wrote {got}, expected {schema}")
    replace_dirs([(part, root / part.name) for part in parts])


class DuckDBAggregation:
    """The default session: one in-process DuckDB connection per span."""

    def __init__(self, settings: Settings) -> None:
        self.con = duckdb_connect(settings.layout.raw_dir, settings.features_dir, config=settings.duckdb_config)
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET preserve_insertion_order = false")

    def relation(self, name: str, files: list[str]) -> str:
        literal = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        return f"read_parquet([{literal}], hive_partitioning = false)"

    def run(self, sql: str, params: dict[str, object] | None = None) -> None:
        import duckdb

        for statement in self.con.extract_statements(sql):
            names = statement.named_parameters
            if missing := names - set(params or {}):
                raise AggregationError(f"SQL parameters {sorted(missing)} have no value")
            try:
                self.con.execute(statement, {k: params[k] for k in names} if names and params else None)
            except duckdb.OutOfMemoryException as exc:
                limit = self.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
                raise AggregationError(
                    f"the build needs more than DuckDB's memory limit ({limit}) even spilling to disk: "
                    f"raise {PREFIX}DUCKDB_MEMORY_LIMIT or build fewer dates at once ({PREFIX}BUILD_CHUNK_DAYS); "
                    f"DuckDB said: {str(exc).splitlines()[0]}"
                ) from None

    def scalar(self, sql: str) -> int:
        return int(self.con.execute(sql).fetchone()[0])

    def write_view(self, root: Path, view: str, table: str) -> None:
        columns = ", ".join(feature_table_schema(view).names)
        with staging_dir(root) as tmp:
            self.con.execute(
                f"COPY (SELECT {columns}, date FROM {table}) TO '{tmp}' "
                "(FORMAT PARQUET, PARTITION_BY (date), FILENAME_PATTERN 'part-{i}', COMPRESSION zstd, "
                "OVERWRITE_OR_IGNORE)"
            )
            publish_partitions(root, view, tmp)

    def close(self) -> None:
        self.con.close()
