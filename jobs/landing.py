"""Ingestion from the landing prefix: what upstream delivers for day D, imported exactly once.

Contract: upstream writes ``<data_dir>/landing/<table>/date=D/`` for the tables ``events``
(required), ``payments`` and ``users`` (optional: unknown users are inferred from their activity),
files ``*.parquet``, ``*.csv`` or ``*.csv.gz`` in the columns ``churn data import`` takes; names
starting with ``_`` or ``.`` (``_SUCCESS``, temporary uploads) are ignored. ``date=D`` is what
the daily run of D ingests; rows land in the raw store's partitions by their own timestamps,
whatever folder brought them, and the gates judge them as of now (or of the end of D for an old
delivery, so a backfill is not refused as stale).

Every file goes through :func:`jobs.ingest.import_batch`, the code of ``churn data import``
(normalisation, event map, user inference, the same validation gates, quarantine). Each import is
recorded in ``landing/_imported/date=D.json`` (file size, signature, SHA-256), so a
rerun imports only files that were not imported yet; a recorded file whose content changed is
refused (the store already holds its first version). A day whose events folder is absent or empty
fails with :class:`LandingMissingError` unless it was imported before.

Paths may be ``pathlib.Path`` or ``upath.UPath`` (object storage): only ``/``, ``.name``,
``.exists()``, ``.iterdir()``, ``.is_dir()``, ``.stat()`` and ``.open()`` are used on them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from churn import errors
from churn.io import write_json_atomic
from churn.layout import LANDING_TABLES, partition_dates
from churn.settings import Settings
from churn.storage import sha256, signature

DATA_SUFFIXES = (".parquet", ".csv", ".csv.gz")
"""What a landing folder may hold (anything else is listed as ignored)."""


class LandingError(errors.DataError):
    """The landing prefix cannot be imported as it stands."""


class LandingMissingError(LandingError):
    """Day D's events have not arrived (their folder is absent or empty) and D was never imported."""


class LandingChangedError(LandingError):
    """A file already imported has different content now; the store holds its first version."""


@dataclass
class TableStatus:
    """One landing table as seen for day D."""

    table: str
    files: int  # data files in landing/<table>/date=D/
    latest_day: dt.date | None  # the newest day whose folder holds a data file

    @property
    def missing(self) -> bool:
        return self.files == 0


@dataclass
class LandingResult:
    day: dt.date
    imported: list[str] = field(default_factory=list)
    """Files imported by this run (``table/name``)."""
    already: list[str] = field(default_factory=list)
    """Files found already imported by an earlier run."""
    ignored: list[str] = field(default_factory=list)
    """Files in the day's folders that are not data files."""
    accepted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_dirs: list[str] = field(default_factory=list)
    inferred_users: int = 0
    batches: int = 0
    reports: list[str] = field(default_factory=list)
    """The import report of each batch (``ImportResult.render()``)."""

    def summary(self) -> str:
        head = f"landing {self.day}: "
        if not self.imported:
            return head + f"nothing new ({len(self.already)} file(s) already imported)" + self._ignored()
        counts = ", ".join(f"{t}={n:,}" for t, n in self.accepted.items())
        text = f"imported {len(self.imported)} file(s) in {self.batches} batch(es): accepted {counts}"
        if self.quarantined:
            text += "; quarantined " + ", ".join(f"{t}={n:,}" for t, n in self.quarantined.items())
        text += f"; users inferred {self.inferred_users:,}"
        if self.already:
            text += f"; {len(self.already)} file(s) already imported"
        return head + text + self._ignored()

    def _ignored(self) -> str:
        return f"; ignored {', '.join(self.ignored)}" if self.ignored else ""


# --- the landing folders ----------------------------------------------------------------------------


def _is_data_file(path: Any) -> bool:
    name = path.name
    return not name.startswith(("_", ".")) and name.lower().endswith(DATA_SUFFIXES) and not path.is_dir()


def _listing(folder: Any) -> tuple[list[Any], list[str]]:
    """(data files sorted by name, other entries' names) of one landing folder; absent: nothing."""
    if not folder.exists() or not folder.is_dir():
        return [], []
    data, other = [], []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if _is_data_file(p):
            data.append(p)
        elif not p.name.startswith(("_", ".")):
            other.append(p.name)
    return data, other


def landing_files(settings: Settings, table: str, day: dt.date) -> list[Any]:
    """The data files of ``landing/<table>/date=D/``, sorted by name (none if the folder is absent)."""
    return _listing(settings.layout.landing(table, day))[0]


def latest_landing_day(settings: Settings, table: str) -> dt.date | None:
    """The newest day whose ``landing/<table>/date=D/`` folder holds a data file."""
    for day in reversed(partition_dates(settings.layout.landing_table(table))):
        if landing_files(settings, table, day):
            return day
    return None


def landing_status(settings: Settings, day: dt.date) -> list[TableStatus]:
    """What has arrived for ``day``, table by table (for the daily run's metrics)."""
    return [
        TableStatus(t, len(landing_files(settings, t, day)), latest_landing_day(settings, t)) for t in LANDING_TABLES
    ]


# --- fingerprints -------------------------------------------------------------------------------------


def fingerprint(path: Any) -> dict[str, Any]:
    """What the manifest records of a file: its size, its signature (ETag on object storage; inode,
    mtime and size locally) and its SHA-256."""
    return {"size": int(path.stat().st_size), "signature": signature(path), "sha256": sha256(path)}


def _unchanged(recorded: dict[str, Any], path: Any) -> bool:
    if int(path.stat().st_size) != recorded.get("size"):
        return False
    if signature(path) == recorded.get("signature"):  # the same version, without reading it
        return True
    return sha256(path) == recorded.get("sha256")


