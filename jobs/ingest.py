"""Getting data into the raw store: synthetic generation or a site's own event log.

Arrow: input files → staging batch (normalised to the raw schemas, event names mapped to the
canonical types, unknown users inferred) → validation gates → raw store. Both paths stage first and
only touch ``raw/`` after the batch passed, so a bad batch never overwrites or loses good data.
Imports merge into the store partition by partition (each swap is atomic); generation replaces
the whole store. Every step over rows is DuckDB SQL over the staged Parquet, never a Python loop.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from churn import errors
from churn.io import atomic_dir, replace_dir, replace_dirs, staging_dir, write_json_atomic
from churn.layout import PARTITION_KEY, day_sql, partition_dates, partition_dir
from churn.schema import GENERIC_EVENT_TYPE, RAW_SCHEMAS, RAW_TIME_COLUMN
from churn.settings import Settings
from churn.storage import DataPath, duckdb_connect
from jobs.event_map import EventMap, Resolution
from jobs.generate import GenerateResult, generate
from jobs.validation import (
    PROFILE_COLUMNS,
    UNKNOWN,
    BatchValidator,
    CheckResult,
    ValidationReport,
    parquet_glob,
)

# Common alternate column names in exported logs → our schema.
COLUMN_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "users": {
        "user_id": ("customer_id", "userid", "uid", "user", "customer"),
        "signup_ts": ("signup_date", "signup_at", "signup_time", "created_at", "registered_at", "timestamp"),
        "acquisition_channel": ("channel", "source", "utm_source"),
        "device": ("device_type", "platform"),
    },
    "events": {
        "user_id": ("customer_id", "userid", "uid", "user", "customer"),
        "event_ts": ("timestamp", "ts", "event_time", "time", "occurred_at", "created_at", "datetime"),
        "event_type": ("event", "type", "action", "event_name"),
        "course_id": ("course", "courseid", "item_id"),
        "minutes": ("duration", "duration_minutes", "watch_minutes", "minutes_watched"),
    },
    "payments": {
        "user_id": ("customer_id", "userid", "uid", "user", "customer"),
        "payment_ts": ("timestamp", "ts", "paid_at", "payment_time", "payment_date", "created_at"),
        "amount": ("amount_usd", "value", "price", "total"),
        "status": ("payment_status", "state", "result"),
    },
}
OPTIONAL_COLUMNS = {"course_id", "minutes", "country", "acquisition_channel", "device", "plan"}
# Optional columns a file may lack that are stored as ``unknown`` rather than NULL.
UNKNOWN_IF_ABSENT = {"users": set(PROFILE_COLUMNS), "payments": {"plan"}}
PARTITIONED = ("events", "payments")


class IngestError(errors.IngestError):
    """The batch was rejected; ``report`` says which gate failed and on which rows."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ImportResult:
    report: ValidationReport
    accepted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_dir: Path | None = None
    inferred_users: int = 0  # users created from their first event or payment
    event_types: Resolution = field(default_factory=Resolution)

    def render(self) -> str:
        """The import report: rows accepted, what the event map did, how many users were inferred."""
        lines = ["import: accepted " + ", ".join(f"{t}={n:,}" for t, n in self.accepted.items())]
        if self.quarantined:
            lines[0] += "; quarantined " + ", ".join(f"{t}={n:,}" for t, n in self.quarantined.items())
        tr = self.event_types.translation
        if self.event_types.mapped:
            lines.append(
                "  event types mapped: "
                + ", ".join(
                    f"{s!r} → {tr[s]} ({n:,})"
                    for s, n in sorted(self.event_types.mapped.items(), key=lambda kv: (-kv[1], kv[0]))
                )
            )
        kept = {s: n for s, n in self.event_types.unmapped.items() if tr.get(s) == GENERIC_EVENT_TYPE}
        if kept:
            lines.append(f"  unmapped event types kept as {GENERIC_EVENT_TYPE}: " + _counts(kept))
        refused = {s: n for s, n in self.event_types.unmapped.items() if s not in tr}
        if refused:
            lines.append("  unmapped event types quarantined: " + _counts(refused))
        lines.append(
            f"  users inferred from activity: {self.inferred_users:,}"
            + (
                f" (signup = first event or payment; {', '.join(PROFILE_COLUMNS)} = {UNKNOWN})"
                if self.inferred_users
                else ""
            )
        )
        return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return Resolution(unmapped=counts).unmapped_summary()


