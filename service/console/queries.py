"""The console's DuckDB reads of the batch outputs: the at-risk table, its CSV and a user's daily scores.

Everything here is blocking and runs in the console's own worker threads (the controller hands every
call, and every streamed CSV chunk, to them): DuckDB releases the GIL while it scans, so ``/predict``
keeps its event loop.

Scale: the newest ``predictions/date=D/predictions.parquet`` may hold a million users. A page is one
``ORDER BY ... LIMIT/OFFSET`` query over the Parquet file (DuckDB's top-N sort, no full
materialisation) plus one ``count(*)`` under the same filter; plan and country come from
``raw/users/users.parquet`` joined by ``user_id``, but only when a filter or the sort needs them,
otherwise they are looked up for the page's rows alone. Nothing of the file is loaded into pandas.

SQL is built from whitelists only: the sort column comes from :data:`SORTS` (a request naming any
other is refused with :class:`BadQuery`, a 400), the direction is ``ASC``/``DESC``, and filter values
are bound parameters checked against the values that exist (:class:`FilterOptions`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from churn.layout import PREDICTIONS_PARQUET, partition_dates
from churn.policies import TIERS
from churn.schema import ENTITY_KEY
from churn.settings import Settings
from churn.storage import DataPath, duckdb_connect, read_schema, signature

TOP_K = 3
FACTOR_COLUMNS = tuple(f"factor_{i}{suffix}" for i in range(1, TOP_K + 1) for suffix in ("", "_value", "_contribution"))
BASE_COLUMNS = ("churn_probability", "risk_tier", "recommended_action")
USER_COLUMNS = ("plan", "country")
FILTERS = ("tier", "plan", "country", "action")
"""Query parameter names of the at-risk filters (the form's select names)."""

TIER_ORDER = "CASE p.risk_tier " + " ".join(f"WHEN '{t}' THEN {i}" for i, t in enumerate(TIERS)) + " END"
SORTS: dict[str, str] = {
    "churn_probability": "p.churn_probability",
    "user_id": f"p.{ENTITY_KEY}",
    "risk_tier": TIER_ORDER,
    "recommended_action": "p.recommended_action",
    "plan": "u.plan",
    "country": "u.country",
}
"""Sortable column (the ``sort`` parameter, the headers' ``data-col``) → its SQL expression."""
DIRECTIONS = {"asc": "ASC", "desc": "DESC"}
DEFAULT_SORT, DEFAULT_DIRECTION = "churn_probability", "desc"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
HISTORY_DAYS = 30
DUCKDB_THREADS = 1
"""Per console query: the API shares its cores with /predict (measured: benchmarks/console.py)."""
CSV_BATCH_ROWS = 50_000
COUNT_CACHE_SIZE = 512
CONNECTION_MAX_AGE_S = 600.0
"""A fresh base connection after this long (an object-store secret holds credentials that expire)."""


class BadQuery(ValueError):
    """A parameter outside its whitelist or bounds (→ 400 with this message)."""


@dataclass(frozen=True)
class AtRiskQuery:
    """One at-risk request: page, sort and filters (``None`` = no filter)."""

    page: int = 1
    size: int = DEFAULT_PAGE_SIZE
    sort: str = DEFAULT_SORT
    direction: str = DEFAULT_DIRECTION
    tier: str | None = None
    plan: str | None = None
    country: str | None = None
    action: str | None = None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def filters(self) -> dict[str, str]:
        return {k: v for k in FILTERS if (v := getattr(self, k)) is not None}

    @property
    def needs_users(self) -> bool:
        """Plan or country take part in the filter or the sort: the users table must be joined."""
        return self.plan is not None or self.country is not None or self.sort in USER_COLUMNS

    def params(self, **changes: Any) -> dict[str, str]:
        """Query parameters reproducing this request (with ``changes``), for links."""
        values = {
            "page": self.page,
            "size": self.size,
            "sort": self.sort,
            "dir": self.direction,
            **self.filters,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v is not None and v != ""}


@dataclass(frozen=True)
class FilterOptions:
    """The values each filter accepts: what exists in the data (and the configured actions)."""

    tiers: tuple[str, ...] = TIERS
    actions: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()

    def allowed(self, name: str) -> tuple[str, ...]:
        return {"tier": self.tiers, "action": self.actions, "plan": self.plans, "country": self.countries}[name]


def parse_query(
    options: FilterOptions,
    *,
    page: int = 1,
    size: int = DEFAULT_PAGE_SIZE,
    sort: str | None = None,
    direction: str | None = None,
    **filters: str | None,
) -> AtRiskQuery:
    """Check every parameter against its whitelist; :class:`BadQuery` names the first bad one."""
    if page < 1:
        raise BadQuery(f"page must be at least 1, got {page}")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise BadQuery(f"size must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    sort = sort or DEFAULT_SORT
    if sort not in SORTS:
        raise BadQuery(f"unknown sort column {sort!r}: one of {', '.join(SORTS)}")
    direction = (direction or DEFAULT_DIRECTION).lower()
    if direction not in DIRECTIONS:
        raise BadQuery(f"unknown sort direction {direction!r}: asc or desc")
    chosen: dict[str, str | None] = {}
    for name, value in filters.items():
        if name not in FILTERS:
            raise BadQuery(f"unknown filter {name!r}: one of {', '.join(FILTERS)}")
        if value is None or value == "":
            chosen[name] = None
            continue
        allowed = options.allowed(name)
        if value not in allowed:
            shown = ", ".join(allowed) if allowed else "none available"
            raise BadQuery(f"unknown {name} {value!r}: one of {shown}")
        chosen[name] = value
    return AtRiskQuery(page=page, size=size, sort=sort, direction=direction, **chosen)  # type: ignore[arg-type]


# --- SQL -------------------------------------------------------------------------------------------
def sql_path(path: DataPath) -> str:
    """A path as a quoted SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


@dataclass(frozen=True)
class Sources:
    """What one at-risk query reads: the day's predictions and, when present, the users table."""

    predictions: DataPath
    users: DataPath | None
    columns: frozenset[str] = field(default_factory=frozenset)
    """Columns the predictions file has (older or hand-made files may lack the factor columns)."""

    def column(self, name: str) -> str:
        return f"p.{name}" if name in self.columns else "NULL"


def _where(q: AtRiskQuery) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for name, column in (("tier", "p.risk_tier"), ("action", "p.recommended_action"), ("plan", "u.plan"),
                         ("country", "u.country")):  # fmt: skip
        value = getattr(q, name)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _from(src: Sources, join_users: bool) -> str:
    out = f"read_parquet({sql_path(src.predictions)}) AS p"
    if join_users:
        if src.users is None:
            raise BadQuery("plan and country are unavailable: there is no users table (raw/users/users.parquet)")
        out += f" LEFT JOIN read_parquet({sql_path(src.users)}) AS u ON u.{ENTITY_KEY} = p.{ENTITY_KEY}"
    return out


def order_by(q: AtRiskQuery) -> str:
    """The ORDER BY clause: a whitelisted expression, then user_id so pages never overlap."""
    if q.sort not in SORTS or q.direction not in DIRECTIONS:
        raise BadQuery(f"unknown sort {q.sort!r} {q.direction!r}")
    tie = f", p.{ENTITY_KEY} ASC" if q.sort != "user_id" else ""
    return f" ORDER BY {SORTS[q.sort]} {DIRECTIONS[q.direction]} NULLS LAST{tie}"


def select_columns(src: Sources, join_users: bool) -> str:
    cols = [f"p.{ENTITY_KEY} AS {ENTITY_KEY}"]
    cols += [f"{src.column(c)} AS {c}" for c in BASE_COLUMNS]
    cols += [f"{'u.' + c if join_users else 'NULL'} AS {c}" for c in USER_COLUMNS]
    cols += [f"{src.column(c)} AS {c}" for c in FACTOR_COLUMNS]
    return ", ".join(cols)


def page_sql(q: AtRiskQuery, src: Sources) -> tuple[str, list[Any]]:
    join = q.needs_users
    where, params = _where(q)
    sql = f"SELECT {select_columns(src, join)} FROM {_from(src, join)}{where}{order_by(q)} LIMIT ? OFFSET ?"
    return sql, [*params, q.size, q.offset]


def count_sql(q: AtRiskQuery, src: Sources) -> tuple[str, list[Any]]:
    where, params = _where(q)
    join = q.plan is not None or q.country is not None
    return f"SELECT count(*) FROM {_from(src, join)}{where}", params


def export_sql(q: AtRiskQuery, src: Sources) -> tuple[str, list[Any]]:
    """Every row of the filter, in the page's order (no LIMIT), plan and country joined when known."""
    join = src.users is not None
    where, params = _where(q)
    return f"SELECT {select_columns(src, join)} FROM {_from(src, join)}{where}{order_by(q)}", params


# --- running them ------------------------------------------------------------------------------------
@dataclass
class AtRiskPage:
    day: dt.date
    query: AtRiskQuery
    total: int
    rows: list[dict[str, Any]]
    seconds: float

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.size))


