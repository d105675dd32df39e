"""Append-only prediction log: every served (and shadow) prediction, as Parquet files rotated by time.

Layout: ``<data_dir>/prediction_log/date=YYYY-MM-DD/part-<HHMMSS>-<pid>-<seq>.parquet``.

The request path only appends a :class:`LogRecord` (a ``NamedTuple``: a tuple's cost, named
fields) to an in-memory buffer (``deque.append``, atomic under the
GIL, no lock, no I/O). A daemon writer thread drains the buffer every
``prediction_log_flush_s`` seconds, or as soon as ``prediction_log_max_records`` are waiting, hashes
the feature vectors (off the hot path), and writes one file per day present in the batch: to a
hidden temp name in the same directory, fsynced, then renamed — so a crash mid-flush leaves at most
a ``.tmp-*`` file, never a corrupt file under a final name (readers glob ``part-*.parquet``).
:meth:`PredictionLog.close` (API shutdown) flushes what is left.

Bounded memory: if the writer falls behind (disk full, slow volume) and more than
``10 × max_records`` records wait, new records are dropped and counted
(``churn_prediction_log_records_total{result="dropped"}``) rather than growing without limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from churn.io import write_parquet_atomic
from churn.layout import partition_dir
from churn.storage import is_remote
from service.logs import log

SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("user_id", pa.string()),
        ("model_version", pa.string()),
        ("arm", pa.string()),  # production | challenger | shadow: the slot of the model that scored
        ("kind", pa.string()),  # served: what the client got | shadow: scored after the response
        ("probability", pa.float64()),
        ("risk_tier", pa.string()),
        ("will_churn", pa.bool_()),
        ("feature_hash", pa.string()),
        ("endpoint", pa.string()),
    ]
)
TMP_PREFIX = ".tmp-"
_msgpack = msgspec.msgpack.Encoder().encode
YIELD_EVERY = 200  # records converted between voluntary GIL releases



class LogRecord(NamedTuple):
    """One scoring as the request path hands it over; the writer thread turns it into a row."""

    ts: dt.datetime
    request_id: str | None
    user_id: str
    model_version: str
    arm: str
    kind: str
    probability: float
    risk_tier: str
    will_churn: bool | None
    features: dict[str, Any] | None
    feature_names: Sequence[str] | None
    endpoint: str


def feature_hash(features: dict[str, Any] | None, names: Sequence[str]) -> str | None:
    """Hash of the feature vector by NAME, in the model's feature order (msgpack of names + values:
    C speed, ~2 µs — it runs in the writer thread, but still holds the GIL)."""
    if features is None:
        return None
    get = features.get
    packed = _msgpack((names if isinstance(names, tuple) else tuple(names), [get(n) for n in names]))
    return hashlib.blake2b(packed, digest_size=12).hexdigest()


class PredictionLog:
    def __init__(
        self,
        root: Path,
        *,
        flush_interval_s: float = 5.0,
        max_records: int = 5000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.root = Path(root) if isinstance(root, str) else root  # local folder or s3:// prefix
        self.flush_interval_s = max(float(flush_interval_s), 0.01)
        self.max_records = max(int(max_records), 1)
        self.max_pending = 10 * self.max_records
        self._buffer: deque[LogRecord] = deque()  # append / popleft are atomic: no lock on the hot path
        self._seq = itertools.count()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._on_error = on_error or (lambda: None)
        self.written = 0
        self.dropped = 0
        self.files: list[Path] = []

    # --- hot path ------------------------------------------------------------------------------
    def append(self, record: LogRecord) -> None:
        buf = self._buffer
        if len(buf) >= self.max_pending:
            self.dropped += 1
            self._on_dropped(1)
            return
        buf.append(record)
        if len(buf) >= self.max_records:
            self._wake.set()

    # --- writer thread ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._warm_up()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the writer die; the records are counted as dropped
                log.exception("prediction log flush failed", extra={"event": "prediction_log_error"})

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and flush everything still buffered."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("prediction log final flush failed", extra={"event": "prediction_log_error"})

    def flush(self) -> list[Path]:
        """Write the buffered records (one file per day); returns the files written."""
        with self._flush_lock:
            buf = self._buffer
            batch = [buf.popleft() for _ in range(len(buf))]  # appends racing with this stay queued
            if not batch:
                return []
            try:
                table = self._to_table(batch)
                written = self._write(table)
            except Exception:
                self.dropped += len(batch)
                self._on_dropped(len(batch))
                self._on_error()
                raise
            self.written += len(batch)
            self._on_written(len(batch))
            return written

    def _warm_up(self) -> None:
        """The first timestamp conversion / Parquet write of a process costs ~1 s (time zone and
        codec set-up): pay it at startup, not in the first flush under traffic."""
        now = dt.datetime.now(dt.UTC)
        table = self._to_table([LogRecord(now, "", "", "", "", "", 0.0, "", False, {}, (), "")])
        pq.write_table(table, pa.BufferOutputStream(), compression="zstd")

    def _to_table(self, batch: list[LogRecord]) -> pa.Table:
        cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        for i, r in enumerate(batch):
            if i and not i % YIELD_EVERY:
                time.sleep(0)  # let request threads take the GIL (this is background work)
            cols["ts"].append(r.ts)
            cols["request_id"].append(r.request_id)
            cols["user_id"].append(r.user_id)
            cols["model_version"].append(r.model_version)
            cols["arm"].append(r.arm)
            cols["kind"].append(r.kind)
            cols["probability"].append(float(r.probability))
            cols["risk_tier"].append(r.risk_tier)
            cols["will_churn"].append(bool(r.will_churn) if r.will_churn is not None else None)
            cols["feature_hash"].append(feature_hash(r.features, r.feature_names or ()))
            cols["endpoint"].append(r.endpoint)
        return pa.table(cols, schema=SCHEMA)

    def _write(self, table: pa.Table) -> list[Path]:
        import pyarrow.compute as pc

        days = pc.strftime(table["ts"], format="%Y-%m-%d").to_pylist()
        out = []
        for day in sorted(set(days)):
            part = table.filter(pa.array([d == day for d in days])) if len(set(days)) > 1 else table
            out.append(self._write_file(day, part))
        return out

    def _write_file(self, day: str, table: pa.Table) -> Path:
        folder = partition_dir(self.root, dt.date.fromisoformat(day))
        now = dt.datetime.now(dt.UTC)
        name = f"part-{now:%H%M%S}-{os.getpid()}-{next(self._seq):06d}.parquet"
        final = folder / name
        if is_remote(final):
            write_parquet_atomic(final, table)
            self.files.append(final)
            return final
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{TMP_PREFIX}{name}"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)  # atomic: readers see the whole file or nothing
        finally:
            if tmp.exists():
                tmp.unlink()
        self.files.append(final)
        return final
