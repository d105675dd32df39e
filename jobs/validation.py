"""Validation gates: nothing downstream reads a batch until it passes them.

A batch is a folder with ``users/``, ``events/`` and ``payments/`` Parquet (any may be absent
except events). Batch-level checks (schema, empty, freshness) reject the whole batch; row-level
checks (nulls, ranges, duplicates, unknown users, ...) either reject it or, in quarantine mode,
keep the good rows and set the bad ones aside with their reason. Checks run as DuckDB SQL over
the Parquet files, so millions of rows validate without loading them into pandas.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from churn.layout import PARTITION_GLOB, partitions_glob
from churn.schema import CANONICAL_EVENT_TYPES, PAYMENT_STATUSES, PLANS, RAW_SCHEMAS
from churn.storage import duckdb_connect

MAX_EXAMPLES = 3
MAX_LISTED_VALUES = 20  # bad values named (with their counts) in a failed *_values check

UNKNOWN = "unknown"
"""The profile value of a user inferred from their first event or payment (no users row), and of
a profile column or a payment's plan that the imported files do not have."""
PROFILE_COLUMNS = ("plan", "country", "acquisition_channel", "device")

# Allowed values, the one place they are decided: (table, column) → values. Other string columns
# (country, acquisition_channel, device, payments.plan) are free-form and never gated.
ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("users", "plan"): (*PLANS, UNKNOWN),
    ("events", "event_type"): CANONICAL_EVENT_TYPES,
    ("payments", "status"): PAYMENT_STATUSES,
}


@dataclass
class CheckResult:
    table: str
    check: str
    failed_rows: int
    message: str
    examples: list[dict] = field(default_factory=list)
    row_level: bool = True

    @property
    def passed(self) -> bool:
        return self.failed_rows == 0


@dataclass
class ValidationReport:
    checks: list[CheckResult] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def batch_level_failures(self) -> list[CheckResult]:
        return [c for c in self.failures if not c.row_level]

    def render(self) -> str:
        lines = [f"validation: {'PASSED' if self.passed else 'FAILED'} ({self._rows()})"]
        for c in self.checks:
            mark = "ok  " if c.passed else "FAIL"
            lines.append(f"  [{mark}] {c.table}.{c.check}: {c.message}")
            for ex in c.examples[:MAX_EXAMPLES]:
                lines.append(f"         e.g. {ex}")
        return "\n".join(lines)

    def _rows(self) -> str:
        return ", ".join(f"{k}={v:,}" for k, v in self.rows.items())

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "checks": [
                {
                    "table": c.table,
                    "check": c.check,
                    "passed": c.passed,
                    "failed_rows": c.failed_rows,
                    "message": c.message,
                    "examples": c.examples,
                }
                for c in self.checks
            ],
        }


def _sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _values_rule(table: str, column: str) -> tuple[str, str, str]:
    allowed = ALLOWED_VALUES[(table, column)]
    return (f"{column}_values", f"{column} NOT IN {_sql_list(allowed)}", f"{column} not in {allowed}")


# Row-level rules per table: (check name, SQL predicate that is TRUE for a bad row, message).
# They run over ``prep_<table>``: the batch plus ``_signup`` (the user's signup time, NULL for an
# unknown user) and ``_dup`` (how many rows share the row's natural key).
ROW_RULES: dict[str, list[tuple[str, str, str]]] = {
    "users": [
        ("required_nulls", "user_id IS NULL OR signup_ts IS NULL OR plan IS NULL", "required column is null"),
        _values_rule("users", "plan"),
        ("future_timestamp", "signup_ts > $as_of", "signup_ts is in the future"),
        ("duplicates", "_dup > 1", "user_id appears more than once"),
    ],
    "events": [
        (
            "required_nulls",
            "user_id IS NULL OR event_ts IS NULL OR event_type IS NULL",
            "required column is null",
        ),
        _values_rule("events", "event_type"),
        ("negative_minutes", "minutes < 0", "minutes is negative"),
        ("future_timestamp", "event_ts > $as_of", "event_ts is in the future"),
        ("unknown_user", "_signup IS NULL", "event of a user not in users"),
        ("before_signup", "event_ts < _signup", "event before the user's signup"),
        ("duplicates", "_dup > 1", "duplicate event (same user, time, type, course)"),
    ],
    "payments": [
        (
            "required_nulls",
            "user_id IS NULL OR payment_ts IS NULL OR amount IS NULL OR status IS NULL",
            "required column is null",
        ),
        _values_rule("payments", "status"),
        ("negative_amount", "amount < 0", "amount is negative"),
        ("future_timestamp", "payment_ts > $as_of", "payment_ts is in the future"),
        ("unknown_user", "_signup IS NULL", "payment of a user not in users"),
        ("before_signup", "payment_ts < _signup", "payment before the user's signup"),
        ("duplicates", "_dup > 1", "duplicate payment"),
    ],
}