def _connect(*roots: DataPath, config: Mapping[str, str]) -> duckdb.DuckDBPyConnection:
    con = duckdb_connect(*roots, config=config)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def _reader(path: Path) -> str:
    p = str(path).replace("'", "''")
    if path.suffix.lower() in {".parquet", ".pq"} or path.is_dir():
        return f"read_parquet('{p}')"
    if path.suffix.lower() in {".csv", ".gz", ".tsv"}:
        return f"read_csv('{p}', header = true, all_varchar = true)"
    raise IngestError(f"{path}: unsupported file type (use .csv or .parquet)")


_EVENT_TYPE_SLOT = "<event_type>"
MAX_CASE_BRANCHES = 200  # event names rewritten by a CASE; more go through a join


def _literal(value: str) -> str:
    """A SQL string literal (event names come from the user's file)."""
    return "'" + value.replace("'", "''") + "'"


def _normalise(
    con: duckdb.DuckDBPyConnection, table: str, src: Path, out: Path, event_map: EventMap | None = None
) -> tuple[CheckResult, Resolution]:
    """Rename alias columns, cast to the raw schema, map event names, write Parquet; report type errors.

    For events, the type check also counts the rows of each distinct event type (the same scan);
    ``event_map`` decides those few names in Python, and the COPY rewrites the rows with a join
    against the resulting translation table. Unmapped names are left as they are for the
    ``event_type_values`` gate, or become ``activity`` under ``unmapped="activity"``.
    """
    if not src.exists():
        raise IngestError(f"{src}: no such file")
    rel = con.sql(f"SELECT * FROM {_reader(src)}")
    have = {c.lower(): c for c in rel.columns}
    select, missing, casts = [], [], []
    type_col = None
    for f in RAW_SCHEMAS[table]:
        col = have.get(f.name) or next(
            (have[a] for a in COLUMN_ALIASES[table].get(f.name, ()) if a in have), None
        )
        duck = (
            "TIMESTAMPTZ"
            if str(f.type).startswith("timestamp")
            else {"string": "VARCHAR"}.get(str(f.type), "DOUBLE")
        )
        if col is None:
            if f.name in UNKNOWN_IF_ABSENT.get(table, ()):
                select.append(f"'{UNKNOWN}'::VARCHAR AS {f.name}")
            elif f.name in OPTIONAL_COLUMNS:
                select.append(f"NULL::{duck} AS {f.name}")
            else:
                missing.append(f.name)
            continue
        if table == "events" and f.name == "event_type":
            type_col = col
            select.append(_EVENT_TYPE_SLOT)  # filled in once the batch's distinct types are known
        else:
            select.append(f'TRY_CAST(s."{col}" AS {duck}) AS {f.name}')
        casts.append((f.name, col, duck))
    if missing:
        return CheckResult(
            table,
            "schema",
            len(missing),
            f"missing required columns {missing} in {src.name}",
            row_level=False,
        ), Resolution()
    bad = " OR ".join(f'("{c}" IS NOT NULL AND TRY_CAST("{c}" AS {d}) IS NULL)' for _, c, d in casts)
    resolution = Resolution()
    if type_col is not None:  # one scan: bad rows, and the rows of each distinct event type
        by_type = con.execute(
            f'SELECT TRY_CAST("{type_col}" AS VARCHAR), count(*), count(*) FILTER (WHERE {bad})'
            f" FROM {_reader(src)} GROUP BY 1"
        ).fetchall()
        n_bad = sum(r[2] for r in by_type)
        resolution = (event_map or EventMap()).resolve({r[0]: r[1] for r in by_type})
    else:
        n_bad = con.execute(f"SELECT count(*) FROM {_reader(src)} WHERE {bad}").fetchone()[0]
    if n_bad:
        ex = con.execute(f"SELECT * FROM {_reader(src)} WHERE {bad} LIMIT 3").fetchall()
        return CheckResult(
            table,
            "types",
            int(n_bad),
            f"{n_bad:,} rows have values of the wrong type",
            [dict(zip(rel.columns, map(str, r), strict=True)) for r in ex],
            row_level=False,
        ), resolution
    source = f"{_reader(src)} AS s"
    if type_col is not None:
        raw_type = f'TRY_CAST(s."{type_col}" AS VARCHAR)'
        translation = resolution.translation
        if 0 < len(translation) <= MAX_CASE_BRANCHES:  # a CASE costs next to nothing per row
            whens = " ".join(f"WHEN {_literal(k)} THEN {_literal(v)}" for k, v in translation.items())
            raw_type = f"CASE {raw_type} {whens} ELSE {raw_type} END"
        elif translation:  # many names: a hash join against the translation table
            con.execute("CREATE OR REPLACE TEMP TABLE _churn_event_map (src VARCHAR, canonical VARCHAR)")
            con.executemany("INSERT INTO _churn_event_map VALUES (?, ?)", list(translation.items()))
            source += f" LEFT JOIN _churn_event_map m ON {raw_type} = m.src"
            raw_type = f"coalesce(m.canonical, {raw_type})"
        select[select.index(_EVENT_TYPE_SLOT)] = f"{raw_type} AS event_type"
    out.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY (SELECT {', '.join(select)} FROM {source}) TO '{out / f'{table}.parquet'}' (FORMAT PARQUET)")
    return CheckResult(table, "types", 0, "all values cast to the schema", row_level=False), resolution


