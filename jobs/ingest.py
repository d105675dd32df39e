"""Getting data into the raw store: synthetic generation or a site's own event log.

Arrow: input files → staging batch (normalised to the raw schemas) → validation gates → raw store.
Both paths stage first and only touch ``raw/`` after the batch passed, so a bad batch never
overwrites or loses good data. Imports merge into the store partition by partition (each swap is
atomic); generation replaces the whole store.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from churn.errors import DataError
from churn.io import atomic_dir, replace_dir, write_json_atomic
from churn.layout import partition_dates, partition_dir
from churn.schema import RAW_SCHEMAS, RAW_TIME_COLUMN
from churn.settings import Settings
from jobs.generate import GenerateResult, generate
from jobs.validation import BatchValidator, CheckResult, ValidationReport, parquet_glob

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
PARTITIONED = ("events", "payments")


class IngestError(DataError):
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


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
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


def _normalise(con: duckdb.DuckDBPyConnection, table: str, src: Path, out: Path) -> CheckResult:
    """Rename alias columns, cast to the raw schema and write Parquet; report type errors."""
    if not src.exists():
        raise IngestError(f"{src}: no such file")
    rel = con.sql(f"SELECT * FROM {_reader(src)}")
    have = {c.lower(): c for c in rel.columns}
    select, missing, casts = [], [], []
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
            if f.name in OPTIONAL_COLUMNS:
                select.append(f"NULL::{duck} AS {f.name}")
                continue
            missing.append(f.name)
            continue
        select.append(f'TRY_CAST("{col}" AS {duck}) AS {f.name}')
        casts.append((f.name, col, duck))
    if missing:
        return CheckResult(
            table,
            "schema",
            len(missing),
            f"missing required columns {missing} in {src.name}",
            row_level=False,
        )
    bad = " OR ".join(f'("{c}" IS NOT NULL AND TRY_CAST("{c}" AS {d}) IS NULL)' for _, c, d in casts)
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
        )
    out.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT {', '.join(select)} FROM {_reader(src)}) TO '{out / f'{table}.parquet'}' (FORMAT PARQUET)"
    )
    return CheckResult(table, "types", 0, "all values cast to the schema", row_level=False)


def import_batch(
    settings: Settings,
    *,
    events: Path,
    users: Path | None = None,
    payments: Path | None = None,
    quarantine: bool = False,
    as_of: dt.datetime | None = None,
) -> ImportResult:
    """Validate a batch of files and merge what passes into the raw store."""
    as_of = as_of or dt.datetime.now(dt.UTC)
    batch_id = f"{as_of:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    staging = settings.data_dir / f".tmp-import-{batch_id}"
    con = _connect()
    try:
        try:
            pre = [
                _normalise(con, t, p, staging / t)
                for t, p in (("users", users), ("events", events), ("payments", payments))
                if p is not None
            ]
        except duckdb.Error as exc:  # unreadable input (not UTF-8, not CSV/Parquet, truncated...)
            raise IngestError(f"batch rejected: cannot read the input: {str(exc).splitlines()[0]}") from None
        if any(not c.passed for c in pre):
            report = ValidationReport(checks=pre)
            raise IngestError("batch rejected: input does not match the schema", report)
        validator = BatchValidator(
            staging,
            as_of=as_of,
            existing_raw=settings.raw_dir,
            freshness_max_hours=settings.freshness_max_hours,
        )
        report = validator.run()
        report.checks = pre + report.checks
        if report.batch_level_failures or (report.failures and not quarantine):
            raise IngestError("batch rejected by validation gates", report)
        result = ImportResult(report)
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
        if not src.exists():
            continue
        ts = RAW_TIME_COLUMN[table]
        days = [
            r[0]
            for r in con.execute(f"SELECT DISTINCT CAST({ts} AS DATE) FROM read_parquet('{src}')").fetchall()
        ]
        for day in sorted(days):
            part = partition_dir(raw / table, day)
            sources = [f"SELECT * FROM read_parquet('{src}') WHERE CAST({ts} AS DATE) = DATE '{day}'"]
            if part.exists():
                sources.append(f"SELECT * FROM read_parquet('{part}/*.parquet', hive_partitioning=false)")
            with atomic_dir(part) as tmp:
                con.execute(
                    f"COPY (SELECT DISTINCT * FROM ({' UNION ALL BY NAME '.join(sources)}) ORDER BY {ts}) "
                    f"TO '{tmp / 'part-0.parquet'}' (FORMAT PARQUET, COMPRESSION zstd)"
                )


def generate_store(
    settings: Settings, *, users: int, days: int, seed: int, end_date: dt.date, on_day=None
) -> tuple[GenerateResult, ValidationReport]:
    """Generate a full synthetic store in staging, gate it, then swap it in for ``raw/``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    end_ts = dt.datetime.combine(end_date, dt.time(), tzinfo=dt.UTC)
    with atomic_dir(settings.raw_dir) as tmp:
        result = generate(tmp, users=users, days=days, seed=seed, end_date=end_date, on_day=on_day)
        report = BatchValidator(tmp, as_of=end_ts, freshness_max_hours=settings.freshness_max_hours).run()
        if not report.passed:
            raise IngestError("generated data failed validation (a generator bug)", report)
    return result, report


def validate_store(settings: Settings, as_of: dt.datetime | None = None) -> ValidationReport:
    """Re-run every gate over what is stored (the store is its own set of known users)."""
    if not partition_dates(settings.raw_dir / "events"):
        raise IngestError(f"no events under {settings.raw_dir}")
    return BatchValidator(
        settings.raw_dir, as_of=as_of or dt.datetime.now(dt.UTC), freshness_max_hours=0
    ).run()


__all__ = ["IngestError", "ImportResult", "import_batch", "generate_store", "validate_store", "replace_dir"]
