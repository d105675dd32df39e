"""Daily per-user feature tables from raw events and payments, computed by DuckDB over Parquet.

Arrow: raw Parquet → ``features/<view>/date=D/part-0.parquet`` (one table per Feast feature view).
Builds are incremental: by default only dates after the newest built partition are computed, and
only the raw partitions those dates need are read (windows + scope), so a daily run costs one
day's worth of work. The SQL lives in ``jobs/sql/*.sql``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb

from churn.errors import AggregationError
from churn.io import atomic_dir, replace_dir
from churn.layout import partition_dates, partition_files
from churn.schema import ENGAGEMENT_METRICS, FEATURE_VIEWS, WINDOWS, feature_table_schema
from churn.settings import Settings

SQL_DIR = Path(__file__).parent / "sql"
MAX_WINDOW = max(WINDOWS)




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


def _window_sql() -> tuple[str, str, str]:
    """Window column expressions, window definitions and the final select list."""
    cols, defs, select = [], [], []
    source = {"active_days": "active", **{m: m for m in ENGAGEMENT_METRICS if m != "active_days"}}
    for w in WINDOWS:
        defs.append(
            f"        w{w} AS (PARTITION BY user_id, island ORDER BY date "
            f"ROWS BETWEEN {w - 1} PRECEDING AND CURRENT ROW),"
        )
        for m in ENGAGEMENT_METRICS:
            cast = "DOUBLE" if m == "minutes" else "BIGINT"
            cols.append(f"           CAST(sum({source[m]}) OVER w{w} AS {cast}) AS {m}_{w}d,")
            select.append(f"    {m}_{w}d,")
    for name, src, cast in [
        ("payments_succeeded", "n_succeeded", "BIGINT"),
        ("payments_failed", "n_failed", "BIGINT"),
        ("payments_refunded", "n_refunded", "BIGINT"),
        ("amount_succeeded", "amt_succeeded", "DOUBLE"),
        ("amount_failed", "amt_failed", "DOUBLE"),
    ]:
        cols.append(f"           CAST(sum({src}) OVER w30 AS {cast}) AS {name}_30d,")
    return "\n".join(cols), "\n".join(defs), "\n".join(select)


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

    scope = settings.scope_days
    read_from = start - dt.timedelta(days=MAX_WINDOW + scope)
    event_files = _partition_files(raw / "events", read_from, end)
    payment_files = _partition_files(raw / "payments", dt.date.min, end)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    params = {"read_from": read_from, "end_date": end}
    if event_files:
        con.execute(_sql("daily_activity", events=_files_literal(event_files)), params)
    else:
        con.execute(
            "CREATE TEMP TABLE daily_activity (user_id VARCHAR, day DATE, logins BIGINT, minutes DOUBLE,"
            " course_views BIGINT, quiz_attempts BIGINT, completions BIGINT,"
            " last_event_ts TIMESTAMPTZ, last_login_ts TIMESTAMPTZ)"
        )
    if payment_files:
        con.execute(_sql("daily_payments", payments=_files_literal(payment_files)), {"end_date": end})
    else:
        con.execute(
            "CREATE TEMP TABLE daily_payments (user_id VARCHAR, day DATE, n_succeeded BIGINT, n_failed BIGINT,"
            " n_refunded BIGINT, amt_succeeded DOUBLE, amt_failed DOUBLE, last_payment_ts TIMESTAMPTZ)"
        )
    users_literal = str(users_file)
    con.execute(
        _sql("scope_grid", users=users_literal, scope_days=scope),
        # The grid must reach back as far as the events read (windows + scope): recency is a max over
        # the grid rows, so a grid clipped to the windows lost the last activity of users idle longer
        # than MAX_WINDOW days (NULL days_since_last_activity in incremental builds only).
        {"grid_from": read_from, "end_date": end},
    )
    window_columns, window_defs, select_columns = _window_sql()
    con.execute(
        _sql(
            "features",
            users=users_literal,
            window_columns=window_columns,
            window_defs=window_defs,
            select_columns=select_columns,
        ),
        {"out_from": start, "created": dt.datetime.now(dt.UTC)},
    )
    rows = con.execute("SELECT count(*) FROM feature_rows").fetchone()[0]
    dates = con.execute("SELECT count(DISTINCT date) FROM feature_rows").fetchone()[0]
    for view in FEATURE_VIEWS:
        _write_view(con, settings.layout.feature_view_dir(view), view)
    con.close()
    return BuildResult(start, end, rows, dates, time.perf_counter() - t0)


def _files_literal(files: list[str]) -> str:
    return ", ".join("'" + f.replace("'", "''") + "'" for f in files)


def _write_view(con: duckdb.DuckDBPyConnection, root: Path, view: str) -> None:
    """Write one view's partitions to a temp dir, check them, then swap each into place."""
    schema = feature_table_schema(view)
    cols = ", ".join(f.name for f in schema)
    root.mkdir(parents=True, exist_ok=True)

    def check(tmp: Path) -> None:
        got = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{tmp}/*/*.parquet', hive_partitioning=false)"
        )
        names = [r[0] for r in got.fetchall()]
        if names != [f.name for f in schema]:
            raise AggregationError(f"{view}: wrote columns {names}, expected {[f.name for f in schema]}")

    with atomic_dir(root / ".staging", validate=check) as tmp:
        con.execute(
            f"COPY (SELECT {cols}, date FROM feature_rows) TO '{tmp}' "
            "(FORMAT PARQUET, PARTITION_BY (date), FILENAME_PATTERN 'part-{i}', COMPRESSION zstd, "
            "OVERWRITE_OR_IGNORE)"
        )
    staging = root / ".staging"
    try:
        for part in sorted(staging.iterdir()):
            replace_dir(part, root / part.name)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