def _infer_users(con: duckdb.DuckDBPyConnection, staging: Path, raw: Path, as_of: dt.datetime) -> int:
    """Users of this batch's events/payments known neither from its users file nor the store.

    Each becomes a users row: signup = their first event or payment (at or before ``as_of``; rows in
    the future are left to the future_timestamp gate), every profile column ``unknown``. Written into
    the staged users file, so the users gates and the merge treat them like any other user.
    """
    activity = [f"SELECT user_id, event_ts AS ts FROM read_parquet('{staging / 'events' / 'events.parquet'}')"]
    if (pay := staging / "payments" / "payments.parquet").exists():
        activity.append(f"SELECT user_id, payment_ts AS ts FROM read_parquet('{pay}')")
    users_file = staging / "users" / "users.parquet"
    known = [f"SELECT user_id FROM read_parquet('{users_file}')"] if users_file.exists() else []
    if stored := parquet_glob(raw, "users"):
        known.append(f"SELECT user_id FROM read_parquet('{stored}')")
    known_sql = " UNION ALL ".join(known) or "SELECT NULL::VARCHAR AS user_id WHERE false"
    profile = ", ".join(f"'{UNKNOWN}'::VARCHAR AS {c}" for c in PROFILE_COLUMNS)
    inferred = staging / "users" / "inferred.parquet"
    inferred.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT a.user_id, min(a.ts) AS signup_ts, {profile}"
        f" FROM ({' UNION ALL '.join(activity)}) a ANTI JOIN ({known_sql}) k ON a.user_id = k.user_id"
        f" WHERE a.user_id IS NOT NULL AND a.ts <= $as_of::TIMESTAMPTZ GROUP BY a.user_id ORDER BY a.user_id)"
        f" TO '{inferred}' (FORMAT PARQUET)",
        {"as_of": as_of},
    )
    n = con.execute(f"SELECT count(*) FROM read_parquet('{inferred}')").fetchone()[0]
    if not n:
        inferred.unlink()
    elif users_file.exists():  # one users file for the validator: the batch's rows, then the inferred
        both = staging / "users" / "users.all.parquet"
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{users_file}') UNION ALL BY NAME"
            f" SELECT * FROM read_parquet('{inferred}')) TO '{both}' (FORMAT PARQUET)"
        )
        inferred.unlink()
        both.replace(users_file)
    else:
        inferred.replace(users_file)
    return int(n)