@dataclass
class DayScore:
    day: dt.date
    churn_probability: float
    risk_tier: str | None
    recommended_action: str | None
    model_version: str | None


class ConsoleQueries:
    """DuckDB over the data directory (local or ``s3://``); one instance per app, thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layout = settings.layout
        self._lock = threading.Lock()
        self._base: Any = None
        self._base_at = 0.0
        self._cache: dict[tuple[str, Any], Any] = {}
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str | None, int]] = {}

    # --- connections -------------------------------------------------------------------------------
    def cursor(self) -> Any:
        """A cursor of the shared in-memory database (object-storage access set up once)."""
        with self._lock:
            if self._base is None or time.monotonic() - self._base_at > CONNECTION_MAX_AGE_S:
                con = duckdb_connect(self.settings.data_dir)
                con.execute("SET enable_progress_bar = false")
                con.execute(f"SET threads = {DUCKDB_THREADS}")
                old, self._base, self._base_at = self._base, con, time.monotonic()
                if old is not None:
                    with contextlib.suppress(Exception):  # cursors still reading keep the database alive
                        old.close()
            return self._base.cursor()

    def _cached(self, key: str, path: DataPath, build: Any) -> Any:
        """``build()``, recomputed only when the file at ``path`` changes (its signature)."""
        sig = signature(path)
        hit = self._cache.get((key, str(path)))
        if hit is not None and hit[0] == sig:
            return hit[1]
        value = build()
        self._cache[(key, str(path))] = (sig, value)
        return value

    # --- where things are ------------------------------------------------------------------------------
    def scoring_dates(self) -> list[dt.date]:
        """Days with a predictions file, oldest first."""
        root = self.layout.predictions_dir
        return [d for d in partition_dates(root) if (self.layout.predictions(d) / PREDICTIONS_PARQUET).exists()]

    def latest_day(self) -> dt.date | None:
        root = self.layout.predictions_dir
        for d in reversed(partition_dates(root)):
            if (self.layout.predictions(d) / PREDICTIONS_PARQUET).exists():
                return d
        return None

    def sources(self, day: dt.date) -> Sources:
        path = self.layout.predictions(day) / PREDICTIONS_PARQUET
        columns = self._cached("schema", path, lambda: frozenset(read_schema(path).names))
        users = self.layout.users_file
        return Sources(path, users if users.exists() else None, columns)

    # --- filters -----------------------------------------------------------------------------------------
    def options(self, src: Sources) -> FilterOptions:
        configured = [a for a in dict.fromkeys(self.settings.intervention_map.values()) if a]
        present = self._cached(
            "actions", src.predictions, lambda: self._distinct(src.predictions, "recommended_action")
        )
        actions = tuple(dict.fromkeys([*configured, *present]))
        plans: tuple[str, ...] = ()
        countries: tuple[str, ...] = ()
        if src.users is not None:
            users = src.users
            plans = self._cached("plans", users, lambda: self._distinct(users, "plan"))
            countries = self._cached("countries", users, lambda: self._distinct(users, "country"))
        return FilterOptions(TIERS, actions, plans, countries)

    def _distinct(self, path: DataPath, column: str) -> tuple[str, ...]:
        cur = self.cursor()
        try:
            names = [d[0] for d in cur.execute(f"SELECT * FROM read_parquet({sql_path(path)}) LIMIT 0").description]
            if column not in names:
                return ()
            source = f"read_parquet({sql_path(path)})"
            rows = cur.execute(
                f'SELECT DISTINCT "{column}" FROM {source} WHERE "{column}" IS NOT NULL ORDER BY 1'
            ).fetchall()
        finally:
            cur.close()
        return tuple(str(r[0]) for r in rows)

    def tier_counts(self, src: Sources) -> dict[str, int]:
        def build() -> dict[str, int]:
            cur = self.cursor()
            try:
                rows = cur.execute(
                    f"SELECT risk_tier, count(*) FROM read_parquet({sql_path(src.predictions)}) GROUP BY 1"
                ).fetchall()
            finally:
                cur.close()
            found = {str(t): int(n) for t, n in rows}
            return {t: found.get(t, 0) for t in reversed(TIERS)}

        return self._cached("tiers", src.predictions, build)

    # --- the table -------------------------------------------------------------------------------------------
    def page(self, day: dt.date, src: Sources, q: AtRiskQuery) -> AtRiskPage:
        t0 = time.perf_counter()
        cur = self.cursor()
        try:
            total = self._count(cur, src, q)
            sql, params = page_sql(q, src)
            result = cur.execute(sql, params)
            names = [d[0] for d in result.description]
            rows = [dict(zip(names, r, strict=True)) for r in result.fetchall()]
            if rows and not q.needs_users and src.users is not None:
                self._attach_users(cur, src.users, rows)
        finally:
            cur.close()
        return AtRiskPage(day, q, total, rows, time.perf_counter() - t0)

    def _count(self, cur: Any, src: Sources, q: AtRiskQuery) -> int:
        """Rows under the filter: remembered per file version and filter (paging and sorting reuse it)."""
        key = (str(src.predictions), tuple(sorted(q.filters.items())))
        sig = signature(src.predictions)
        hit = self._counts.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        sql, params = count_sql(q, src)
        total = int(cur.execute(sql, params).fetchone()[0])
        if len(self._counts) >= COUNT_CACHE_SIZE:
            self._counts.clear()
        self._counts[key] = (sig, total)
        return total

    @staticmethod
    def _attach_users(cur: Any, users: DataPath, rows: list[dict[str, Any]]) -> None:
        """Plan and country of the page's users only (a page is at most MAX_PAGE_SIZE rows)."""
        ids = [r[ENTITY_KEY] for r in rows]
        found = cur.execute(
            f"SELECT {ENTITY_KEY}, plan, country FROM read_parquet({sql_path(users)}) "
            f"WHERE {ENTITY_KEY} IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall()
        by_id = {u: (plan, country) for u, plan, country in found}
        for r in rows:
            r["plan"], r["country"] = by_id.get(r[ENTITY_KEY], (None, None))

    def export_csv(self, src: Sources, q: AtRiskQuery) -> Iterator[bytes]:
        """The whole filter as CSV, one chunk per record batch (a generator: pulled chunk by chunk)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        sql, params = export_sql(q, src)
        cur = self.cursor()
        try:
            reader = cur.execute(sql, params).to_arrow_reader(CSV_BATCH_ROWS)
            header = True
            for batch in reader:
                buf = io.BytesIO()
                pacsv.write_csv(
                    pa.Table.from_batches([batch]),
                    buf,
                    write_options=pacsv.WriteOptions(include_header=header, quoting_style="needed"),
                )
                header = False
                yield buf.getvalue()
            if header:  # no rows: the header alone
                yield (",".join(reader.schema.names) + "\n").encode()
        finally:
            cur.close()

    # --- one user ---------------------------------------------------------------------------------------------
    def user_history(self, user_id: str, days: int = HISTORY_DAYS) -> list[DayScore]:
        """The user's score on each of the last ``days`` scoring days that scored them, oldest first."""
        dates = self.scoring_dates()[-days:]
        if not dates:
            return []
        files = ", ".join(sql_path(self.layout.predictions(d) / PREDICTIONS_PARQUET) for d in dates)
        cur = self.cursor()
        try:
            rows = cur.execute(
                f"SELECT date, churn_probability, risk_tier, recommended_action, "
                f"{'model_version' if self._has_model_version(dates) else 'NULL'} "
                f"FROM read_parquet([{files}], hive_partitioning = true, union_by_name = true) "
                f"WHERE {ENTITY_KEY} = ? ORDER BY date",
                [user_id],
            ).fetchall()
        finally:
            cur.close()
        return [DayScore(_as_date(d), float(p), t, a, v) for d, p, t, a, v in rows]

    def _has_model_version(self, dates: list[dt.date]) -> bool:
        path = self.layout.predictions(dates[-1]) / PREDICTIONS_PARQUET
        return "model_version" in self._cached("schema", path, lambda: frozenset(read_schema(path).names))

    def scored_row(self, day: dt.date, user_id: str) -> dict[str, Any] | None:
        """The user's row of ``day``'s predictions (factors included), or None."""
        src = self.sources(day)
        cur = self.cursor()
        try:
            result = cur.execute(
                f"SELECT {select_columns(src, False)} FROM {_from(src, False)} WHERE p.{ENTITY_KEY} = ?", [user_id]
            )
            names = [d[0] for d in result.description]
            row = result.fetchone()
        finally:
            cur.close()
        return dict(zip(names, row, strict=True)) if row else None

    def user_profile(self, user_id: str) -> dict[str, Any] | None:
        users = self.layout.users_file
        if not users.exists():
            return None
        cur = self.cursor()
        try:
            result = cur.execute(f"SELECT * FROM read_parquet({sql_path(users)}) WHERE {ENTITY_KEY} = ?", [user_id])
            names = [d[0] for d in result.description]
            row = result.fetchone()
        finally:
            cur.close()
        return dict(zip(names, row, strict=True)) if row else None


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))