# --- the manifest -------------------------------------------------------------------------------------


def read_manifest(settings: Settings, day: dt.date) -> dict[str, Any]:
    """``landing/_imported/date=D.json``: ``{"date", "files": {"table/name": {...}}}`` (empty if none)."""
    path = settings.layout.landing_manifest(day)
    if not path.exists():
        return {"date": day.isoformat(), "files": {}}
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise LandingError(f"{path}: unreadable import manifest ({exc}); fix or remove it") from None
    manifest.setdefault("files", {})
    return manifest


# --- ingestion ------------------------------------------------------------------------------------------


def _default_as_of(day: dt.date) -> dt.datetime:
    """Now, or the end of ``day`` for an old delivery (its gates judge it as of then, not today)."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return min(dt.datetime.now(dt.UTC), end)


def ingest_landing(
    settings: Settings,
    day: dt.date,
    *,
    quarantine: bool | None = None,
    event_map: Any = None,
    unmapped: str | None = None,
    infer_users: bool = True,
    as_of: dt.datetime | None = None,
) -> LandingResult:
    """Import what landed for ``day`` and is not imported yet; record it in the day's manifest.

    Options are those of ``churn data import``; ``quarantine``, ``event_map`` and ``unmapped`` default
    to ``CHURN_LANDING_QUARANTINE``, ``CHURN_LANDING_EVENT_MAP`` and ``CHURN_LANDING_UNMAPPED``.
    ``as_of`` (the gates' reference time) defaults to now, or the end of ``day`` if that is earlier.

    Files are imported in batches of at most one file per table (``import_batch`` takes one file
    each), events with them; a batch with payments or users but no new events file carries the
    day's first events file again, which changes nothing in the store (the merge keeps distinct
    rows). The manifest is rewritten after each batch, so a failed batch leaves the earlier ones
    recorded and the next run retries from there. A rejected batch raises ``IngestError``.
    """
    from jobs.ingest import import_batch

    layout = settings.layout
    result = LandingResult(day)
    manifest = read_manifest(settings, day)
    recorded: dict[str, dict[str, Any]] = manifest["files"]
    listed = {t: _listing(layout.landing(t, day)) for t in LANDING_TABLES}
    result.ignored = [f"{t}/{name}" for t in LANDING_TABLES for name in listed[t][1]]
    events = listed["events"][0]
    imported_before = any(key.startswith("events/") for key in recorded)
    if not events and not imported_before:
        raise LandingMissingError(
            f"no events delivered for {day}: {layout.landing('events', day)} is "
            f"{'empty' if layout.landing('events', day).exists() else 'absent'} "
            f"(expected *.parquet or *.csv files; the day has not arrived or was delivered elsewhere)"
        )

    pending: dict[str, list[tuple[str, Any]]] = {t: [] for t in LANDING_TABLES}
    for table in LANDING_TABLES:
        for path in listed[table][0]:
            key = f"{table}/{path.name}"
            if key not in recorded:
                pending[table].append((key, path))
            elif _unchanged(recorded[key], path):
                result.already.append(key)
            else:
                raise LandingChangedError(
                    f"{path} changed since it was imported at {recorded[key].get('imported_at')} "
                    f"(size {recorded[key].get('size')} → {path.stat().st_size}); the store holds the rows of "
                    f"its first version. Deliver corrections as a new file, or remove {key!r} from "
                    f"{layout.landing_manifest(day)} to import this version as well"
                )
    batches = max(len(files) for files in pending.values())
    if not batches:
        return result
    if len(pending["events"]) < batches and not events:
        raise LandingMissingError(
            f"{day}: new payments/users files arrived but {layout.landing('events', day)} holds no events "
            f"to import them with (the day's events were imported earlier and have been removed since)"
        )

    options = {
        "quarantine": settings.landing_quarantine if quarantine is None else quarantine,
        "event_map": event_map if event_map is not None else (settings.landing_event_map or None),
        "unmapped": unmapped if unmapped is not None else settings.landing_unmapped,
        "infer_users": infer_users,
        "as_of": as_of or _default_as_of(day),
    }
    for i in range(batches):
        batch = {t: pending[t][i] for t in LANDING_TABLES if i < len(pending[t])}
        # Fingerprinted before the import: a file rewritten meanwhile is caught as changed next run.
        prints = {t: fingerprint(path) for t, (_, path) in batch.items()}
        res = import_batch(
            settings,
            events=batch["events"][1] if "events" in batch else events[0],
            payments=batch["payments"][1] if "payments" in batch else None,
            users=batch["users"][1] if "users" in batch else None,
            **options,
        )
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for table, (key, _) in batch.items():
            recorded[key] = {
                **prints[table],
                "imported_at": now,
                "accepted": res.accepted.get(table, 0),
                "quarantined": res.quarantined.get(table, 0),
            }
            result.imported.append(key)
        manifest["date"] = day.isoformat()
        write_json_atomic(layout.landing_manifest(day), manifest)
        result.batches += 1
        for table in batch:
            result.accepted[table] = result.accepted.get(table, 0) + res.accepted.get(table, 0)
            if res.quarantined.get(table):
                result.quarantined[table] = result.quarantined.get(table, 0) + res.quarantined[table]
        if res.quarantine_dir is not None:
            result.quarantine_dirs.append(str(res.quarantine_dir))
        result.inferred_users += res.inferred_users
        result.reports.append(res.render())
    return result


__all__ = [
    "DATA_SUFFIXES",
    "LandingChangedError",
    "LandingError",
    "LandingMissingError",
    "LandingResult",
    "TableStatus",
    "fingerprint",
    "ingest_landing",
    "landing_files",
    "landing_status",
    "latest_landing_day",
    "read_manifest",
]