def import_batch(
    settings: Settings,
    *,
    events: Path,
    users: Path | None = None,
    payments: Path | None = None,
    quarantine: bool = False,
    as_of: dt.datetime | None = None,
    event_map: EventMap | str | Path | None = None,
    unmapped: str | None = None,
    infer_users: bool = True,
) -> ImportResult:
    """Validate a batch of files and merge what passes into the raw store.

    ``event_map``: an :class:`EventMap` or a spec (inline ``source=canonical,...`` or a YAML/CSV
    file); ``unmapped``: ``refuse`` (default: such rows fail the ``event_type_values`` gate, so
    the batch is rejected, or they are quarantined) or ``activity``. With ``infer_users``, users
    known neither from ``users`` nor the store are created from their first event or payment.
    """
    if not isinstance(event_map, EventMap):
        event_map = EventMap.from_spec(event_map, unmapped or "refuse")
    elif unmapped is not None and unmapped != event_map.unmapped:
        event_map = EventMap(event_map.mapping, unmapped)
    as_of = as_of or dt.datetime.now(dt.UTC)
    batch_id = f"{as_of:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    staging = settings.scratch_dir / f".tmp-import-{batch_id}"  # node-local even for an s3:// store
    con = _connect(settings.data_dir, config=settings.duckdb_config)
    try:
        try:
            staged = {
                t: _normalise(con, t, p, staging / t, event_map)
                for t, p in (("users", users), ("events", events), ("payments", payments))
                if p is not None
            }
        except duckdb.Error as exc:  # unreadable input (not UTF-8, not CSV/Parquet, truncated...)
            raise IngestError(f"batch rejected: cannot read the input: {str(exc).splitlines()[0]}") from None
        pre = [check for check, _ in staged.values()]
        resolution = staged["events"][1]
        if any(not c.passed for c in pre):
            report = ValidationReport(checks=pre)
            raise IngestError("batch rejected: input does not match the schema", report)
        n_inferred = _infer_users(con, staging, settings.raw_dir, as_of) if infer_users else 0
        validator = BatchValidator(
            staging,
            as_of=as_of,
            existing_raw=settings.raw_dir,
            freshness_max_hours=settings.freshness_max_hours,
            duckdb_config=settings.duckdb_config,
        )
        report = validator.run()
        report.checks = pre + report.checks
        if report.batch_level_failures or (report.failures and not quarantine):
            raise IngestError(_rejection(report, resolution), report)
        result = ImportResult(report, inferred_users=n_inferred, event_types=resolution)
        if report.failures:  # quarantine mode: keep good rows, set bad ones aside with their reason
            result.quarantine_dir = settings.quarantine_dir / batch_id
            for table in validator.tables:
                good, bad = _split(con, validator, table, staging / table, result.quarantine_dir)
                result.accepted[table], result.quarantined[table] = good, bad
            write_json_atomic(result.quarantine_dir / "report.json", report.as_dict())
        else:
            result.accepted = dict(report.rows)
        _merge_into_store(con, staging, settings.raw_dir)
        return result
    finally:
        con.close()
        shutil.rmtree(staging, ignore_errors=True)


def _rejection(report: ValidationReport, resolution: Resolution) -> str:
    """One line: the unmapped event types with their counts when that is (part of) the reason."""
    refused = {s: n for s, n in resolution.unmapped.items() if s not in resolution.translation}
    if not refused or report.batch_level_failures:
        return "batch rejected by validation gates"
    others = [f"{c.table}.{c.check}" for c in report.failures if c.check != "event_type_values"]
    rows, types = sum(refused.values()), len(refused)
    return (
        f"batch rejected: {rows:,} event{'s' if rows > 1 else ''} of {types:,} unmapped event "
        f"type{'s' if types > 1 else ''}: {Resolution(unmapped=refused).unmapped_summary()}; "
        f"map them with --event-map SOURCE=CANONICAL or keep them as generic activity with "
        f"--unmapped {GENERIC_EVENT_TYPE}" + (f" (also failed: {', '.join(others)})" if others else "")
    )


def _split(con, validator: BatchValidator, table: str, folder: Path, qdir: Path) -> tuple[int, int]:
    split = validator.split_sql(table)
    good_file = folder / f"{table}.good.parquet"
    validator.con.execute(
        f"COPY (SELECT * EXCLUDE (reason) FROM ({split}) WHERE reason IS NULL) TO '{good_file}'"
        " (FORMAT PARQUET)",
        {"as_of": validator.as_of} if "$as_of" in split else None,
    )
    qdir.mkdir(parents=True, exist_ok=True)
    validator.con.execute(
        f"COPY (SELECT * FROM ({split}) WHERE reason IS NOT NULL) TO '{qdir / f'{table}.parquet'}'"
        " (FORMAT PARQUET)",
        {"as_of": validator.as_of} if "$as_of" in split else None,
    )
    good = con.execute(f"SELECT count(*) FROM read_parquet('{good_file}')").fetchone()[0]
    bad = con.execute(f"SELECT count(*) FROM read_parquet('{qdir / f'{table}.parquet'}')").fetchone()[0]
    (folder / f"{table}.parquet").unlink()
    good_file.rename(folder / f"{table}.parquet")
    return int(good), int(bad)


