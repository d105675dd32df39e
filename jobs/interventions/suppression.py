"""The suppression list: users never to contact (opted out, complained, deceased...), honoured by
every plan and re-checked by every send. One Parquet file, replaced whole (atomically) on change."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from churn.errors import DataError
from churn.interventions import SUPPRESSION_SCHEMA
from churn.io import exclusive_lock, write_parquet_atomic
from churn.settings import Settings
from churn.storage import read_table


@dataclass(frozen=True)
class SuppressResult:
    added: int
    already: int
    total: int
    path: Path

    def summary(self) -> str:
        return f"suppressed {self.added:,} new users ({self.already:,} already listed); {self.total:,} in total"


def read_suppression(settings: Settings) -> pa.Table:
    path = settings.layout.suppression_file
    if not path.exists():
        return SUPPRESSION_SCHEMA.empty_table()
    return read_table(path).select(SUPPRESSION_SCHEMA.names).cast(SUPPRESSION_SCHEMA)


def suppressed_users(settings: Settings) -> set[str]:
    return set(read_suppression(settings)["user_id"].to_pylist())


def read_user_file(path: Path) -> list[str]:
    """User ids from a file: Parquet or CSV with a ``user_id`` column, or one id per line."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        table = read_table(path)
        if "user_id" not in table.column_names:
            raise DataError(f"{path}: no user_id column")
        return [str(u) for u in table["user_id"].to_pylist() if u is not None]
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if lines and ("," in lines[0] or lines[0] == "user_id"):
        import csv

        rows = list(csv.DictReader(lines))
        if not rows or "user_id" not in rows[0]:
            raise DataError(f"{path}: a CSV file needs a user_id column")
        return [r["user_id"].strip() for r in rows if r["user_id"] and r["user_id"].strip()]
    return lines


def suppress(settings: Settings, user_ids: list[str], reason: str = "") -> SuppressResult:
    """Add users to the suppression list (a user already listed keeps their first entry)."""
    layout = settings.layout
    with exclusive_lock(layout.interventions_lock):
        current = read_suppression(settings)
        known = set(current["user_id"].to_pylist())
        new = list(dict.fromkeys(u for u in user_ids if u not in known))
        now = dt.datetime.now(dt.UTC)
        added = pa.table(
            {
                "user_id": pa.array(new, pa.string()),
                "reason": pa.array([reason] * len(new), pa.string()),
                "added_at": pa.array([now] * len(new), pa.timestamp("us", tz="UTC")),
            },
            schema=SUPPRESSION_SCHEMA,
        )
        table = pa.concat_tables([current, added])
        if new:
            write_parquet_atomic(layout.suppression_file, table)
    return SuppressResult(len(new), len(set(user_ids)) - len(new), table.num_rows, layout.suppression_file)
