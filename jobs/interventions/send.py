"""Delivery: the day's plan to the configured sinks (``churn interventions send --date D``).

Only treatment users are delivered; control users were recorded as HELD_OUT by the plan and are
never read here. Users suppressed after the plan was made are recorded SUPPRESSED and skipped.

* ``webhook``: JSON batches of ``intervention_webhook_batch`` users per action, POSTed to
  ``intervention_webhook_url`` with ``X-Churn-Signature: sha256=<HMAC-SHA256 of the raw body>``,
  ``X-Churn-Timestamp`` and an ``Idempotency-Key`` derived from the batch's user keys. A 2xx is
  SENT; a 4xx other than 408/429 is a refusal, dead-lettered at once; anything else (5xx, 408,
  429, a timeout, a connection error) is FAILED and retried with exponential backoff, then
  dead-lettered.
* ``export``: one file per action, ``interventions/exports/date=D/<action>.csv|.parquet``, written
  whole and atomically, for a CRM upload; its users are EXPORTED.

Every outcome is appended to the outbox as it happens, so a send killed half-way resumes where it
stopped: keys already SENT, EXPORTED or DEAD_LETTER for a sink are not delivered again. The one
batch in flight at the kill may reach the receiver twice, with the same keys: receivers dedupe
on them (README, "Interventions").
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from churn.interventions import (
    DEAD_LETTER,
    EXPORTED,
    FAILED,
    FINAL,
    IDEMPOTENCY_HEADER,
    SENT,
    SIGNATURE_HEADER,
    SINK_EXPORT,
    SINK_WEBHOOK,
    SUPPRESSED,
    TIMESTAMP_HEADER,
    TREATMENT,
    batch_key,
    sign,
)
from churn.io import atomic_file, exclusive_lock, write_parquet_atomic
from churn.settings import Settings
from jobs.interventions.outbox import append_outbox, keys_with_status, outbox_rows, read_outbox
from jobs.interventions.plan import read_plan
from jobs.interventions.suppression import suppressed_users

RETRYABLE_4XX = (408, 429)
DETAIL_CHARS = 300
EXPORT_COLUMNS = ["day", "action", "user_id", "tier", "churn_probability", "campaign", "idempotency_key"]


@dataclass
class SendResult:
    day: dt.date
    sinks: list[str]
    sent: int = 0
    exported: int = 0
    dead_letter: int = 0
    suppressed: int = 0
    already: int = 0
    """Deliveries a previous send of the day had already completed (skipped)."""
    exports: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if SINK_WEBHOOK in self.sinks:
            parts.append(f"webhook sent {self.sent:,}, dead-lettered {self.dead_letter:,}")
        if SINK_EXPORT in self.sinks:
            parts.append(f"exported {self.exported:,} in {len(self.exports)} files")
        if self.suppressed:
            parts.append(f"{self.suppressed:,} suppressed since the plan")
        if self.already:
            parts.append(f"{self.already:,} already delivered")
        return f"send {self.day}: " + "; ".join(parts)


def _rows(plan: pa.Table, status: str, *, sink: str = "", attempt: int = 0, detail: str = "") -> pa.Table:
    return outbox_rows(
        day=plan["day"][0].as_py() if plan.num_rows else dt.date(1970, 1, 1),
        user_id=plan["user_id"].to_pylist(),
        action=plan["action"].to_pylist(),
        group=plan["group"].to_pylist(),
        campaign=plan["campaign"].to_pylist(),
        idempotency_key=plan["idempotency_key"].to_pylist(),
        status=status,
        sink=sink,
        attempt=attempt,
        detail=detail,
    )


def _without(table: pa.Table, keys: set[str]) -> pa.Table:
    if not keys or table.num_rows == 0:
        return table
    return table.filter(pc.invert(pc.is_in(table["idempotency_key"], pa.array(sorted(keys), pa.string()))))


# --- export --------------------------------------------------------------------------------------


def _export(settings: Settings, day: dt.date, plan: pa.Table, done: set[str], result: SendResult) -> None:
    fmt = settings.intervention_export_format
    for action in sorted(set(plan["action"].to_pylist())):
        rows = plan.filter(pc.equal(plan["action"], action))
        path = settings.layout.export_file(day, action, fmt)
        # Rewritten whole each time from the same plan: a resumed send produces the same file.
        table = rows.select(EXPORT_COLUMNS)
        if fmt == "parquet":
            write_parquet_atomic(path, table)
        else:
            import pyarrow.csv as pacsv

            with atomic_file(path, "wb") as fh:
                pacsv.write_csv(table, fh, write_options=pacsv.WriteOptions(quoting_style="needed"))
        result.exports.append(path)
        new = _without(rows, done)
        append_outbox(settings, day, _rows(new, EXPORTED, sink=SINK_EXPORT, attempt=1, detail=str(path)))
        result.exported += new.num_rows
        result.already += rows.num_rows - new.num_rows


# --- webhook -------------------------------------------------------------------------------------


def payload(day: dt.date, action: str, batch: pa.Table) -> tuple[str, bytes]:
    """(batch id = its Idempotency-Key, the JSON body) of one webhook request."""
    bid = batch_key(batch["idempotency_key"].to_pylist())
    users = [
        {"user_id": u, "churn_probability": p, "risk_tier": t, "idempotency_key": k}
        for u, p, t, k in zip(
            batch["user_id"].to_pylist(),
            batch["churn_probability"].to_pylist(),
            batch["tier"].to_pylist(),
            batch["idempotency_key"].to_pylist(),
            strict=True,
        )
    ]
    body = {"day": day.isoformat(), "action": action, "batch_id": bid, "users": users}
    return bid, json.dumps(body, separators=(",", ":")).encode()


def _post(client: Any, settings: Settings, bid: str, body: bytes) -> tuple[int | None, str]:
    """(HTTP status or None for no answer, a short description) of one attempt."""
    import httpx

    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(settings.intervention_webhook_secret, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        IDEMPOTENCY_HEADER: bid,
    }
    try:
        response = client.post(settings.intervention_webhook_url, content=body, headers=headers)
    except httpx.TimeoutException:
        return None, f"no answer within {settings.intervention_webhook_timeout_s}s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    text = " ".join(response.text.split())[:DETAIL_CHARS]
    return response.status_code, f"HTTP {response.status_code}" + (f": {text}" if text else "")


def _refused(status: int | None) -> bool:
    """The receiver refused this body (or sent us elsewhere): sending it again cannot succeed."""
    if status is None:
        return False
    return 300 <= status < 400 or (400 <= status < 500 and status not in RETRYABLE_4XX)


def _deliver(client: Any, settings: Settings, day: dt.date, batch: pa.Table, bid: str, body: bytes) -> str:
    """Post one batch until it is accepted, refused or out of retries; each outcome is recorded
    in the outbox as it happens. Returns the final status (SENT or DEAD_LETTER)."""
    attempts = 1 + int(settings.intervention_webhook_retries)
    for attempt in range(1, attempts + 1):
        status, detail = _post(client, settings, bid, body)
        detail = f"batch {bid}: {detail}"
        if status is not None and 200 <= status < 300:
            append_outbox(settings, day, _rows(batch, SENT, sink=SINK_WEBHOOK, attempt=attempt, detail=detail))
            return SENT
        if _refused(status):
            append_outbox(settings, day, _rows(batch, DEAD_LETTER, sink=SINK_WEBHOOK, attempt=attempt, detail=detail))
            return DEAD_LETTER
        append_outbox(settings, day, _rows(batch, FAILED, sink=SINK_WEBHOOK, attempt=attempt, detail=detail))
        if attempt < attempts:
            time.sleep(float(settings.intervention_webhook_backoff_s) * 2 ** (attempt - 1))
    append_outbox(
        settings,
        day,
        _rows(
            batch,
            DEAD_LETTER,
            sink=SINK_WEBHOOK,
            attempt=attempts,
            detail=f"batch {bid}: gave up after {attempts} attempts",
        ),
    )
    return DEAD_LETTER


def _webhook(settings: Settings, day: dt.date, plan: pa.Table, done: set[str], result: SendResult) -> None:
    import httpx

    size = int(settings.intervention_webhook_batch)
    timeout = float(settings.intervention_webhook_timeout_s)
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for action in sorted(set(plan["action"].to_pylist())):
            rows = plan.filter(pc.equal(plan["action"], action))
            # Batches are cut from the whole plan, not from what is left, so a resumed send forms
            # the same batches (and Idempotency-Keys) as the run it resumes.
            for start in range(0, rows.num_rows, size):
                chunk = rows.slice(start, size)
                batch = _without(chunk, done)
                result.already += chunk.num_rows - batch.num_rows
                if batch.num_rows == 0:
                    continue
                bid, body = payload(day, action, batch)
                if _deliver(client, settings, day, batch, bid, body) == SENT:
                    result.sent += batch.num_rows
                else:
                    result.dead_letter += batch.num_rows


# --- the job -------------------------------------------------------------------------------------


def send(settings: Settings, day: dt.date) -> SendResult:
    """Deliver the plan of ``day`` to every configured sink; resumable (see the module docstring)."""
    sinks = settings.intervention_sink_list
    result = SendResult(day, sinks)
    with exclusive_lock(settings.layout.interventions_lock):
        plan = read_plan(settings, day)
        treatment = plan.filter(pc.equal(plan["group"], TREATMENT))
        outbox = read_outbox(settings, since=day, until=day)
        optouts = suppressed_users(settings) & set(treatment["user_id"].to_pylist())
        if optouts:
            mine = treatment.filter(pc.is_in(treatment["user_id"], pa.array(sorted(optouts), pa.string())))
            recorded = keys_with_status(outbox, (SUPPRESSED,))
            fresh = _without(mine, recorded)
            append_outbox(settings, day, _rows(fresh, SUPPRESSED, detail="suppressed after planning"))
            result.suppressed = mine.num_rows
            treatment = _without(treatment, set(mine["idempotency_key"].to_pylist()))
        for sink in sinks:
            done = keys_with_status(outbox, FINAL, sink)
            if sink == SINK_EXPORT:
                _export(settings, day, treatment, done, result)
            elif sink == SINK_WEBHOOK:
                _webhook(settings, day, treatment, done, result)
    return result