def _merge_into_store(con: duckdb.DuckDBPyConnection, staging: Path, raw: Path) -> None:
    """Users first (harmless alone), then each touched date partition, each swapped atomically."""
    new_users = staging / "users" / "users.parquet"
    if new_users.exists():
        old = parquet_glob(raw, "users")
        union = f"SELECT *, 1 AS _new FROM read_parquet('{new_users}')"
        if old:
            union += f" UNION ALL BY NAME SELECT *, 0 AS _new FROM read_parquet('{old}')"
        with atomic_dir(raw / "users") as tmp:
            con.execute(
                f"COPY (SELECT * EXCLUDE (_new, _rank) FROM (SELECT *, row_number() OVER "
                f"(PARTITION BY user_id ORDER BY _new DESC) AS _rank FROM ({union})) WHERE _rank = 1) "
                f"TO '{tmp / 'users.parquet'}' (FORMAT PARQUET, COMPRESSION zstd)"
            )
    for table in PARTITIONED:
        src = staging / table / f"{table}.parquet"
        if src.exists():
            _merge_partitions(con, src, raw / table, RAW_TIME_COLUMN[table])


def _merge_partitions(con: duckdb.DuckDBPyConnection, src: Path, root: DataPath, ts: str) -> None:
    """The batch's rows and the stored rows of the days it touches, deduplicated, written as day
    partitions in ONE pass (a query per day would rescan the batch once per day it spans), then
    each partition swapped in atomically."""
    first, last = con.execute(f"SELECT min({ts}), max({ts}) FROM read_parquet('{src}')").fetchone()
    if first is None:
        return
    dated = f"*, {day_sql(ts)} AS {PARTITION_KEY}"
    rows = f"SELECT {dated} FROM read_parquet('{src}')"
    # The duplicates gate left the batch free of repeated rows; only rows already stored can repeat.
    stored = [d for d in partition_dates(root) if first.date() <= d <= last.date()]  # one listing
    if stored:  # which of those days the batch really touches (a scan, needed only here)
        days = {r[0] for r in con.execute(f"SELECT DISTINCT {day_sql(ts)} FROM read_parquet('{src}')").fetchall()}
        stored = [d for d in stored if d in days]
    if stored:
        globs = ", ".join("'" + f"{partition_dir(root, d)}/*.parquet".replace("'", "''") + "'" for d in stored)
        rows = f"SELECT DISTINCT * FROM ({rows} UNION ALL BY NAME SELECT {dated} FROM read_parquet([{globs}],"
        rows += " hive_partitioning = false))"
    with staging_dir(root) as tmp:
        con.execute(
            f"COPY (SELECT * FROM ({rows}) ORDER BY {ts}) TO '{tmp}'"
            f" (FORMAT PARQUET, PARTITION_BY ({PARTITION_KEY}), FILENAME_PATTERN 'part-{{i}}', COMPRESSION zstd)"
        )
        replace_dirs([(part, root / part.name) for part in sorted(tmp.iterdir())])


def generate_store(
    settings: Settings, *, users: int, days: int, seed: int, end_date: dt.date, on_day=None
) -> tuple[GenerateResult, ValidationReport]:
    """Generate a full synthetic store in staging, gate it, then swap it in for ``raw/``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    end_ts = dt.datetime.combine(end_date, dt.time(), tzinfo=dt.UTC)
    with atomic_dir(settings.raw_dir) as tmp:
        result = generate(tmp, users=users, days=days, seed=seed, end_date=end_date, on_day=on_day)
        report = BatchValidator(
            tmp, as_of=end_ts, freshness_max_hours=settings.freshness_max_hours, duckdb_config=settings.duckdb_config
        ).run()
        if not report.passed:
            raise IngestError("generated data failed validation (a generator bug)", report)
    return result, report


def validate_store(settings: Settings, as_of: dt.datetime | None = None) -> ValidationReport:
    """Re-run every gate over what is stored (the store is its own set of known users)."""
    if not partition_dates(settings.raw_dir / "events"):
        raise IngestError(f"no events under {settings.raw_dir}")
    return BatchValidator(
        settings.raw_dir,
        as_of=as_of or dt.datetime.now(dt.UTC),
        freshness_max_hours=0,
        duckdb_config=settings.duckdb_config,
    ).run()


__all__ = ["IngestError", "ImportResult", "import_batch", "generate_store", "validate_store", "replace_dir"]
