"""The SQLite online store (embedded default): Feast's table layout, read and bulk-loaded here.

Reads go through Feast's own ``online_read`` on a private connection whose busy timeout and
progress-handler deadline bound every statement. Writes bulk-load Feast's layout (tables
``<project>_<view>`` with rows ``(entity_key, feature_name, value, value_text, event_ts,
created_ts)``) in one write transaction per view, in primary-key order (the reader sorts rows by
serialized entity key; feature names are emitted sorted), so every B-tree insert is an append:

* ``full``: the live table is dropped and re-created *inside* the transaction with Feast's exact
  DDL (text taken from ``sqlite_master``), its indexes created before the load, then plain
  multi-row INSERTs.
* incremental: Feast's own upsert (``ON CONFLICT(entity_key, feature_name) DO UPDATE``) into the
  live table; entities not in this run are kept, as Feast's materialize keeps them.

WAL mode: readers (the API) keep seeing the previous committed table until the single COMMIT, and
a crash mid-load leaves only uncommitted WAL frames, which SQLite discards, so the previous data
stays intact. Large loads spill dirty pages to the WAL, so memory stays bounded by the page cache.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from churn.errors import FeatureStoreError
from churn.schema import CREATED_FIELD, TIMESTAMP_FIELD
from feature_repo.feast_adapter import (
    encode_column,
    entity_key_protos,
    online_table,
    sqlite_db_path,
    sqlite_epoch,
    sqlite_reader,
)
from feature_repo.online import OnlineStore, ViewRows, python_timestamps

if TYPE_CHECKING:
    from feast import FeatureView

#: The table (inside the online store) recording the last materialized end date per target.
STATE_TABLE = "churn_materialization"

#: Prepared statement parameters: (SQL, rows) pairs for ``executemany``.
Prepared = list[tuple[str, list[tuple]]]


class SqliteOnlineStore(OnlineStore):
    name = "sqlite"
    #: entities per INSERT statement (fewer statement executions; each binds ~2 params/feature)
    entities_per_statement = 8

    def __init__(self, settings: Any, store: Any = None) -> None:
        super().__init__(settings, store)
        self.path = sqlite_db_path(self.config)
        self._lock = threading.Lock()
        self._deadline = 0.0
        self._reader: Any = None
        self._rconn: sqlite3.Connection | None = None
        self._wconn: sqlite3.Connection | None = None
        self._checkpointer: threading.Thread | None = None
        self._sql: dict[tuple[str, tuple[str, ...], int, bool], str] = {}
        self._full = False

    # --- reads ------------------------------------------------------------------------------------

    def _open_reads(self) -> None:
        conn = sqlite3.connect(
            self.path,
            timeout=self.timeout_s,
            detect_types=sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES,
            check_same_thread=False,
        )
        # Bound every statement too, not just lock waits.
        conn.set_progress_handler(lambda: 1 if time.monotonic() > self._deadline else 0, 10_000)
        self._rconn = conn
        self._reader = sqlite_reader(conn)

    def _arm(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    def _read_views(self, user_ids: list[str]) -> list[ViewRows]:
        keys = entity_key_protos(user_ids)
        out = []
        with self._lock:  # one shared connection; sqlite3 calls are short
            for fv, names in self.views:
                self._arm()
                out.append(self._reader.online_read(self.config, fv, keys, list(names)))
        return out

    def _ping(self) -> bool:
        with self._lock:
            self._arm()
            assert self._rconn is not None
            self._rconn.execute("SELECT 1").fetchone()
        return True

    # --- writes -------------------------------------------------------------------------------------

    @property
    def wconn(self) -> sqlite3.Connection:
        if self._wconn is None:
            self.open_writes()
        assert self._wconn is not None
        return self._wconn

    def open_writes(self) -> None:
        if self._wconn is not None:
            return
        if not Path(self.path).exists():
            raise FeatureStoreError(f"online store {self.path} does not exist: run `churn features apply` first")
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")  # readers (the API) never block on a load
        # WAL + NORMAL: commits are atomic and a crash (even power loss) rolls back to the
        # last commit; the WAL and the database file are fsynced at each checkpoint.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-262144")  # a large page cache for the load
        # Checkpoints run in a background connection (see ``finish``), not inside our COMMITs.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (target TEXT PRIMARY KEY, end_date TEXT, updated_at TEXT)"
        )
        self._wconn = conn

    def table(self, fv: FeatureView) -> str:
        return online_table(self.project, fv, self.config)

    def begin(self, fv: FeatureView, full: bool) -> None:
        table = self.table(fv)
        conn = self.wconn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
            if not row:
                raise FeatureStoreError(f"online table {table} missing: run `churn features apply` first")
            # Left over by older versions of the loader (which staged into a side table).
            conn.execute(f'DROP TABLE IF EXISTS "{table}__load"')
            if full:
                self._recreate(table, row[0])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._full = full

    def _recreate(self, table: str, ddl: str) -> None:
        """Drop and re-create a view table with Feast's DDL and indexes, verbatim (inside the transaction)."""
        conn = self.wconn
        indexes = [
            r[0]
            for r in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL", (table,)
            )
        ]
        conn.execute(f'DROP TABLE "{table}"')
        conn.execute(ddl)
        for index_ddl in indexes:
            conn.execute(index_ddl)

    def prepare(self, fv: FeatureView, batch: pa.RecordBatch, features: list[str]) -> Prepared:
        table = self.table(fv)
        keys = self.entity_keys(batch)
        names = tuple(sorted(features))
        cols: list[list] = [keys]
        for name in names:
            values, texts = encode_column(batch.column(name), with_text=True)
            cols += [values, texts]
        cols += [_epochs(batch.column(TIMESTAMP_FIELD)), _epochs(batch.column(CREATED_FIELD))]
        n = len(keys)
        k = self.entities_per_statement
        n_full = n - n % k
        # k entities per statement: zip strided views so each tuple is already flat (no copies).
        flat = list(zip(*(c[j:n_full:k] for j in range(k) for c in cols), strict=True)) if n_full else []
        tail = list(zip(*(c[n_full:] for c in cols), strict=True))
        return [(self._insert_sql(table, names, k), flat), (self._insert_sql(table, names, 1), tail)]

    def send(self, prepared: Prepared) -> None:
        for sql, params in prepared:
            if params:
                self.wconn.executemany(sql, params)

    def _insert_sql(self, table: str, names: tuple[str, ...], k: int) -> str:
        key = (table, names, k, self._full)
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = _insert_sql(table, names, k, upsert=not self._full)
        return sql

    def finish(self, fv: FeatureView) -> None:
        self.wconn.execute("COMMIT")  # the one moment readers switch to the new rows
        # Copying the committed view from the WAL into the database file (and the two fsyncs)
        # is mostly disk time: do it in the background while the next view is being loaded.
        self._join_checkpointer()
        self._checkpointer = threading.Thread(target=self._checkpoint, name="materialize-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        # A failed/partial checkpoint loses nothing (the frames stay in the WAL); close() retries.
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA synchronous=NORMAL")  # fsync WAL, copy, fsync database
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for the writer
            finally:
                conn.close()

    def _join_checkpointer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None

    def abort(self, fv: FeatureView) -> None:
        if self._wconn is not None and self._wconn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._wconn.execute("ROLLBACK")

    def read_state(self, target: str) -> dt.date | None:
        row = self.wconn.execute(f"SELECT end_date FROM {STATE_TABLE} WHERE target = ?", (target,)).fetchone()
        return dt.date.fromisoformat(row[0]) if row else None

    def write_state(self, target: str, end: dt.date) -> None:
        self.wconn.execute(
            f"INSERT INTO {STATE_TABLE} VALUES (?, ?, ?) ON CONFLICT(target) DO UPDATE SET "
            "end_date = excluded.end_date, updated_at = excluded.updated_at",
            (target, end.isoformat(), dt.datetime.now(dt.UTC).isoformat()),
        )

    def close(self) -> None:
        try:
            self._close_writes()
        finally:
            if self._rconn is not None:
                self._rconn.close()
                self._rconn = self._reader = None
                self._connected = False

    def _close_writes(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is None:
            return
        try:
            self._join_checkpointer()
            if not conn.in_transaction:
                # Whatever is left (the last view), then shrink the WAL file back to nothing.
                with contextlib.suppress(sqlite3.OperationalError):  # busy readers: SQLite will catch up
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def _insert_sql(table: str, names: tuple[str, ...], k: int, upsert: bool) -> str:
    """A ``k``-entity INSERT: per entity, key and timestamps bound once, feature names literal."""
    f = len(names)
    per = 2 * f + 3
    tuples = ",".join(
        ",".join(
            f"(?{b + 1},{_sql_str(n)},?{b + 2 + 2 * j},?{b + 3 + 2 * j},?{b + 2 + 2 * f},?{b + 3 + 2 * f})"
            for j, n in enumerate(names)
        )
        for b in range(0, k * per, per)
    )
    sql = f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES {tuples}'
    if upsert:  # Feast's own upsert
        sql += (
            " ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )
    return sql


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _epochs(arr: pa.Array) -> list[int | None]:
    """Feast's stored integer per timestamp, computed once per distinct value."""
    cache: dict[Any, int | None] = {}
    out = []
    for ts in python_timestamps(arr):
        s = cache.get(ts)
        if s is None and ts not in cache:
            s = cache[ts] = None if ts is None else sqlite_epoch(ts)
        out.append(s)
    return out