def parquet_glob(root: Path, table: str) -> str | None:
    """The glob that reads one raw table (flat file or date partitions), or None if absent."""
    base = root / table
    if (base / f"{table}.parquet").exists():
        return str(base / f"{table}.parquet")
    if any(base.glob(f"{PARTITION_GLOB}/*.parquet")):
        return partitions_glob(base)
    if any(base.glob("*.parquet")):
        return str(base / "*.parquet")
    return None


class BatchValidator:
    """Runs every gate over a batch folder; ``existing_users`` is the store already accepted."""

    def __init__(
        self,
        batch_dir: Path,
        *,
        as_of: dt.datetime,
        existing_raw: Path | None = None,
        freshness_max_hours: int = 0,
        duckdb_config: Mapping[str, str] | None = None,
    ) -> None:
        self.batch_dir = batch_dir
        self.as_of = as_of
        self.freshness_max_hours = freshness_max_hours
        roots = [batch_dir, *([existing_raw] if existing_raw is not None else [])]
        self.con = duckdb_connect(*roots, config=duckdb_config)
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")
        self.tables: list[str] = []
        for table in RAW_SCHEMAS:
            glob = parquet_glob(batch_dir, table)
            if glob is not None:
                self.con.execute(f"CREATE VIEW batch_{table} AS SELECT * FROM read_parquet('{glob}')")
                self.tables.append(table)
        sources = ["SELECT user_id, signup_ts FROM batch_users"] if "users" in self.tables else []
        if existing_raw is not None and (g := parquet_glob(existing_raw, "users")):
            sources.append(f"SELECT user_id, signup_ts FROM read_parquet('{g}')")
        known = (
            " UNION ALL ".join(sources) or "SELECT NULL::VARCHAR AS user_id, NULL::TIMESTAMPTZ AS signup_ts"
        )
        self.con.execute(f"CREATE VIEW known_users AS {known}")

    def run(self) -> ValidationReport:
        report = ValidationReport()
        if "events" not in self.tables:
            report.checks.append(
                CheckResult("events", "present", 1, "no events in the batch", row_level=False)
            )
            return report
        for table in self.tables:
            report.rows[table] = self.con.execute(f"SELECT count(*) FROM batch_{table}").fetchone()[0]
            schema_checks = self._schema_checks(table, report.rows[table])
            report.checks += schema_checks
            if any(not c.passed for c in schema_checks):
                continue  # row rules would fail on missing or mistyped columns
            report.checks += self._row_checks(table)
        report.checks.append(self._freshness())
        return report

    def _schema_checks(self, table: str, n_rows: int) -> list[CheckResult]:
        described = {r[0]: r[1] for r in self.con.execute(f"DESCRIBE batch_{table}").fetchall()}
        expected = RAW_SCHEMAS[table]
        missing = [f.name for f in expected if f.name not in described]
        wrong = [
            f"{f.name}: {described[f.name]} (want {_duck_type(f.type)})"
            for f in expected
            if f.name in described and not _compatible(described[f.name], _duck_type(f.type))
        ]
        out = [
            CheckResult(
                table,
                "non_empty",
                int(n_rows == 0),
                "batch has no rows" if n_rows == 0 else "rows present",
                row_level=False,
            ),
            CheckResult(
                table,
                "schema",
                len(missing) + len(wrong),
                "; ".join(
                    filter(
                        None,
                        [
                            f"missing columns {missing}" if missing else "",
                            f"wrong types {wrong}" if wrong else "",
                        ],
                    )
                )
                or "columns and types match",
                row_level=False,
            ),
        ]
        return out

    def _prepare(self, table: str) -> None:
        """``prep_<table>``: a view (nothing materialised) of the batch with ``_signup`` and ``_dup``.

        ``_dup`` comes from an aggregate of the natural key joined back only to the rows whose key
        repeats, so a clean batch costs one hash aggregate of the key columns rather than a window
        that partitions and materialises every column of every row.
        """
        keys = [k.strip() for k in DUPLICATE_KEYS[table].split(",")]
        on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM d.{k}" for k in keys)
        signup = "" if table == "users" else ", k._signup"
        join = (
            ""
            if table == "users"
            else (
                " LEFT JOIN (SELECT user_id, min(signup_ts) AS _signup FROM known_users GROUP BY user_id) k"
                " USING (user_id)"
            )
        )
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW prep_{table} AS SELECT t.*{signup}, coalesce(d._dup, 1) AS _dup"
            f" FROM batch_{table} t{join} LEFT JOIN (SELECT {', '.join(keys)}, count(*) AS _dup FROM batch_{table}"
            f" GROUP BY ALL HAVING count(*) > 1) d ON {on}"
        )

    def _row_checks(self, table: str) -> list[CheckResult]:
        """One pass counts every rule; examples are fetched only for the rules that failed."""
        self._prepare(table)
        rules = ROW_RULES[table]
        params = {"as_of": self.as_of}
        counts = self.con.execute(
            "SELECT "
            + ", ".join(f"count(*) FILTER (WHERE {_pred(p)})" for _, p, _ in rules)
            + f" FROM prep_{table}",
            params,
        ).fetchone()
        results = []
        for (name, predicate, message), n in zip(rules, counts, strict=True):
            examples = []
            if n:
                cur = self.con.execute(
                    f"SELECT * EXCLUDE (_dup{'' if table == 'users' else ', _signup'}) FROM prep_{table}"
                    f" WHERE {_pred(predicate)} LIMIT {MAX_EXAMPLES}",
                    params if "$as_of" in predicate else None,
                )
                cols = [d[0] for d in cur.description]
                examples = [{k: _plain(v) for k, v in zip(cols, row, strict=True)} for row in cur.fetchall()]
                if (column := name.removesuffix("_values")) != name:
                    message = f"{message}; found {self._bad_values(table, column, predicate)}"
            results.append(
                CheckResult(table, name, int(n), f"{n:,} rows: {message}" if n else "ok", examples)
            )
        return results

    def _bad_values(self, table: str, column: str, predicate: str) -> str:
        """``'teleport' (2), 'jump' (1)``: each offending value with its row count, most frequent first."""
        rows = self.con.execute(
            f"SELECT {column}, count(*) AS n FROM prep_{table} WHERE {_pred(predicate)}"
            f" GROUP BY 1 ORDER BY n DESC, 1 LIMIT {MAX_LISTED_VALUES + 1}"
        ).fetchall()
        more = len(rows) > MAX_LISTED_VALUES
        text = ", ".join(f"{v!r} ({n:,})" for v, n in rows[:MAX_LISTED_VALUES])
        return text + (" and more" if more else "")

    def _freshness(self) -> CheckResult:
        if not self.freshness_max_hours:
            return CheckResult("events", "freshness", 0, "disabled", row_level=False)
        newest = self.con.execute("SELECT max(event_ts) FROM batch_events").fetchone()[0]
        limit = self.as_of - dt.timedelta(hours=self.freshness_max_hours)
        stale = newest is None or newest < limit
        msg = f"newest event {newest} is older than {self.freshness_max_hours}h before {self.as_of:%Y-%m-%d %H:%M}"
        return CheckResult(
            "events", "freshness", int(stale), msg if stale else f"newest event {newest}", row_level=False
        )

    def split_sql(self, table: str) -> str:
        """The prepared rows with a ``reason`` column: the first rule each row breaks, NULL if none."""
        self._prepare(table)
        cases = " ".join(f"WHEN {_pred(p)} THEN '{name}'" for name, p, _ in ROW_RULES[table])
        drop = "_dup" if table == "users" else "_dup, _signup"
        return f"SELECT * EXCLUDE ({drop}), CASE {cases} ELSE NULL END AS reason FROM prep_{table}"


DUPLICATE_KEYS = {
    "users": "user_id",
    "events": "user_id, event_ts, event_type, course_id",
    "payments": "user_id, payment_ts, amount, status",
}


def _pred(predicate: str) -> str:
    return "(" + predicate.replace("$as_of", "$as_of::TIMESTAMPTZ") + ")"


def _duck_type(arrow_type) -> str:
    s = str(arrow_type)
    if s.startswith("timestamp"):
        return "TIMESTAMP WITH TIME ZONE"
    return {"string": "VARCHAR", "double": "DOUBLE", "int64": "BIGINT"}.get(s, s.upper())


def _compatible(actual: str, want: str) -> bool:
    if want == "DOUBLE":
        return actual in {"DOUBLE", "FLOAT", "BIGINT", "INTEGER", "DECIMAL"} or actual.startswith("DECIMAL")
    return actual == want


def _plain(v):
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, float) and v != v:
        return None
    return v
