"""Fast materialization: daily feature tables → online store (SQLite or Redis), millions of users.

Feast's own ``materialize`` builds a ``ValueProto`` object per value, a Python dict per row and
writes row by row, slowly and in memory proportional to the data. This job writes *exactly
Feast's storage format* much faster and in flat memory; the format itself is the online store's
business (:mod:`feature_repo.online`), this module reads and orchestrates:

1. DuckDB reads the partitions ``(start, end]`` of each view and keeps the latest row per user
   as of the end date (by ``event_timestamp`` then ``created``, like Feast's
   ``pull_latest_from_table_or_query``), streamed in chunks of ``settings.materialize_batch_rows``.
2. A background thread has the online store encode each chunk (:meth:`OnlineStore.prepare`) one
   chunk ahead of the writes (:meth:`OnlineStore.send`): SQLite and sockets release the GIL.
3. Materialization intervals are recorded in Feast's registry, so ``feast`` tools and
   feature-view states see the views as materialized.

Incremental by default: the last materialized end date is stored *inside the online store*, so a
wiped or restarted store is reloaded in full automatically. A run covers
``(max(last_end, end - ttl), end]``; ``full`` covers ``[end - ttl, end]``. Rows older than the view
TTL are expired anyway.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from churn.errors import JobError
from churn.layout import partition_dates, partition_files
from churn.schema import CREATED_FIELD, ENTITY_KEY, FEATURE_VIEWS, TIMESTAMP_FIELD
from churn.settings import Settings
from churn.storage import duckdb_connect

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

    from feature_repo.online import OnlineStore

#: entities encoded per chunk handed from the reader thread to the writer (bounds memory:
#: at most one chunk queued, one being prepared and one being written)
_PREPARE_ROWS = 25_000
READ_MEMORY_LIMIT = "1GB"
"""The latest-row reader's DuckDB memory limit, whatever ``CHURN_DUCKDB_MEMORY_LIMIT`` says: it
streams, so a small one keeps the writer's memory flat however large the view."""
#: a view without a TTL is loaded over this many days
_NO_TTL_DAYS = 3650

OnRows = Callable[[str, int], None]


class MaterializeError(JobError):
    """Materialization cannot run (nothing applied, no feature partitions): one line, exit 1."""


@dataclass
class MaterializeResult:
    online_store: str
    start_date: dt.date | None
    end_date: dt.date
    rows: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    full: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        if self.start_date is None or self.start_date > self.end_date:
            return f"online store ({self.online_store}) already up to date through {self.end_date}"
        window = f"{self.start_date}..{self.end_date}"
        mode = "full" if self.full else "incremental"
        return (
            f"materialized {self.total_rows} rows ({', '.join(f'{k}={v}' for k, v in self.rows.items())}) "
            f"into {self.online_store} [{mode} {window}] at {self.rows_per_second:,.0f} rows/s"
        )


# --- partitions & reading ------------------------------------------------------------------


def view_partitions(settings: Settings, view: str, first: dt.date, last: dt.date) -> list[Path]:
    """Parquet files of a view's partitions dated ``[first, last]``, oldest first."""
    root = settings.layout.feature_view_dir(view)
    return partition_files(root, [d for d in partition_dates(root) if first <= d <= last])


def latest_partition_date(settings: Settings) -> dt.date | None:
    """The newest day any view has feature rows for."""
    dates = []
    for view in FEATURE_VIEWS:
        root = settings.layout.feature_view_dir(view)
        dates += [d for d in partition_dates(root) if partition_files(root, [d])]
    return max(dates) if dates else None


