"""The append-only outbox: every planned, held-out, sent, exported, failed and dead-lettered user.

Each append is a new Parquet object under ``interventions/outbox/date=D/`` written atomically
(``churn.io``), never an edit of an existing one: a send killed half-way leaves the rows of what it
finished and nothing half-written, and a resumed send reads them to skip what was already done.
Works on a local data dir and on ``s3://`` alike.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pyarrow as pa
import pyarrow.compute as pc

from churn.interventions import OUTBOX_SCHEMA
from churn.io import write_parquet_atomic
from churn.layout import partition_dates
from churn.settings import Settings
from churn.storage import read_table


def outbox_rows(
    *,
    day: dt.date,
    user_id: list[str],
    action: list[str],
    group: list[str],
    campaign: list[str],
    idempotency_key: list[str],
    status: str,
    sink: str = "",
    attempt: int = 0,
    detail: str = "",
    at: dt.datetime | None = None,
) -> pa.Table:
    """Outbox rows sharing one status, sink, attempt, detail and time."""
    n = len(user_id)
    at = at or dt.datetime.now(dt.UTC)
    return pa.table(
        {
            "day": pa.array([day] * n, pa.date32()),
            "user_id": pa.array(user_id, pa.string()),
            "action": pa.array(action, pa.string()),
            "group": pa.array(group, pa.string()),
            "campaign": pa.array(campaign, pa.string()),
            "idempotency_key": pa.array(idempotency_key, pa.string()),
            "status": pa.array([status] * n, pa.string()),
            "sink": pa.array([sink] * n, pa.string()),
            "attempt": pa.array([attempt] * n, pa.int32()),
            "at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
            "detail": pa.array([detail] * n, pa.string()),
        },
        schema=OUTBOX_SCHEMA,
    )


def append_outbox(settings: Settings, day: dt.date, rows: pa.Table) -> None:
    """Record ``rows`` (OUTBOX_SCHEMA) under day ``day``: one new object, published whole."""
    if rows.num_rows == 0:
        return
    table = rows.select(OUTBOX_SCHEMA.names).cast(OUTBOX_SCHEMA)
    # The time prefix keeps a listing in append order; the random part keeps two appends apart.
    name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.parquet"
    write_parquet_atomic(settings.layout.outbox(day) / name, table)


def read_outbox(settings: Settings, since: dt.date | None = None, until: dt.date | None = None) -> pa.Table:
    """Every outbox row of the days in ``[since, until]`` (either end open), in append order."""
    layout = settings.layout
    days = [
        d for d in partition_dates(layout.outbox_dir) if (since is None or d >= since) and (until is None or d <= until)
    ]
    tables = [
        read_table(f).select(OUTBOX_SCHEMA.names).cast(OUTBOX_SCHEMA)
        for d in days
        for f in sorted(layout.outbox(d).glob("*.parquet"))
    ]
    if not tables:
        return OUTBOX_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def keys_with_status(outbox: pa.Table, statuses: tuple[str, ...], sink: str | None = None) -> set[str]:
    """Idempotency keys having a row of one of ``statuses`` (for ``sink`` only, when given)."""
    mask = pc.is_in(outbox["status"], pa.array(statuses, pa.string()))
    if sink is not None:
        mask = pc.and_(mask, pc.equal(outbox["sink"], sink))
    return set(outbox.filter(mask)["idempotency_key"].to_pylist())