def read_latest(
    files: list[Path], batch_rows: int, end: dt.datetime, columns: list[str], config: Mapping[str, str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Latest row per user across ``files`` with ``event_timestamp <= end``, in record batches;
    ``config`` as :func:`reader_config` makes it."""
    con = duckdb_connect(*files[:1], config=config)
    try:
        con.execute("SET threads TO 2")
        con.execute("SET preserve_insertion_order = false")
        reader = con.execute(_latest_sql([str(f) for f in files], columns), {"end": end}).to_arrow_reader(batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield batch
    finally:
        con.close()


def _latest_sql(files: list[str], columns: list[str]) -> str:
    cols = ", ".join(f'"{c}"' for c in [ENTITY_KEY, TIMESTAMP_FIELD, CREATED_FIELD, *columns])
    src = f"read_parquet({files!r}, hive_partitioning = false)"
    where = f"{TIMESTAMP_FIELD} <= $end"
    # Ordered like Feast's serialized entity keys (uint32 length, then the UTF-8 bytes), so
    # the online store receives its rows in primary-key order.
    order = f"ORDER BY strlen({ENTITY_KEY}), {ENTITY_KEY}::BLOB"
    if len(files) == 1:  # one day: one row per user already
        return f"SELECT {cols} FROM {src} WHERE {where} {order}"
    return (
        f"SELECT {cols} FROM {src} WHERE {where} QUALIFY row_number() OVER ("
        f"PARTITION BY {ENTITY_KEY} "
        f"ORDER BY {TIMESTAMP_FIELD} DESC, {CREATED_FIELD} DESC NULLS LAST) = 1 "
        f"{order}"
    )


def _in_background(it: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Iterate ``it`` in a daemon thread, ``depth`` items ahead; its exceptions re-raised here.

    If the consumer stops early (an exception in the writer), the producer is told to stop and
    finishes at its next item.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, done))
        except BaseException as exc:  # re-raised in the consumer
            q.put((exc, None))

    t = threading.Thread(target=run, name="materialize-reader", daemon=True)
    t.start()
    try:
        while True:
            exc, item = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        t.join(timeout=30)


# --- the job's steps ---------------------------------------------------------------------------


def state_target(project: str, views: list[str]) -> str:
    """The key the online store records the last materialized date under (project + view set)."""
    return f"{project}:{','.join(sorted(views))}"


def _resolve_end_date(settings: Settings, end_date: dt.date | None) -> dt.date:
    end_date = end_date or latest_partition_date(settings)
    if end_date is None:
        raise MaterializeError(f"no feature partitions under {settings.features_dir}: run `churn features build`")
    return end_date


def _registered_views(
    store: FeatureStore, settings: Settings, views: list[str] | None
) -> tuple[list[str], dict[str, FeatureView]]:
    """The views to load (default: the feature service's) and their registered definitions."""
    try:
        fvs = {fv.name: fv for fv in store.list_feature_views()}
        service = store.get_feature_service(settings.feature_service)
    except Exception as exc:
        raise MaterializeError(f"feature registry not ready ({exc}): run `churn features apply` first") from exc
    wanted = views or [p.name for p in service.feature_view_projections]
    for name in wanted:
        if name not in fvs:
            raise MaterializeError(f"feature view {name!r} not registered: run `churn features apply`")
    return wanted, fvs


def _window_start(fv: FeatureView, end_date: dt.date, last: dt.date | None) -> dt.date:
    """First day to load: the day after the last run, but never before the TTL window."""
    ttl_days = max(1, int(fv.ttl.total_seconds() // 86_400)) if fv.ttl else _NO_TTL_DAYS
    floor = end_date - dt.timedelta(days=ttl_days)
    return floor if last is None or last < floor else last + dt.timedelta(days=1)


@dataclass(frozen=True)
class ViewLoad:
    """One view's share of a run: its definition, first day and the partition files to read."""

    fv: FeatureView
    first: dt.date
    files: list[Path]

    @property
    def partitions(self) -> int:
        return len({f.parent for f in self.files})


def _plan_loads(
    settings: Settings, fvs: dict[str, FeatureView], wanted: list[str], end_date: dt.date, last: dt.date | None
) -> list[ViewLoad]:
    """What each view needs loaded, largest views first (SQLite's background checkpoint of one
    then overlaps the loading of the others)."""
    loads = []
    for name in sorted(wanted, key=lambda n: -len(fvs[n].features)):
        first = _window_start(fvs[name], end_date, last)
        loads.append(ViewLoad(fvs[name], first, view_partitions(settings, name, first, end_date)))
    return loads


def reader_config(settings: Settings) -> dict[str, str]:
    """The latest-row reader's DuckDB: the batch steps' spill folder, its own memory limit."""
    return {**settings.duckdb_config, "memory_limit": READ_MEMORY_LIMIT}


def _prepared_chunks(
    online: OnlineStore, load: ViewLoad, batch_rows: int, end: dt.datetime, config: Mapping[str, str]
) -> Iterator[tuple[int, Any]]:
    """(rows, encoded payload) per chunk of the view's latest rows (runs in the reader thread)."""
    features = [f.name for f in load.fv.features]
    for batch in read_latest(load.files, batch_rows, end, features, config):
        for lo in range(0, batch.num_rows, _PREPARE_ROWS):
            chunk = batch.slice(lo, _PREPARE_ROWS)
            yield chunk.num_rows, online.prepare(load.fv, chunk, features)


def _load_view(
    online: OnlineStore,
    load: ViewLoad,
    *,
    batch_rows: int,
    end: dt.datetime,
    full: bool,
    on_rows: OnRows | None,
    config: Mapping[str, str],
) -> int:
    """One view in one online-store load (a single transaction where the store has them)."""
    if not load.files:
        return 0
    rows = 0
    online.begin(load.fv, full)
    try:
        # Encoding (DuckDB, numpy, Python) overlaps the writes: one chunk prepared while one is sent.
        for n, payload in _in_background(_prepared_chunks(online, load, batch_rows, end, config)):
            online.send(payload)
            rows += n
            if on_rows:
                on_rows(load.fv.name, n)
        online.finish(load.fv)
    except BaseException:
        online.abort(load.fv)
        raise
    return rows


def _record_in_registry(
    store: FeatureStore, fvs: list[FeatureView], start_date: dt.date | None, end_date: dt.date
) -> None:
    """Feast's registry: intervals + AVAILABLE_ONLINE state, as its own materialize would record."""
    from feature_repo.feast_adapter import record_materialization
    from feature_repo.store import midnight_utc

    if start_date is not None and start_date <= end_date:
        record_materialization(store, fvs, midnight_utc(start_date), midnight_utc(end_date))


def materialize(
    settings: Settings,
    end_date: dt.date | None = None,
    *,
    full: bool = False,
    store: FeatureStore | None = None,
    views: list[str] | None = None,
    on_rows: OnRows | None = None,
) -> MaterializeResult:
    """Write the latest feature row per user as of ``end_date`` into the online store."""
    from feature_repo.online import online_store
    from feature_repo.store import get_store, midnight_utc

    started = time.perf_counter()
    store = store or get_store(settings)
    end_date = _resolve_end_date(settings, end_date)
    wanted, fvs = _registered_views(store, settings, views)
    online = online_store(settings, store)
    target = state_target(store.project, wanted)
    result = MaterializeResult(online_store=online.name, start_date=None, end_date=end_date, full=full)
    try:
        online.open_writes()
        last = None if full else online.read_state(target)
        loads = {load.fv.name: load for load in _plan_loads(settings, fvs, wanted, end_date, last)}
        result.start_date = min((load.first for load in loads.values()), default=None)
        rows = {
            name: _load_view(
                online,
                load,
                batch_rows=settings.materialize_batch_rows,
                end=midnight_utc(end_date),
                full=full,
                on_rows=on_rows,
                config=reader_config(settings),
            )
            for name, load in loads.items()
        }
        result.rows = {n: rows[n] for n in wanted}
        result.partitions = {n: loads[n].partitions for n in wanted}
        _record_in_registry(store, [fvs[n] for n in wanted], result.start_date, end_date)
        if last is None or end_date > last or full:
            online.write_state(target, end_date)
    finally:
        online.close()
    result.seconds = time.perf_counter() - started
    return result


def materialized_through(settings: Settings, store: FeatureStore | None = None) -> dt.date | None:
    """The end date of the last fast materialization recorded in the online store."""
    from feature_repo.online import online_store
    from feature_repo.store import get_store

    store = store or get_store(settings)
    service = store.get_feature_service(settings.feature_service)
    online = online_store(settings, store)
    try:
        return online.read_state(state_target(store.project, [p.name for p in service.feature_view_projections]))
    finally:
        online.close()


def main() -> None:  # pragma: no cover - `python -m jobs.materialize [END_DATE] [--full]`
    import sys

    from churn.settings import get_settings

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    end = dt.date.fromisoformat(args[0]) if args else None
    print(json.dumps(materialize(get_settings(), end, full="--full" in sys.argv).__dict__, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()
